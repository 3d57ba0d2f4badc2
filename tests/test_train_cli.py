"""Long runs stopped mid-way: ``mcjax train`` stopped by SIGTERM (a scheduler's preemption) and
killed by SIGKILL in real processes, then resumed to the uninterrupted result (a second process
also starts from the persistent compilation cache); Ctrl-C (SIGINT) in this process; and the
command's exit statuses and one-line errors for every bad input."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import chex
import jax
import pytest

import mcjax
from mcjax.__main__ import main
from mcjax._core._compat import enable_x64  # jax.enable_x64 from JAX 0.8
from mcjax._train._lock import Lock

ROOT = Path(__file__).resolve().parents[1]
# a tiny neuron and epochs of 128 steps: long enough to be hit between two checkpoints
TASK = dict(samples=2048, features=3, batch_size=16, epochs=800, every=100)
ARGS = ["train", "neuron", "--samples", str(TASK["samples"]), "--features", str(TASK["features"]),
        "--batch-size", str(TASK["batch_size"]), "--epochs", str(TASK["epochs"]),
        "--checkpoint-every", str(TASK["every"]), "--grad", "analytic", "--no-progress", "--json"]


def _start(ckpt: Path, cache: Path, *extra) -> subprocess.Popen:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "MCJAX_CACHE_DIR": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "mcjax", *ARGS, "--checkpoint-dir", str(ckpt),
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _epochs_saved(folder: Path) -> list[int]:
    """The complete checkpoints there (orbax writes into a temporary folder, then renames;
    digests.json comes last)."""
    return sorted(int(p.name[6:]) for p in folder.glob("epoch_*")
                  if "." not in p.name and (p / "digests.json").exists()) if folder.is_dir() else []


def _hit_after_a_new_checkpoint(process: subprocess.Popen, ckpt: Path, sig, after: int = 0) -> None:
    deadline = time.monotonic() + 120
    while not [e for e in _epochs_saved(ckpt) if e > after]:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    process.send_signal(sig)


def _summary(process: subprocess.Popen, returncode: int = 0) -> dict:
    out, err = process.communicate(timeout=120)
    assert process.returncode == returncode, err
    return json.loads(out)


def _state(ckpt: Path):
    model = mcjax.neuron_model(3, dtype=jax.numpy.float32)
    params = model.init(jax.random.key(0))
    like = (params, mcjax.optimizer("adam", learning_rate=0.01).init(params))
    return mcjax.checkpoints.restore_checkpoint(mcjax.checkpoints.latest_checkpoint(ckpt), like=like)


def test_sigterm_then_sigkill_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    """SIGTERM: exit status 143 with a checkpoint at the end of the epoch in progress. The
    resumed run killed outright (SIGKILL) after its next checkpoint, and resumed again, ends
    with the parameters of an uninterrupted run, bit for bit."""
    folder, cache = tmp_path / "run", tmp_path / "cache"
    termed = _start(folder, cache)
    _hit_after_a_new_checkpoint(termed, folder, signal.SIGTERM)
    stopped = _summary(termed, returncode=143)
    assert stopped["interrupted"] and stopped["signal"] == "SIGTERM"
    assert TASK["every"] <= stopped["epochs"] < TASK["epochs"]
    assert stopped["checkpoint"] == str(folder / f"epoch_{stopped['epochs']:08d}")
    assert not (folder / "run.lock").exists()

    killed = _start(folder, cache, "--resume")
    _hit_after_a_new_checkpoint(killed, folder, signal.SIGKILL, after=stopped["epochs"])
    killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    left = _epochs_saved(folder)[-1]
    assert stopped["epochs"] < left < TASK["epochs"]
    assert (folder / "run.lock").exists()  # its flock died with it: the next run takes it over

    summary = _summary(_start(folder, cache, "--resume"))
    assert summary["resumed_from"] == str(folder / f"epoch_{left:08d}")
    assert summary["epochs"] == TASK["epochs"] and summary["compilation_cache_hits"] >= 1
    got, meta = _state(folder)
    # the uninterrupted run, here, as the command runs it (float32)
    with enable_x64(False):
        data, truth = mcjax.datasets.neuron_data(jax.random.key(0), n_samples=TASK["samples"],
                                        n_features=3, noise=0.01)
        straight = mcjax.train(mcjax.neuron_model(3), data, learning_rate=0.01, grad="analytic",
                               epochs=TASK["epochs"], batch_size=TASK["batch_size"])
    chex.assert_trees_all_equal(got, jax.device_get((straight.params, straight.opt_state)))
    assert meta["history"] == straight.history
    assert summary["final_loss"] == straight.history["loss"][-1]
    assert summary["w_error"] < 0.05 and not (folder / "run.lock").exists()


def _press_ctrl_c_after_the_first_checkpoint(folder: Path) -> None:
    while not _epochs_saved(folder):
        time.sleep(0.002)
    os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_stops_at_the_end_of_an_epoch_with_a_checkpoint(tmp_path):
    (X, y), _ = mcjax.datasets.neuron_data(jax.random.key(0), n_samples=64, n_features=3)
    model = mcjax.neuron_model(3)
    kw = dict(optimizer="adam", learning_rate=0.01, grad="analytic", epochs=1500,
              batch_size=16, checkpoint_every=500)
    # should the signal come late (after train returned), it must not stop the test session
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        presser = threading.Thread(target=_press_ctrl_c_after_the_first_checkpoint,
                                   args=(tmp_path / "a",), daemon=True)
        presser.start()
        stopped = mcjax.train(model, (X, y), checkpoint_dir=tmp_path / "a", **kw)
        presser.join(timeout=60)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.interrupted and stopped.signal == "SIGINT" and 500 <= stopped.epoch < 1500
    assert stopped.checkpoint.name == f"epoch_{stopped.epoch:08d}"
    resumed = mcjax.train(model, (X, y), checkpoint_dir=tmp_path / "a", resume=True, **kw)
    straight = mcjax.train(model, (X, y), **kw)
    assert resumed.resumed_from == stopped.checkpoint and not resumed.interrupted
    chex.assert_trees_all_equal(resumed.params, straight.params)
    assert resumed.history == straight.history


def test_a_diverging_run_fails_with_status_1_in_one_line(tmp_path, capsys):
    code = main(["train", "neuron", "--optimizer", "sgd", "--lr", "1e30", "--epochs", "3",
                 "--no-cache", "--checkpoint-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("mcjax train: the loss is")


def test_cli_schedule_and_options(capsys):
    code = main(["train", "neuron", "--optimizer", "momentum", "--opt", "momentum=0.8",
                 "--schedule", "cosine_decay", "--epochs", "2", "--no-cache", "--json",
                 "--grad", "autodiff", "--dtype", "float64"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 2 and summary["grad"] == "autodiff"


# every bad input: (arguments after "train neuron", what the one line says); exit status 2
ARGPARSE_ERRORS = [
    (["--batch-size", "0"], "argument --batch-size: 0 is out of range; expected a finite "
                            "number >= 1"),
    (["--batch-size", "-3"], "argument --batch-size: -3 is out of range"),
    (["--batch-size", "8.5"], "argument --batch-size: '8.5' is not a number"),
    (["--epochs", "-1"], "argument --epochs: -1 is out of range; expected a finite number >= 1"),
    (["--epochs", "0"], "argument --epochs: 0 is out of range; expected a finite number >= 1"),
    (["--lr", "0"], "argument --lr: 0 is out of range; expected a finite number > 0"),
    (["--lr", "-0.1"], "argument --lr: -0.1 is out of range"),
    (["--lr", "nan"], "argument --lr: nan is out of range"),
    (["--lr", "inf"], "argument --lr: inf is out of range"),
    (["--lr", "fast"], "argument --lr: 'fast' is not a number"),
    (["--samples", "0"], "argument --samples: 0 is out of range"),
    (["--features", "0"], "argument --features: 0 is out of range"),
    (["--hidden", "0,5"], "argument --hidden: '0,5' is not a list of layer widths >= 1"),
    (["--hidden", "wide"], "argument --hidden: 'wide' is not a list of layer widths"),
    (["--checkpoint-every", "0"], "argument --checkpoint-every: 0 is out of range"),
    (["--keep", "0"], "argument --keep: 0 is out of range"),
    (["--keep", "-1"], "argument --keep: -1 is out of range"),
    (["--devices", "0"], "argument --devices: '0' is neither a number of devices (>= 1) nor 'all'"),
    (["--devices", "many"], "argument --devices: 'many' is neither a number of devices"),
    (["--opt", "no-equals-sign"], "argument --opt: 'no-equals-sign' is not KEY=VALUE"),
    (["--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
    (["--grad", "numeric"], "argument --grad: invalid choice: 'numeric'"),
    (["--seed", "abc"], "argument --seed: invalid int value: 'abc'"),
    (["--num-processes", "0"], "argument --num-processes: 0 is out of range"),
    (["--process-id", "-1"], "argument --process-id: -1 is out of range"),
]


@pytest.mark.parametrize(("extra", "message"), ARGPARSE_ERRORS, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else "")
def test_a_bad_flag_is_a_one_line_usage_error(extra, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "neuron", "--no-cache", *extra])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("mcjax train: error: ") and message in err
    assert err.rstrip().endswith("(see mcjax train --help)")


def test_an_unknown_task_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "cats"])
    assert exit_.value.code == 2 and "argument TASK: 'cats' is neither neuron nor digits nor " \
        "MODULE:NAME" in capsys.readouterr().err


def _folders(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    assert main(["train", "neuron", "--epochs", "1", "--no-cache", "--samples", "64",
                 "--checkpoint-dir", str(tmp_path / "run")]) == 0
    (tmp_path / "busy").mkdir()
    return {name: str(tmp_path / name) for name in ("file", "empty", "run", "busy", "missing")}


RUN_ERRORS = [
    (["--resume"], "--resume needs --checkpoint-dir"),
    (["--overwrite"], "--overwrite needs --checkpoint-dir"),
    (["--resume", "--overwrite", "--checkpoint-dir", "{run}"],
     "--resume and --overwrite contradict each other"),
    (["--schedule-arg", "alpha=0.1"], "--schedule-arg needs --schedule"),
    (["--samples", "10"], "--batch-size 32 but --samples 10; expected a batch size of at most 10"),
    (["--optimizer", "adm"], "'adm' is not an optimizer; expected one of the paper's sgd, "
                             "momentum, adam or an optax optimizer such as adamw, rmsprop; did "
                             "you mean adam"),
    (["--opt", "beta1=0.9"], "optax.adam takes no hyper-parameter beta1; it takes b1"),
    (["--optimizer", "sgd", "--opt", "momentum=fast"], "--opt momentum=fast; expected a number "
                                                       "in [0, 1) or None"),
    (["--optimizer", "kfac", "--opt", "damping=0", "--opt", "inverse=qr"],
     "--opt damping=0; expected a number > 0; and --opt inverse=qr; expected one of 'eigh', "
     "'cholesky'"),
    (["--optimizer", "kfac"], "the optimizer cannot update this model's parameters (ValueError: "
                              "mcjax.kfac_factors: parameter ['w'] enters a dot_general as a "
                              "1-D operand"),
    (["--schedule", "cosine"], "'cosine' is not an optax schedule"),
    (["--schedule", "cosine_decay", "--schedule-arg", "bogus=1"],
     "--schedule cosine_decay: cosine_decay_schedule() got an unexpected keyword argument 'bogus'"),
    (["--seed", str(2**70)], f"--seed {2**70}; expected an integer from -2**63 to 2**63 - 1"),
    (["--checkpoint-dir", "{file}"], "--checkpoint-dir {file} is a file; expected a folder"),
    (["--checkpoint-dir", "{missing}", "--resume"],
     "--resume but {missing} does not exist; expected the folder of the run to continue (check "
     "its spelling), or without --resume to start a new run"),
    (["--checkpoint-dir", "{empty}", "--resume"],
     "--resume but {empty} holds no checkpoint of an mcjax run"),
    (["--checkpoint-dir", "{run}"], "{run} holds the checkpoints of another run"),
    (["--checkpoint-dir", "{run}", "--resume", "--lr", "0.5"],
     "cannot resume the run in {run} (run "),
    (["--checkpoint-dir", "{run}", "--resume", "--seed", "1"],
     "data.X.digest: "),
    (["--checkpoint-dir", "{busy}"], "{busy} is in use: process"),
    (["--cache-dir", "{file}"], "mcjax.compilation.enable_compilation_cache: {file} is a file"),
    (["--devices", "99"], "--devices 99 but 1 cpu device is visible; expected at most 1"),
    (["--num-processes", "2", "--process-id", "2"],
     "--num-processes 2 and --process-id 2; expected --num-processes >= 1 and 0 <= --process-id"),
]


def test_every_bad_run_setting_is_a_one_line_usage_error_before_any_work(tmp_path, capsys):
    folders = _folders(tmp_path)
    capsys.readouterr()
    busy = Lock(folders["busy"])
    try:
        for extra, message in RUN_ERRORS:
            extra = [arg.format(**folders) for arg in extra]
            cache = [] if "--cache-dir" in extra else ["--no-cache"]
            code = main(["train", "neuron", "--samples", "64", "--epochs", "1", *cache, *extra])
            err = capsys.readouterr().err
            assert code == 2 and err.count("\n") == 1, (extra, err)
            assert err.startswith("mcjax train: "), (extra, err)
            assert message.format(**folders) in err, (extra, err)
    finally:
        busy.release()
    # nothing was written where an error was reported
    assert sorted(os.listdir(folders["empty"])) == [] and not os.path.exists(folders["missing"])
    assert sorted(p for p in os.listdir(folders["run"])) == ["epoch_00000001", "run.json"]
    assert len(ARGPARSE_ERRORS) + len(RUN_ERRORS) + 2 >= 45


def test_digits_without_scikit_learn_is_a_one_line_usage_error_before_any_work(tmp_path):
    """The digits are scikit-learn's: without it, one line naming the extra, status 2, and no
    checkpoint folder made (here scikit-learn is hidden from the process)."""
    folder = tmp_path / "run"
    hide = ("import sys; sys.modules['sklearn'] = None; from mcjax._cli import main; "
            f"raise SystemExit(main(['train', 'digits', '--no-cache', '--checkpoint-dir', "
            f"{str(folder)!r}]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", hide], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("mcjax train: TASK digits needs scikit-learn: "
                           "pip install 'mcjax[experiments]'\n")
    assert done.stdout == "" and not folder.exists()


def test_library_messages_say_the_commands_flags():
    """mcjax.train names its keywords; mcjax train says the flags that set them (one table)."""
    from mcjax._cli._flags import as_flags

    assert as_flags("Fix backprop or train with grad='autodiff' (check_backprop=False skips "
                    "this check).") == ("Fix backprop or train with --grad autodiff "
                                        "(--no-check-backprop skips this check).")
    assert as_flags("resume it (resume=True, --resume), or use another checkpoint_dir "
                    "(--checkpoint-dir); or resume=False") == (
        "resume it (--resume), or use another --checkpoint-dir; or without --resume")
    assert as_flags("(6 of 40 epochs; table(max_rows=None) shows all)") == (
        "(6 of 40 epochs; --history FILE.csv writes all)")
    assert as_flags("the seed of the grad, resumed") == "the seed of the grad, resumed"
