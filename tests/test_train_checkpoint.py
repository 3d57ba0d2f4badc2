"""Checkpoints, run identity, the lock, resume and its validation, damaged checkpoints and
non-finite state, in one process (the signals and the command line: test_train_cli.py)."""

import errno
import json
import os
import pickle
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mcjax
from mcjax._train import _lock
from mcjax._train._checkpoint import Store
from mcjax._train._config import TrainConfig
from mcjax._train._describe import differences

F64 = jnp.float64


def _data(n=40, dtype=F64):
    """A neuron's inputs and targets, from NumPy (mcjax.datasets.neuron_data compiles per shape)."""
    X = np.random.default_rng(1).standard_normal((n, 3))
    return X.astype(dtype), np.maximum(X @ np.array([0.5, -1.0, 2.0]) + 0.5, 0).astype(dtype)


def _run(folder, data=None, model=None, **kwargs):
    kw = dict(optimizer="momentum", learning_rate=0.02, grad="analytic", epochs=6,
              batch_size=8, checkpoint_dir=folder, checkpoint_every=2)
    return mcjax.train(model or mcjax.neuron_model(3, dtype=F64), data or _data(),
                       **{**kw, **kwargs})


def _like(dtype=F64):
    params = mcjax.neuron_model(3, dtype=dtype).init(jax.random.key(0))
    return params, optax.sgd(0.02, momentum=0.9).init(params)


