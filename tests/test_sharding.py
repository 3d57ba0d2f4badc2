"""Data parallelism (mcjax._train._sharding, _distributed): on several devices and processes.

Several devices need ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX
starts, so those checks run in subprocesses: ``tests/scaling/multidevice.py`` under pytest on
4 forced CPU devices, and ``mcjax train`` as two processes of 2 devices each, joined by
``jax.distributed``.  The rest runs here, on this process's one device.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax
from mcjax.__main__ import main
from mcjax.conventions import data_parallel_tolerance

ROOT = Path(__file__).resolve().parents[1]
# these subprocesses check numbers, not speed: XLA's CPU backend without LLVM optimisation
# compiles about twice as fast and computes the same sums in the same order
FAST_COMPILE = "--xla_backend_optimization_level=0"


def _env(cpu_devices: int, **extra) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={cpu_devices} {FAST_COMPILE}",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_four_device_checks_pass_in_a_subprocess():
    """Sharded step and train() equal one device, checkpoints move between device counts,
    batches that do not divide, registry derivatives and mcjax.check on sharded arguments;
    all inside a one-process run joined through the launcher (see multidevice.py)."""
    env = _env(4, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}", JAX_NUM_PROCESSES="1",
               JAX_PROCESS_ID="0")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "tests" / "scaling" / "multidevice.py"),
         "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-rs"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 0, report
    passed = int(report.rsplit(" passed", 1)[0].rsplit(maxsplit=1)[-1])
    assert passed >= 16, report  # nothing skipped for want of devices


def test_two_processes_train_like_one_device(tmp_path):
    """``mcjax train --devices all`` in two processes of 2 CPU devices each, connected by
    jax.distributed over gloo: one 4-device program; process 0 writes the checkpoint."""
    args = ["train", "neuron", "--samples", "128", "--features", "3", "--batch-size", "16",
            "--epochs", "3", "--checkpoint-every", "3", "--grad", "analytic", "--no-cache",
            "--no-progress", "--json"]
    coordinator = f"127.0.0.1:{_free_port()}"
    workers = [subprocess.Popen(
        [sys.executable, "-m", "mcjax", *args, "--devices", "all", "--coordinator", coordinator,
         "--num-processes", "2", "--process-id", str(i), "--checkpoint-dir", str(tmp_path)],
        env=_env(2), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    summaries = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=300)
            assert worker.returncode == 0, err[-3000:]
            # gloo (the CPU collectives) prints its connections to stdout before the summary
            summaries.append(json.loads(out[out.index("{\n"):]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    assert [s["process"] for s in summaries] == ["0 of 2", "1 of 2"]
    assert all(s["devices"] == 4 and s["steps"] == 3 * 8 for s in summaries)
    assert summaries[0]["final_loss"] == summaries[1]["final_loss"]
    # both processes take part in orbax's save; process 0 holds the folder's lock
    assert summaries[0]["checkpoint"] == summaries[1]["checkpoint"] is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_00000003", "run.json"]

    # the same run on this process's one device, in float32 as the command runs it
    with jax.enable_x64(False):
        data, _ = mcjax.datasets.neuron_data(jax.random.key(0), n_samples=128, n_features=3, noise=0.01)
        model = mcjax.neuron_model(3)
        single = mcjax.train(model, data, learning_rate=0.01, grad="analytic", epochs=3,
                             batch_size=16)
        (params, _), meta = mcjax.checkpoints.restore_checkpoint(mcjax.checkpoints.latest_checkpoint(tmp_path),
                                                     like=(single.params, single.opt_state))
    assert meta["epoch"] == 3
    tol = data_parallel_tolerance(jnp.float32, single.step)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(single.params)):
        assert np.max(np.abs(got - np.asarray(want))) <= tol.atol + tol.rtol * np.max(np.abs(want))


# -- on this process's one device ----------------------------------------------------------------
def _neuron_run(**kwargs):
    (X, y), _ = mcjax.datasets.neuron_data(jax.random.key(0), n_samples=48, n_features=3,
                                  dtype=jnp.float64)
    return mcjax.train(mcjax.neuron_model(3, dtype=jnp.float64), (X, y), learning_rate=0.05,
                       grad="analytic", epochs=2, batch_size=8, **kwargs)


def test_one_device_stays_the_default_and_a_one_device_mesh_changes_nothing():
    plain, on_mesh = _neuron_run(), _neuron_run(devices=1)
    assert plain.history == on_mesh.history
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(on_mesh.params)):
        np.testing.assert_array_equal(a, b)
    assert mcjax.sharding.data_mesh().shape == {"data": jax.device_count()}


def test_device_requests_that_cannot_be_met_are_refused():
    n = jax.device_count()
    with pytest.raises(ValueError, match=rf"^mcjax.train: devices={n + 1} but {n} \w+ devices? "
                                         rf"(is|are) visible; expected at most {n}"):
        _neuron_run(devices=n + 1)
    with pytest.raises(ValueError, match=r"^mcjax.sharding.data_mesh: devices=0; expected at least 1$"):
        mcjax.sharding.data_mesh(0)
    with pytest.raises(TypeError, match=r"^mcjax.sharding.data_mesh: devices='many'; expected None, 'all'"):
        mcjax.sharding.data_mesh("many")
    with pytest.raises(SystemExit):
        main(["train", "neuron", "--devices", "many"])


def test_pad_batch_pads_with_the_last_row_and_masks_it():
    X, y = np.arange(10.0).reshape(5, 2), np.arange(5)
    (Xp, yp), mask = mcjax.sharding.pad_batch((X, y), 4)
    np.testing.assert_array_equal(Xp[5:], np.repeat(X[-1:], 3, axis=0))
    np.testing.assert_array_equal(yp, [0, 1, 2, 3, 4, 4, 4, 4])
    np.testing.assert_array_equal(mask, [True] * 5 + [False] * 3)
    (X4, _), mask4 = mcjax.sharding.pad_batch((X[:4], y[:4]), 4)
    assert X4.shape == (4, 2) and bool(mask4.all())
    with pytest.raises(mcjax.ShapeError, match=r"mcjax.sharding.pad_batch: the batch has arrays of "
                                               r"shapes \(5, 2\), \(4,\)"):
        mcjax.sharding.pad_batch((X, y[:4]), 4)


def test_launcher_single_process_path_and_errors(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    alone = mcjax.sharding.init_distributed(num_processes=1)
    assert (alone.process_index, alone.process_count, alone.initialized) == (0, 1, False)
    assert alone.device_count == jax.device_count()
    with pytest.raises(ValueError, match=r"num_processes=2 and process_id=2; expected "
                                         r"num_processes >= 1 and 0 <= process_id < num_processes"):
        mcjax.sharding.init_distributed("127.0.0.1:1", num_processes=2, process_id=2)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match=r"\$JAX_NUM_PROCESSES='two'; expected an integer"):
        mcjax.sharding.init_distributed()
    monkeypatch.delenv("JAX_NUM_PROCESSES")
    jax.devices()  # this process's backend runs: JAX refuses to connect it afterwards
    with pytest.raises(RuntimeError, match=r"mcjax.sharding.init_distributed: JAX's backend already runs"):
        mcjax.sharding.init_distributed("127.0.0.1:1", num_processes=2, process_id=0)
