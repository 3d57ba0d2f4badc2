"""Long runs stopped mid-way: ``mcjax train`` killed with SIGKILL in a real process, then
resumed (a second process also starts from the persistent compilation cache); Ctrl-C
(SIGINT) in this process; and the command's errors and options."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import mcjax
from mcjax._cli import main
from mcjax._train._checkpoint import read_metadata

ROOT = Path(__file__).resolve().parents[1]
# a tiny neuron and many short epochs: the run lasts a second or two, long enough to be hit
ARGS = ["train", "neuron", "--samples", "128", "--features", "3", "--batch-size", "16",
        "--epochs", "3000", "--checkpoint-every", "100", "--no-progress", "--json"]


def _start(ckpt: Path, cache: Path, *extra) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "MCJAX_CACHE_DIR": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "mcjax", *ARGS, "--checkpoint-dir", str(ckpt),
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _hit_after_first_checkpoint(process: subprocess.Popen, ckpt: Path, sig) -> None:
    deadline = time.monotonic() + 120
    while mcjax.latest_checkpoint(ckpt) is None:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    process.send_signal(sig)


def _summary(process: subprocess.Popen, returncode: int = 0) -> dict:
    out, err = process.communicate(timeout=120)
    assert process.returncode == returncode, err
    return json.loads(out)


def _final_state(ckpt: Path):
    with np.load(mcjax.latest_checkpoint(ckpt), allow_pickle=False) as f:
        return {name: f[name] for name in f.files}


def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    cache = tmp_path / "cache"
    straight = _start(tmp_path / "straight", cache)
    killed = _start(tmp_path / "killed", cache)
    _hit_after_first_checkpoint(killed, tmp_path / "killed", signal.SIGKILL)
    killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    reference = _summary(straight)
    assert reference["epochs"] == 3000 and reference["w_error"] < 0.05
    # what SIGKILL left is complete checkpoints only (perhaps a temporary file beside them)
    left = mcjax.latest_checkpoint(tmp_path / "killed")
    assert int(left.name[5:13]) < 3000
    assert read_metadata(left)["epoch"] == int(left.name[5:13])
    assert all(np.isfinite(v).all() for k, v in _final_state(tmp_path / "killed").items()
               if k.startswith("leaf"))

    summary = _summary(_start(tmp_path / "killed", cache, "--resume"))
    assert summary["resumed_from"] == str(left) and summary["epochs"] == 3000
    assert summary["final_loss"] == reference["final_loss"]
    # a second process finds the compiled programs in the persistent cache
    assert summary["compilation_cache_hits"] >= 1
    got, want = _final_state(tmp_path / "killed"), _final_state(tmp_path / "straight")
    for leaf in (k for k in want if k.startswith("leaf")):
        np.testing.assert_array_equal(got[leaf], want[leaf])
    assert not list((tmp_path / "killed").glob(".tmp-*"))


def test_ctrl_c_stops_at_the_end_of_an_epoch_with_a_checkpoint(tmp_path):
    (X, y), _ = mcjax.neuron_data(jax.random.key(0), n_samples=64, n_features=3)
    model = mcjax.neuron_model(3)
    kw = dict(optimizer="adam", learning_rate=0.01, grad="analytic", epochs=1500,
              batch_size=16, checkpoint_every=50)

    def press_ctrl_c_after_the_first_checkpoint():
        while mcjax.latest_checkpoint(tmp_path / "a") is None:
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGINT)

    # should the signal come late (after train returned), it must not stop the test session
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        presser = threading.Thread(target=press_ctrl_c_after_the_first_checkpoint, daemon=True)
        presser.start()
        stopped = mcjax.train(model, (X, y), checkpoint_dir=tmp_path / "a", **kw)
        presser.join(timeout=60)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.interrupted and 50 <= stopped.epoch < 1500
    assert stopped.checkpoint.name == f"ckpt-{stopped.epoch:08d}.npz"
    resumed = mcjax.train(model, (X, y), checkpoint_dir=tmp_path / "a", resume=True, **kw)
    straight = mcjax.train(model, (X, y), **kw)
    assert resumed.resumed_from == stopped.checkpoint and not resumed.interrupted
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(straight.params)):
        np.testing.assert_array_equal(a, b)
    assert resumed.history == straight.history


def test_cli_reports_a_diverging_run_and_bad_options(tmp_path, capsys):
    code = main(["train", "neuron", "--optimizer", "sgd", "--lr", "1e30", "--epochs", "3",
                 "--no-cache", "--checkpoint-dir", str(tmp_path)])
    assert code == 1
    assert "mcjax train: mcjax.train: the loss is" in capsys.readouterr().err
    assert main(["train", "neuron", "--optimizer", "adm", "--no-cache"]) == 1
    assert "did you mean adam" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "neuron", "--opt", "no-equals-sign"])


def test_cli_schedule_and_options(tmp_path, capsys):
    code = main(["train", "neuron", "--optimizer", "momentum", "--opt", "momentum=0.8",
                 "--schedule", "cosine_decay", "--epochs", "2", "--no-cache", "--json",
                 "--grad", "autodiff", "--dtype", "float64"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 2 and summary["grad"] == "autodiff"