def _files(folder):
    """Every file under ``folder`` with its bytes: what a run must leave untouched."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_run_folder_holds_its_record_and_one_orbax_checkpoint_per_saved_epoch(tmp_path):
    result = _run(tmp_path / "run", epochs=5, keep_checkpoints=2)
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["epoch_00000004", "epoch_00000005", "run.json"]  # kept 2; no lock left
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["config"]["optimizer"]["name"] == "momentum"
    assert record["config"]["model"]["model"] == "neuron"
    assert set(record["config"]["data"]) == {"X", "Y"}
    assert result.checkpoint == tmp_path / "run" / "epoch_00000005"
    assert mcjax.checkpoints.latest_checkpoint(tmp_path / "run") == result.checkpoint
    (params, opt_state), meta = mcjax.checkpoints.restore_checkpoint(result.checkpoint, like=_like())
    assert (meta["epoch"], meta["step"], meta["run_id"]) == (5, 25, record["run_id"])
    assert meta["history"] == result.history
    chex.assert_trees_all_equal((params, opt_state), jax.device_get((result.params,
                                                                     result.opt_state)))
    assert mcjax.checkpoints.latest_checkpoint(tmp_path / "nowhere") is None


def test_resume_ends_with_the_state_of_an_uninterrupted_run(tmp_path):
    straight = _run(None)
    _run(tmp_path, epochs=3)  # stops after epoch 3: checkpoints at 2 and 3
    resumed = _run(tmp_path, resume=True)
    assert resumed.resumed_from.name == "epoch_00000003"
    chex.assert_trees_all_equal((straight.params, straight.opt_state),
                                (resumed.params, resumed.opt_state))
    assert resumed.history == straight.history and resumed.step == straight.step


def test_a_second_run_never_touches_the_first_runs_folder(tmp_path):
    _run(tmp_path, epochs=4)
    before = _files(tmp_path)
    with pytest.raises(mcjax.CheckpointError) as refused:
        _run(tmp_path, epochs=2, learning_rate=0.5)
    message = str(refused.value)
    assert f"{tmp_path} holds the checkpoints of another run" in message
    assert "epochs 2, 4" in message
    for way_out in ("resume=True, --resume", "another folder", "overwrite=True, --overwrite"):
        assert way_out in message
    assert _files(tmp_path) == before  # not a byte changed, nothing pruned
    # a folder with other files is nobody's to take, overwrite or not
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(mcjax.CheckpointError, match=r"holds files that are not an mcjax "
                                                        r"run's \(notes/\)"):
            _run(tmp_path, epochs=2, overwrite=overwrite)
    (tmp_path / "notes" / "todo.txt").unlink()
    (tmp_path / "notes").rmdir()
    # overwrite replaces the run, and its record names the new one
    old_id = json.loads((tmp_path / "run.json").read_text())["run_id"]
    replaced = _run(tmp_path, epochs=1, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_00000001", "run.json"]
    assert json.loads((tmp_path / "run.json").read_text())["run_id"] != old_id
    assert replaced.checkpoint.exists()


def test_orbax_would_drop_an_earlier_epoch_silently_the_store_refuses(tmp_path):
    """Measured: a fresh CheckpointManager in a folder holding steps 20 and 30 skips a save
    of step 5 without a word.  The store says so instead (and a run never gets there: its
    folder holds only its own, earlier epochs)."""
    store = Store(tmp_path)
    state = {"w": jnp.ones(3)}
    for epoch in (20, 30):
        store.save(epoch, state, {})
    with pytest.raises(mcjax.CheckpointError, match=r"cannot save epoch 5 .* it holds "
                                                    r"epoch_00000020, epoch_00000030"):
        store.save(5, state, {})
    with pytest.raises(FloatingPointError, match=r"state of epoch 31 is not finite: w \(1 NaN"):
        store.save(31, {"w": jnp.array([1.0, jnp.nan])}, {})
    assert store.epochs() == [20, 30]
    store.close()


def test_one_writer_per_folder_and_a_dead_writers_lock_is_taken_over(tmp_path):
    held = _lock.Lock(tmp_path)
    with pytest.raises(mcjax.CheckpointError, match=rf"{tmp_path} is in use: process "
                                                    rf"{os.getpid()} on .* holds its lock "
                                                    r"run.lock"):
        _run(tmp_path, epochs=1)
    held.release()
    # a lock file left by a dead process (its flock died with it) is simply taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / "run.lock").write_text(json.dumps({"pid": int(dead), "host": "h", "started": "x"}))
    assert _run(tmp_path, epochs=1).checkpoint.exists()
    assert not (tmp_path / "run.lock").exists()


def test_without_flock_the_lock_file_itself_keeps_a_second_writer_out(tmp_path, monkeypatch):
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(_lock.fcntl, "flock", no_flock)
    held = _lock.Lock(tmp_path)
    with pytest.raises(mcjax.CheckpointError, match=rf"process {os.getpid()} on "):
        _lock.Lock(tmp_path)
    held.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / "run.lock").write_text(json.dumps(
        {"pid": int(dead), "host": _lock.socket.gethostname(), "started": "x"}))
    _lock.Lock(tmp_path).release()  # stale: taken over
    assert not list(tmp_path.iterdir())


def _damage(checkpoint):
    """Flip a byte in the middle of each data file of a checkpoint's arrays, as a bad disk
    would: tensorstore reads such bytes back without a word (only its b-tree nodes carry a
    checksum)."""
    for path in (checkpoint / "state").glob("ocdbt.process_*/d/*"):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))


def test_a_damaged_newest_checkpoint_is_skipped_and_resume_ends_where_it_should(tmp_path):
    straight = _run(None)
    _run(tmp_path, epochs=4)  # checkpoints at 2 and 4
    _damage(tmp_path / "epoch_00000004")
    with pytest.warns(RuntimeWarning, match=r"skipped the damaged checkpoint "
                                            r".*epoch_00000004 .*resuming from .*epoch_00000002"):
        resumed = _run(tmp_path, resume=True)
    assert resumed.resumed_from.name == "epoch_00000002"
    chex.assert_trees_all_equal(straight.params, resumed.params)
    assert (tmp_path / "damaged" / "epoch_00000004").is_dir()  # kept, out of orbax's way


def test_a_file_posing_as_a_checkpoint_is_never_unpickled(tmp_path):
    _run(tmp_path, epochs=2)
    marker = tmp_path.parent / "unpickled"

    class Bomb:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    fake = tmp_path / "epoch_00000009"
    (fake / "state").mkdir(parents=True)
    (fake / "meta").mkdir()
    for name in ("meta/metadata", "state/_METADATA", "_CHECKPOINT_METADATA"):
        (fake / name).write_bytes(pickle.dumps(Bomb()))
    with pytest.warns(RuntimeWarning, match=r"skipped the damaged checkpoint .*epoch_00000009"):
        resumed = _run(tmp_path, resume=True, epochs=3)
    assert resumed.resumed_from.name == "epoch_00000002" and not marker.exists()


def test_resume_refuses_another_schedule_dtype_optimizer_or_data_listing_every_difference(tmp_path):
    schedule = mcjax.schedule("cosine_decay", init_value=0.01, decay_steps=30)
    _run(tmp_path, epochs=2, learning_rate=schedule)
    with pytest.raises(mcjax.CheckpointError) as refused:
        _run(tmp_path, resume=True, learning_rate=mcjax.schedule(
            "cosine_decay", init_value=100.0, decay_steps=30), data=_data(n=48))
    message = str(refused.value)
    assert message.startswith(f"mcjax.train: cannot resume the run in {tmp_path}")
    assert "optimizer.learning_rate.init_value: 0.01 there, 100.0 now" in message
    assert "data.X.shape: [40, 3] there, [48, 3] now" in message
    # the arrays as stored (tensorstore's own record), not reinterpreted bytes
    with pytest.raises(mcjax.CheckpointError) as refused:
        _run(tmp_path, resume=True, learning_rate=schedule, data=_data(dtype=jnp.float32),
             model=mcjax.neuron_model(3, dtype=jnp.float32))
    message = str(refused.value)
    assert "model.dtype: \"float64\" there, \"float32\" now" in message
    assert "params.w is stored as float64(3,) but this run's is float32(3,)" in message
    assert "opt_state.0.trace.b is stored as float64() but this run's is float32()" in message
    # a custom optax transformation is described by its hyper-parameters, not its type
    custom = TrainConfig(optimizer=optax.adam(1e-3)).identity()
    assert differences(custom, TrainConfig(optimizer=optax.adam(1e-3)).identity()) == []
    assert differences(custom, TrainConfig(optimizer=optax.adam(1e-3, b1=0.5)).identity()) == [
        "optimizer.transformation.update.update_fns.0.tx.update.b1: 0.9 there, 0.5 now"]


def test_resume_needs_a_run_to_continue(tmp_path):
    with pytest.raises(mcjax.CheckpointError, match=rf"resume=True but {tmp_path / 'typo'} does "
                                                    r"not exist; expected the folder of the run"):
        _run(tmp_path / "typo", resume=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(mcjax.CheckpointError, match=r"resume=True but .*empty holds no "
                                                    r"checkpoint of an mcjax run"):
        _run(tmp_path / "empty", resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(mcjax.CheckpointError, match=r"checkpoint_dir .*file is a file; expected "
                                                    r"a folder"):
        _run(tmp_path / "file")
    with pytest.raises(mcjax.CheckpointError, match=r"resume=True needs a checkpoint_dir"):
        _run(None, resume=True)
    assert not (tmp_path / "typo").exists()


def _linear(key):
    return {"w": jnp.zeros(3, jnp.float32), "b": jnp.zeros((), jnp.float32)}


def _squared_error(params, batch):
    X, y = batch
    return jnp.mean((X @ params["w"] + params["b"] - y) ** 2)


def test_the_last_good_checkpoint_after_a_divergence_is_finite(tmp_path):
    """The step size jumps to 1e38 at the 10th update, the last of epoch 2: the parameters
    overflow there while every loss so far was finite.  Checking losses only, epoch 2's
    checkpoint would hold Inf; the run stops naming that update and keeps epoch 1's."""
    X = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    y = X @ np.array([1.0, -2.0, 0.5], np.float32)
    jump = optax.piecewise_constant_schedule(0.01, {9: 1e42})  # 1e40: Inf in float32
    with pytest.raises(mcjax.NonFiniteLossError) as caught:
        mcjax.train(mcjax.Model(_linear, _squared_error), (X, y), optimizer="sgd",
                    learning_rate=jump, epochs=4, batch_size=8, shuffle=False,
                    checkpoint_dir=tmp_path, checkpoint_every=1, keep_checkpoints=1)
    error = caught.value
    assert (error.step, error.epoch) == (10, 2) and np.isfinite(error.value)
    assert "the update of step 10 (epoch 2, batch 5 of 5) left NaN or Inf" in str(error)
    assert error.checkpoint == tmp_path / "epoch_00000001" == mcjax.checkpoints.latest_checkpoint(tmp_path)
    assert f"the last good checkpoint, kept, is {error.checkpoint}" in str(error)
    params = _linear(None)
    saved, meta = mcjax.checkpoints.restore_checkpoint(error.checkpoint,
                                           like=(params, optax.sgd(jump).init(params)))
    assert meta["epoch"] == 1 and meta["step"] == 5
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(saved))


