"""Every way a training run fails, met as a user meets it: ``python -m mcjax train`` in a real
process on a real file system (a full tmpfs, a read-only bind mount where this runs as root),
ending with one line on stderr and its exit status (1 a failed run, 2 a usage or environment
error, 143 SIGTERM, 130 Ctrl-C), and nothing lost: the checkpoints written before are intact
and the run resumes from them.

Where a moment cannot be reached from outside (a signal inside a checkpoint's save, orbax's own
error on any machine), the process runs the same command through ``python -c`` with one
function wrapped to reach it.
"""

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mcjax.__main__ import main
from mcjax._core._compat import enable_x64  # jax.enable_x64 from JAX 0.8
from mcjax._train._checkpoint import DIGESTS, Store, step_name
from mcjax._train._lock import Lock

ROOT = Path(__file__).resolve().parents[1]
# a tiny neuron: a run of a few epochs takes well under a second once started
SMALL = ["train", "neuron", "--samples", "64", "--features", "3", "--batch-size", "16",
         "--no-progress", "--no-cache"]
# epochs of 128 steps: long enough for a test to act between two checkpoints
LONG = ["train", "neuron", "--samples", "2048", "--features", "3", "--batch-size", "16",
        "--no-progress", "--no-cache"]


@pytest.fixture(autouse=True)
def as_the_command_runs():
    """``main`` in this process runs as ``python -m mcjax`` does, in JAX's default float32 (the
    suite turns float64 on), so that a run begun in a subprocess resumes here: float64 on or
    off changes what JAX traces (Adam's bias correction), and a resumed run must trace to the
    programs its run traced."""
    with enable_x64(False):
        yield


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                         os.environ.get("PYTHONPATH", "")])}


def _command(args, *, script: str | None = None, python=()) -> list[str]:
    how = ["-c", textwrap.dedent(script)] if script else ["-m", "mcjax"]
    return [sys.executable, *python, *how, *map(str, args)]