def test_parameters_that_overflow_with_a_finite_loss_stop_the_run(tmp_path):
    """tanh keeps the loss finite when w is -inf; the update that made it so is named."""
    def init(key):
        return {"w": jnp.ones(3, jnp.float32)}

    def loss(params, batch):
        (X,) = batch
        return jnp.mean(X @ jnp.tanh(params["w"]))

    X = jnp.full((8, 3), 100.0, jnp.float32)
    with pytest.raises(mcjax.NonFiniteLossError) as caught:
        mcjax.train(mcjax.Model(init, loss), (X,), optimizer="sgd", learning_rate=1e38,
                    epochs=3, batch_size=4, checkpoint_dir=tmp_path)
    error = caught.value
    assert (error.step, error.epoch) == (1, 1) and np.isfinite(error.value)
    assert "the update of step 1 (epoch 1, batch 1 of 2) left NaN or Inf in the parameters" \
        in str(error)
    assert error.checkpoint is None and mcjax.checkpoints.latest_checkpoint(tmp_path) is None


def test_an_optimizer_state_that_overflows_stops_the_run_at_the_end_of_its_epoch():
    """Adam's second moment of a 1e30 gradient is Inf in float32; its update is then 0, so
    the loss and the parameters stay finite: the state is checked at the epoch's end."""
    def loss(params, batch):
        return 1e30 * jnp.mean(batch[0] @ params["w"])

    X = np.ones((16, 3), np.float32)
    with pytest.raises(mcjax.NonFiniteLossError) as caught:
        mcjax.train(mcjax.Model(_linear, loss), (X,), optimizer="adam", epochs=3, batch_size=8)
    assert (caught.value.step, caught.value.epoch) == (2, 1)
    assert "the optimizer state holds NaN or Inf at the end of epoch 1 (after step 2 (epoch 1, " \
           "batch 2 of 2); it is checked once per epoch)" in str(caught.value)