def _mcjax(*args, script: str | None = None, python=()) -> subprocess.CompletedProcess:
    """``python -m mcjax ARGS`` run to its end (or the same through ``script``)."""
    return subprocess.run(_command(args, script=script, python=python), env=_env(),
                          capture_output=True, text=True, timeout=300)


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen(_command(args), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _one_line(err: str, start: str = "mcjax train: ") -> str:
    assert err.count("\n") == 1 and err.startswith(start), err
    assert "Traceback" not in err and "File \"" not in err, err
    return err


def _saved(folder: Path) -> list[int]:
    """The epochs with a complete checkpoint (its digests written last)."""
    return sorted(int(p.name.split("_")[1]) for p in folder.glob("epoch_*")
                  if "." not in p.name and (p / DIGESTS).exists())


def _intact(folder: Path) -> list[int]:
    """The epochs saved, each checked file by file against its digests."""
    epochs = _saved(folder)
    store = Store(folder, writer=False)
    try:
        for epoch in epochs:
            store.verify(epoch)
    finally:
        store.close()
    return epochs


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _wait_for_a_checkpoint(process: subprocess.Popen, folder: Path) -> int:
    deadline = time.monotonic() + 120
    while not _saved(folder):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    return _saved(folder)[-1]


def _resume(folder: Path, epochs: int, capsys, args=SMALL) -> dict:
    """The summary of the run resumed to ``epochs`` (in this process, which is quicker)."""
    capsys.readouterr()
    assert main([*args, "--epochs", str(epochs), "--checkpoint-dir", str(folder), "--resume",
                 "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return json.loads(out)


def _new_run(folder: Path, *extra) -> None:
    """A finished run of two epochs, a checkpoint each (in this process: it is only the
    setting, and quicker so)."""
    assert main([*SMALL, "--epochs", "2", "--checkpoint-every", "1", "--checkpoint-dir",
                 str(folder), *extra]) == 0


# -- file systems ------------------------------------------------------------------------------
def _mount(*args) -> str | None:
    """Run mount(8); None when it worked, else why not."""
    if os.geteuid() != 0:
        return "mounting needs root"
    try:
        done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except OSError as error:
        return f"mount cannot run: {error}"
    return None if done.returncode == 0 else f"mount {' '.join(args)}: {done.stderr.strip()}"


@pytest.fixture
def tmpfs(tmp_path):
    """A 4 MiB tmpfs: a disk that fills up in milliseconds."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    why = _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where))
    if why:
        pytest.skip(f"no tmpfs to fill ({why}); test_orbax_write_error_* covers a full disk "
                    "with orbax's own error")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


@contextlib.contextmanager
def _read_only(folder: Path, view: Path):
    """``folder`` seen read-only: a read-only bind mount at ``view`` as root, where a mode
    does not stop root; ``folder`` itself with its write bits off otherwise."""
    if os.geteuid() == 0:
        view.mkdir()
        why = _mount("--bind", str(folder), str(view))
        if why is None:
            why = _mount("-o", "remount,bind,ro", str(view))
            if why is not None:
                subprocess.run(["umount", str(view)], check=False)
        if why is not None:
            pytest.skip(f"no read-only bind mount here ({why}), and root writes through a mode")
        try:
            yield view
        finally:
            subprocess.run(["umount", "-l", str(view)], check=False)
        return
    modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
    for p, mode in modes.items():
        p.chmod(mode & ~0o222)
    try:
        yield folder
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


def _fill(path: Path) -> None:
    with open(path, "wb") as file:
        with contextlib.suppress(OSError):
            while True:
                file.write(b"\0" * 65536)
                file.flush()


def test_a_full_disk_stops_the_run_in_one_line_and_it_resumes_once_there_is_space(tmpfs, capsys):
    """orbax's RESOURCE_EXHAUSTED in the middle of a run: status 1, one line that names the
    last intact checkpoint, no partial checkpoint left; a new run there is refused before any
    work (status 2); with space again, the run resumes from that checkpoint."""
    folder, filler = tmpfs / "run", tmpfs / "filler"
    run = _start(*LONG, "--epochs", 100_000, "--checkpoint-every", 20, "--checkpoint-dir", folder)
    _wait_for_a_checkpoint(run, folder)
    _fill(filler)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 1, err
    saved = _intact(folder)
    last = folder / step_name(saved[-1])
    assert "No space left on device" in _one_line(err) and f"the last checkpoint, {last}, is " \
        "intact: free some space, then resume" in err
    assert sorted(os.listdir(folder)) == sorted([*map(step_name, saved), "run.json"])

    capsys.readouterr()
    assert main([*SMALL, "--epochs", "1", "--checkpoint-dir", str(tmpfs / "another")]) == 2
    assert "No space left on device" in _one_line(capsys.readouterr().err)
    assert not any((tmpfs / "another").iterdir())

    filler.unlink()
    summary = _resume(folder, saved[-1] + 2, capsys, args=LONG)
    assert summary["resumed_from"] == str(last) and summary["epochs"] == saved[-1] + 2


ORBAX_FULL = textwrap.dedent("""
    import os, sys, threading, time
    import orbax.checkpoint as ocp
    from mcjax._cli import main

    real = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):  # the second save meets a full disk, as orbax says it
        if step < 2:
            return real(self, step, *args, **kwargs)
        tmp = os.path.join(str(self.directory), f"epoch_{step:08d}.orbax-checkpoint-tmp")
        os.mkdir(tmp)

        def still_writing():  # orbax's other writes outlive the one that raised (an inode
            time.sleep(0.1)   # is free on a full disk): they recreate the folder after a while
            os.makedirs(os.path.join(tmp, "state", "ocdbt.process_0", "d"), exist_ok=True)
            open(os.path.join(tmp, "state", "manifest.ocdbt"), "wb").close()

        threading.Thread(target=still_writing).start()
        raise ValueError('RESOURCE_EXHAUSTED: Error writing "params.w/0" in OCDBT database at '
                         'local file "/x/": Failed to write 8 bytes to file 11: No space left on '
                         "device [os_error_code='28']")

    ocp.CheckpointManager.save = save
    sys.exit(main(sys.argv[1:]))
""")


def test_orbax_write_error_is_one_line_and_the_run_resumes(tmp_path, capsys):
    """orbax's own error (a ValueError) is caught where mcjax saves: status 1, one line in the
    operating system's words, its temporary folder removed, the earlier checkpoint intact."""
    folder = tmp_path / "run"
    failed = _mcjax(*SMALL, "--epochs", 3, "--checkpoint-every", 1, "--checkpoint-dir", folder,
                    script=ORBAX_FULL)
    assert failed.returncode == 1
    assert _one_line(failed.stderr) == (
        f"mcjax train: cannot write the checkpoint of epoch 2 in {folder}: No space left on "
        f"device; the last checkpoint, {folder / step_name(1)}, is intact: free some space, then "
        "resume (--resume)\n")
    assert _intact(folder) == [1] and sorted(os.listdir(folder)) == [step_name(1), "run.json"]
    assert _resume(folder, 3, capsys)["epochs"] == 3 and _intact(folder) == [1, 2, 3]


def test_resume_on_a_read_only_folder_is_refused_in_one_line_and_nothing_changes(tmp_path,
                                                                                 capsys):
    folder = tmp_path / "run"
    _new_run(folder)
    before = _files(folder)
    with _read_only(folder, tmp_path / "read-only") as view:
        resumed = _mcjax(*SMALL, "--epochs", 3, "--checkpoint-dir", view, "--resume")
        fresh = _mcjax(*SMALL, "--epochs", 1, "--checkpoint-dir", view / "new")
    assert resumed.returncode == 2 and fresh.returncode == 2
    assert (f"--resume but --checkpoint-dir {view} cannot be written ({view} is "
            f"{'on a read-only file system' if view != folder else 'not writable'})"
            in _one_line(resumed.stderr))
    assert "copy it to a writable place and resume there" in resumed.stderr
    assert f"--checkpoint-dir {view / 'new'} cannot be written" in _one_line(fresh.stderr)
    assert _files(folder) == before
    assert _resume(folder, 3, capsys)["epochs"] == 3


@pytest.mark.parametrize("record", [b"", b"{\"run_id\": ", b"\xff\xfe garbage", b"[1, 2]"],
                         ids=["empty", "cut short", "not text", "not a record"])
def test_a_damaged_run_json_is_named_with_the_way_out(tmp_path, record, capsys):
    folder = tmp_path / "run"
    _new_run(folder)
    (folder / "run.json").write_bytes(record)
    before = _files(folder)
    resumed = _mcjax(*SMALL, "--epochs", 3, "--checkpoint-dir", folder, "--resume")
    assert resumed.returncode == 2
    assert f"mcjax train: {folder / 'run.json'} " in _one_line(resumed.stderr)
    assert "start afresh in that folder (--overwrite), remove the folder, or use another " \
        "--checkpoint-dir" in resumed.stderr
    capsys.readouterr()
    assert main([*SMALL, "--epochs", "1", "--checkpoint-dir", str(folder)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "no readable run.json" in err and "resume it" not in err  # it cannot be resumed
    assert _files(folder) == before
    _new_run(folder, "--overwrite")
    assert _intact(folder) == [1, 2]


USER_MODULE = """
import jax.numpy as jnp

def f(x):
    return jnp.tanh(x)

def df(x):
    return jnp.diag(1 - jnp.tanh(x) ** 2)
"""


@pytest.mark.parametrize(("where", "message"), [
    (["train", "neuron", "--epochs", 1, "--no-cache", "--checkpoint-dir", "{file}/run"],
     "mcjax train: --checkpoint-dir {file}/run cannot be made: {file} is a file; "
     "expected a folder, or a path where one can be made"),
    (["train", "neuron", "--epochs", 1, "--cache-dir", "{file}/xla"],
     "mcjax train: mcjax.compilation.enable_compilation_cache: {file}/xla is a file (or lies "
     "under one)"),
    (["check", "{module}:f", "{module}:df", "--shapes", 3, "--heatmap", "{file}/heatmap.png"],
     "mcjax check: --heatmap {file}/heatmap.png: {file} is a file; expected a path in a folder"),
], ids=["checkpoint-dir", "cache-dir", "heatmap"])
def test_an_output_under_a_file_is_refused_in_one_line_before_any_work(tmp_path, where, message):
    paths = {"file": tmp_path / "a-file", "module": tmp_path / "mine.py"}
    paths["file"].write_text("not a folder")
    paths["module"].write_text(USER_MODULE)
    done = _mcjax(*[str(arg).format(**paths) for arg in where])
    assert done.returncode == 2 and done.stdout == ""
    assert _one_line(done.stderr, message.split(":")[0]).startswith(message.format(**paths))
    assert paths["file"].read_text() == "not a folder"


def test_a_heatmap_path_that_is_a_folder_or_under_none_is_refused_before_any_work(tmp_path,
                                                                                  capsys):
    module = tmp_path / "mine.py"
    module.write_text(USER_MODULE)
    for heatmap, words in ((tmp_path, "is a folder; expected a file name such as"),
                           (tmp_path / "missing" / "h.png", "does not exist")):
        code = main(["check", f"{module}:f", f"{module}:df", "--shapes", "3", "--heatmap",
                     str(heatmap)])
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and words in _one_line(err, "mcjax check: ")


# -- signals -----------------------------------------------------------------------------------
SIGNAL_IN_A_SAVE = """
    import os, signal, sys, time
    from mcjax._train import _checkpoint
    from mcjax._cli import main

    digests = _checkpoint._file_digests

    def signalled(folder):  # where a second signal used to leave a checkpoint without digests
        if folder.name == "epoch_00000002":
            for _ in range(2):
                os.kill(os.getpid(), signal.{name})
                time.sleep(0.05)  # the handler runs, once per signal
        return digests(folder)

    _checkpoint._file_digests = signalled
    sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("name", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_second_signal_inside_a_save_stops_after_it_with_a_complete_checkpoint(
        tmp_path, name, status, capsys):
    folder = tmp_path / "run"
    stopped = _mcjax(*SMALL, "--epochs", 6, "--checkpoint-every", 1, "--checkpoint-dir", folder,
                     "--json", script=SIGNAL_IN_A_SAVE.replace("{name}", name))
    assert stopped.returncode == status
    assert _one_line(stopped.stderr) == (f"mcjax train: stopped by {name} after epoch 2; resume "
                                         f"with --resume --checkpoint-dir {folder}\n")
    assert json.loads(stopped.stdout)["checkpoint"] == str(folder / step_name(2))
    assert _intact(folder) == [1, 2] and not (folder / "run.lock").exists()
    assert _resume(folder, 6, capsys)["resumed_from"] == str(folder / step_name(2))


SIGNAL_BEFORE_TRAINING = """
    import os, signal, sys, time
    from mcjax._train import _loop
    from mcjax._cli import main

    def prepare(*args, **kwargs):  # a signal while the run is being prepared (compiled)
        os.kill(os.getpid(), signal.{name})
        time.sleep(30)
        raise AssertionError("not stopped")

    _loop.prepare = prepare
    sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("name", "status", "said"), [
    ("SIGTERM", 143, "mcjax train: stopped by SIGTERM\n"),
    ("SIGINT", 130, "mcjax train: interrupted (Ctrl-C)\n")])
def test_a_signal_before_the_first_epoch_is_one_line_too(tmp_path, name, status, said):
    done = _mcjax(*SMALL, "--epochs", 2, "--checkpoint-dir", tmp_path / "run",
                  script=SIGNAL_BEFORE_TRAINING.replace("{name}", name))
    assert done.returncode == status and _one_line(done.stderr) == said


# -- the lock ----------------------------------------------------------------------------------
def test_a_deleted_run_lock_stops_the_run_before_its_next_save(tmp_path, capsys):
    """A user removes a live run's ``run.lock`` ("a stale lock") and a second writer takes the
    folder: the first run stops before its next save (status 2, one line), writes nothing,
    leaves the second writer's lock alone; the run resumes once the folder is free."""
    folder = tmp_path / "run"
    run = _start(*LONG, "--epochs", 100_000, "--checkpoint-every", 40, "--checkpoint-dir", folder)
    _wait_for_a_checkpoint(run, folder)
    (folder / "run.lock").unlink()
    second = Lock(folder)
    try:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 2, err
        assert f"{folder / 'run.lock'} is no longer the lock this run holds" in _one_line(err)
        unsaved = int(err.split("stopped without saving epoch ")[1].split(" ")[0])
        saved = _intact(folder)
        assert saved and saved[-1] < unsaved and second.held()
    finally:
        second.release()
    assert _resume(folder, saved[-1] + 1, capsys, args=LONG)["epochs"] == saved[-1] + 1


# -- warnings ----------------------------------------------------------------------------------
def test_a_damaged_checkpoint_is_one_warning_line(tmp_path):
    folder = tmp_path / "run"
    _new_run(folder)
    damaged = next(p for p in sorted((folder / step_name(2)).rglob("*"))
                   if p.is_file() and p.name != DIGESTS and p.stat().st_size > 8)
    damaged.write_bytes(b"X" + damaged.read_bytes()[1:])
    done = _mcjax(*SMALL, "--epochs", 3, "--checkpoint-dir", folder, "--resume")
    assert done.returncode == 0
    assert _one_line(done.stderr, "mcjax train: warning: skipped the damaged "
                                  f"checkpoint {folder / step_name(2)}")


LIBRARY_WARNING = """
    import sys, warnings
    from mcjax._train import _loop
    from mcjax._cli import main

    real = _loop.prepare

    def prepare(*args, **kwargs):  # a library that warns at every call, in several lines
        for _ in range(3):
            warnings.warn("the first line\\n  and its details", DeprecationWarning)
        return real(*args, **kwargs)

    _loop.prepare = prepare
    sys.exit(main(sys.argv[1:]))
"""


def test_a_library_warning_is_one_line_once_without_its_source(tmp_path):
    done = _mcjax(*SMALL, "--epochs", 1, script=LIBRARY_WARNING,
                  python=["-W", "always::DeprecationWarning"])
    assert done.returncode == 0
    assert _one_line(done.stderr) == "mcjax train: warning: the first line\n"


# -- options -----------------------------------------------------------------------------------
# (the command after "mcjax", what its one line says); each is refused with status 2 before any
# work. The values out of range of every flag argparse reads are in test_train_cli.py.
OPTION_ERRORS = [
    (["train", "neuron", "--opt", "b1=2.0"], "--opt b1=2.0; expected a number in [0, 1)"),
    (["train", "neuron", "--opt", "b1=notanumber"],
     "--opt b1=notanumber; expected a number in [0, 1)"),
    (["train", "neuron", "--opt", "learning_rate=5"],
     "--opt learning_rate=5: the learning rate has its own flag; expected --lr 5"),
    (["train", "neuron", "--opt", "eps=0"], "--opt eps=0; expected a number > 0"),
    (["train", "neuron", "--opt", "eps=-1e-8", "--opt", "b2=1"],
     "--opt eps=-1e-08; expected a number > 0; and --opt b2=1; expected a number in [0, 1)"),
    (["train", "neuron", "--opt", "nesterov=maybe"], "--opt nesterov=maybe; expected true or false"),
    (["train", "neuron", "--optimizer", "adamw", "--opt", "weight_decay=-0.1"],
     "--opt weight_decay=-0.1; expected a number >= 0"),
    (["train", "neuron", "--optimizer", "momentum", "--opt", "momentum=1.5"],
     "--opt momentum=1.5; expected a number in [0, 1)"),
    (["train", "neuron", "--optimizer", "rmsprop", "--opt", "decay=NaN"],
     "--opt decay=NaN; expected a number in [0, 1)"),
    (["train", "neuron", "--schedule", "cosine_decay", "--schedule-arg", "decay_steps=0"],
     "--schedule cosine_decay: The cosine_decay_schedule requires positive decay_steps"),
    (["train", "neuron", "--epochs", "0"], "argument --epochs: 0 is out of range; expected a "
                                           "finite number >= 1"),
    (["check", "m.py:f", "m.py:df", "--shapes", "3,x"],
     "--shapes '3,x' is not a shape like 3,4 (or () for a scalar); expected sizes that are "
     "positive integers"),
    (["check", "m.py:f", "m.py:df", "--shapes", "0"], "--shapes '0' is not a shape like 3,4"),
    (["check", "m.py:f", "m.py:df", "--shapes", "3,-1"], "--shapes '3,-1' is not a shape"),
    (["check", "m.py:f", "m.py:df", "--shapes", "3,,4"], "--shapes '3,,4' is not a shape"),
    (["derive", "m.py:f", "--shapes", "3,x"], "mcjax derive: --shapes '3,x' is not a shape"),
]


@pytest.mark.parametrize(("command", "message"), OPTION_ERRORS,
                         ids=[" ".join(c[2:] if c[0] == "train" else c[3:])
                              for c, _ in OPTION_ERRORS])
def test_an_option_out_of_range_is_named_with_what_was_expected(tmp_path, monkeypatch, command,
                                                                 message, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(USER_MODULE)
    try:
        code = main([*command, "--no-cache"] if command[0] == "train" else command)
    except SystemExit as stopped:  # argparse's own refusals exit
        code = stopped.code
    err = capsys.readouterr().err
    assert code == 2 and message in _one_line(err, f"mcjax {command[0]}: "), err


def test_an_option_out_of_range_in_a_real_process(tmp_path):
    done = _mcjax("train", "neuron", "--opt", "b1=2.0", "--checkpoint-dir", tmp_path / "run")
    assert done.returncode == 2 and not (tmp_path / "run").exists()
    assert _one_line(done.stderr) == ("mcjax train: --opt b1=2.0; expected a number in [0, 1)\n")


# -- resuming ----------------------------------------------------------------------------------
def test_a_default_written_out_is_the_same_setting_on_resume(tmp_path, capsys):
    """Adam's own eps=1e-8 written out is no changed setting, either way round; another value
    is, and the refusal names it."""
    _new_run(tmp_path / "a")
    _new_run(tmp_path / "b", "--opt", "eps=1e-8")
    assert _resume(tmp_path / "a", 3, capsys, args=[*SMALL, "--opt", "eps=1e-8", "--opt",
                                                    "b1=0.9", "--opt", "nesterov=false"])
    assert _resume(tmp_path / "b", 3, capsys)["epochs"] == 3
    assert main([*SMALL, "--epochs", "4", "--checkpoint-dir", str(tmp_path / "b"), "--resume",
                 "--opt", "eps=1e-7"]) == 2
    assert "optimizer.eps: 1e-08 there, 1e-07 now" in _one_line(capsys.readouterr().err)


def _cadence(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())["checkpointing"]


def test_a_resume_keeps_the_runs_checkpoint_cadence_unless_told_otherwise(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main([*SMALL, "--epochs", "4", "--checkpoint-every", "2", "--keep", "10",
                 "--checkpoint-dir", str(folder)]) == 0
    assert _intact(folder) == [2, 4]
    _resume(folder, 8, capsys)  # says nothing: nothing changed
    assert _intact(folder) == [2, 4, 6, 8]
    assert _cadence(folder) == {"checkpoint_every": 2, "keep_checkpoints": 10}
    capsys.readouterr()
    assert main([*SMALL, "--epochs", "12", "--checkpoint-every", "3", "--checkpoint-dir",
                 str(folder), "--resume"]) == 0
    assert _one_line(capsys.readouterr().err) == (
        "mcjax train: resuming with --checkpoint-every 3 instead of the run's 2\n")
    assert _intact(folder) == [2, 4, 6, 8, 9, 12]
    assert _cadence(folder) == {"checkpoint_every": 3, "keep_checkpoints": 10}