def test_a_loss_that_is_nan_from_the_start_stops_at_step_one():
    def init(key):
        return {"w": jnp.ones(3)}

    def loss(params, batch):
        return jnp.mean(jnp.log(batch[0] @ params["w"] - 10.0))  # log of a negative number

    with pytest.raises(mcjax.NonFiniteLossError) as caught:
        mcjax.train(mcjax.Model(init, loss), (jnp.ones((40, 3)),), epochs=3, batch_size=40)
    error = caught.value
    assert (error.step, error.epoch, error.checkpoint) == (1, 1, None)
    assert "the loss is nan at step 1 (epoch 1, batch 1 of 1)" in str(error)
    assert "no checkpoint was written" in str(error)


def test_restore_checkpoint_names_what_is_wrong(tmp_path):
    result = _run(tmp_path, epochs=2)
    with pytest.raises(mcjax.CheckpointError, match=r"mcjax.checkpoints.restore_checkpoint: .*run.json is "
                                                    r"not a checkpoint; expected a folder named "
                                                    r"epoch_00000003"):
        mcjax.checkpoints.restore_checkpoint(tmp_path / "run.json", like=_like())
    other = (mcjax.mlp_init(jax.random.key(0), (3, 2)), optax.adam(1e-3).init(
        mcjax.mlp_init(jax.random.key(0), (3, 2))))
    with pytest.raises(mcjax.CheckpointError, match=r"mcjax.checkpoints.restore_checkpoint: .* holds other "
                                                    r"arrays .*params.w is stored but this run's "
                                                    r"state has no such array"):
        mcjax.checkpoints.restore_checkpoint(result.checkpoint, like=other)
    _damage(result.checkpoint)
    with pytest.raises(mcjax.CheckpointError, match=r"epoch_00000002 is damaged: "):
        mcjax.checkpoints.restore_checkpoint(result.checkpoint, like=_like())


def test_a_plain_orbax_checkpoint_manager_reads_a_run_with_the_documented_options(tmp_path):
    """docs/training.md, "Reading with orbax": the options that find a run's checkpoints
    (orbax's defaults look for step folders named ``3``, not ``epoch_00000003``)."""
    import orbax.checkpoint as ocp

    result = _run(tmp_path, epochs=3)
    before = _files(tmp_path)
    with ocp.CheckpointManager(tmp_path, options=ocp.CheckpointManagerOptions(
            read_only=True)) as defaults:
        assert defaults.all_steps() == []
    options = ocp.CheckpointManagerOptions(step_prefix="epoch", step_format_fixed_length=8,
                                           read_only=True)
    with ocp.CheckpointManager(tmp_path, options=options) as manager:
        assert manager.all_steps() == [2, 3] and manager.latest_step() == 3
        restored = manager.restore(manager.latest_step())
    chex.assert_trees_all_equal(restored["state"]["params"], jax.device_get(result.params))
    assert restored["meta"]["epoch"] == 3 and restored["meta"]["history"] == result.history
    assert _files(tmp_path) == before  # read only
