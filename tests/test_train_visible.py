"""A training run you can see: the result's short repr, its table and figure, the progress bar
that stays, the per-epoch callback, the check of a hand-derived gradient at the first batch,
and one set of defaults for ``mcjax.train`` and ``mcjax train``."""

import base64
import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compile_count import counting_compiles

import mcjax
from mcjax.__main__ import main
from mcjax._cli import build_parser
from mcjax._cli._train import _checkpointing
from mcjax._train._config import DEFAULT_LEARNING_RATE, TrainConfig
from mcjax._train._defaults import DEFAULTS
from mcjax._train._step import STEP_KEYS, epoch_batches, first_batch

ROOT = Path(__file__).resolve().parents[1]
F64 = jnp.float64
(X, Y), _ = mcjax.datasets.neuron_data(jax.random.key(0), n_samples=48, n_features=3, dtype=F64)
NEURON = mcjax.neuron_model(3, dtype=F64)
RUN = dict(optimizer="adam", learning_rate=0.05, epochs=4, batch_size=8)


def _times_two(model):
    return model._replace(backprop=lambda p, b: jax.tree.map(lambda g: 2 * g,
                                                             model.backprop(p, b)))


def test_python_and_the_command_line_share_one_set_of_defaults():
    args = build_parser().parse_args(["train", "digits"])
    assert args.checkpoint_every is None and args.keep is None  # the run's own on --resume,
    _checkpointing(args)  # else a new run's: these
    flags = vars(args)
    signature = inspect.signature(mcjax.train).parameters
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    flag_of = {"keep_checkpoints": "keep"}
    for name, default in dataclasses.asdict(DEFAULTS).items():
        if name == "learning_rate":  # None in both: this default, with an optimizer's name
            assert signature[name].default is flags["lr"] is fields[name] is None
            continue
        assert signature[name].default == default, name
        if name != "shuffle":  # the command always shuffles (TrainConfig gets DEFAULTS.shuffle)
            assert flags[flag_of.get(name, name)] == default, name
        if name in fields:
            assert fields[name] == default, name
    assert DEFAULT_LEARNING_RATE == DEFAULTS.learning_rate
    assert DEFAULTS.grad == "autodiff" and DEFAULTS.check_backprop is True


def test_a_long_table_shows_evenly_spaced_epochs_first_and_last_among_them():
    """A table cut to max_rows shows epoch 1, every k-th epoch for the smallest k that fits,
    and the last (40 epochs in 6 rows: 1, 8, 16, 24, 32, 40), never gaps such as 10, 10, 9."""
    from mcjax._train._history import _thinned

    assert [i + 1 for i in _thinned(40, 6)] == [1, 8, 16, 24, 32, 40]
    assert [i + 1 for i in _thinned(40, 20)][:4] == [1, 3, 6, 9]
    for n in range(1, 130):
        for max_rows in (1, 2, 3, 5, 6, 10, 20):
            shown = [i + 1 for i in _thinned(n, max_rows)]
            if n <= max_rows:
                assert shown == list(range(1, n + 1))
                continue
            assert shown[0] == 1 and shown[-1] == n and len(shown) <= max(max_rows, 2)
            step = shown[1]  # >= 2: epochs step, 2 step, ... between the first and the last
            between = [e for e in shown[1:] if e % step == 0]
            assert between == list(range(step, n + 1, step)), (n, max_rows, shown)
            assert len(shown) - len(between) <= 2  # only the first and the last are extra
            assert len(shown) > max(max_rows, 2) // 2, (n, max_rows, shown)  # not too few


def test_repr_table_plot_and_a_callback_that_changes_nothing(tmp_path):
    records = []
    kw = dict(RUN, evaluate=lambda p: {"w0": p["w"][0]}, checkpoint_every=3)
    first = mcjax.train(NEURON, (X, Y), checkpoint_dir=tmp_path / "a",
                        **{**kw, "epochs": 2})
    resumed = mcjax.train(NEURON, (X, Y), checkpoint_dir=tmp_path / "a", resume=True,
                          callback=records.append, **kw)
    plain = mcjax.train(NEURON, (X, Y), **kw)
    chex.assert_trees_all_equal(resumed.params, plain.params)  # bit for bit, callback or not
    assert resumed.history == plain.history and first.epoch == 2

    # the callback saw the epochs run in this call, numbered on from the resumed ones
    assert [r.epoch for r in records] == [3, 4] and [r.step for r in records] == [18, 24]
    assert records[0].checkpoint == tmp_path / "a" / "epoch_00000003"
    assert records[1].checkpoint == tmp_path / "a" / "epoch_00000004"
    assert records[1].loss == plain.history["loss"][-1] == pytest.approx(
        float(np.mean(records[1].step_losses)))
    assert records[1].step_losses.shape == (6,) and set(records[1].metrics) == {"w0"}
    assert json.loads(json.dumps(records[1].row())) == {
        "epoch": 4, "step": 24, "loss": records[1].loss, "w0": records[1].metrics["w0"]}

    text = repr(plain)
    assert text.startswith("TrainResult(epoch=4, step=24, loss=") and "w0=" in text
    assert "params={'b': float64[], 'w': float64[3]}" in text
    assert "Array" not in text and len(text) < 200
    assert "resumed_from='" in repr(resumed) and "backprop_check" not in text

    table = plain.table().splitlines()
    assert table[0].split() == ["epoch", "step", "loss", "w0"] and len(table) == 2 + 4
    assert table[-1].split()[:2] == ["4", "24"]
    assert [line.split()[0] for line in plain.table(max_rows=2).splitlines()[2:4]] == ["1", "4"]
    assert "2 of 4 epochs" in plain.table(max_rows=2)
    assert plain.rows()[0] == {"epoch": 1, "step": 6, "loss": plain.history["loss"][0],
                               "w0": plain.history["w0"][0]}

    pytest.importorskip("matplotlib")
    figure = plain.plot(tmp_path / "history.png", title="neuron")
    assert (tmp_path / "history.png").stat().st_size > 1000 and len(figure.axes) == 2


def test_the_progress_bar_stays_at_its_last_epoch(capsys):
    mcjax.train(NEURON, (X, Y), **{**RUN, "epochs": 3}, progress=True)
    err = capsys.readouterr().err
    assert "epoch 3/3" in err  # a non-terminal gets the last state when the bar stops
    mcjax.train(NEURON, (X, Y), **{**RUN, "epochs": 1})  # None: no bar where stderr is no tty
    assert capsys.readouterr().err == ""


def test_a_wrong_hand_derived_gradient_is_caught_at_the_first_batch():
    right = mcjax.train(NEURON, (X, Y), grad="analytic", **RUN)
    assert right.backprop_check.ok and "backprop_check=ok" in repr(right)
    with pytest.raises(mcjax.DerivativeError, match=(
            r"(?s)mcjax.train: the backprop of model 'neuron' is not the gradient of its loss \(a "
            r"constant factor: matches the reference times 2\) at the start of epoch 1, on the 8 "
            r"rows of its first step; [^\n]*check_backprop=False skips this check.*"
            r"mcjax.check: FAIL")) as caught:
        mcjax.train(_times_two(NEURON), (X, Y), grad="analytic", **RUN)
    assert not caught.value.report.ok
    # unchecked, it trains silently: what the check is for
    silent = mcjax.train(_times_two(NEURON), (X, Y), grad="analytic", check_backprop=False, **RUN)
    assert silent.backprop_check is None and silent.epoch == 4

    with pytest.raises(ValueError, match=r"check_backprop='yes'; expected True or False"):
        mcjax.train(NEURON, (X, Y), check_backprop="yes")
    with pytest.raises(TypeError, match=r"callback=3; expected a function"):
        mcjax.train(NEURON, (X, Y), callback=3)


CLI = ["train", "neuron", "--samples", "64", "--features", "3", "--batch-size", "16",
       "--epochs", "3", "--no-cache", "--no-progress"]


def test_the_command_stops_a_wrong_backprop_with_the_report(monkeypatch, capsys):
    neuron_model = mcjax.neuron_model
    monkeypatch.setattr(mcjax, "neuron_model", lambda *a, **k: _times_two(neuron_model(*a, **k)))
    assert main([*CLI, "--grad", "analytic"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mcjax train: the backprop of model 'neuron' is not the gradient of "
                          "its loss") and "mcjax.check: FAIL" in err
    assert "Fix backprop or train with --grad autodiff (--no-check-backprop skips this check)" \
        in err.splitlines()[0]


def test_the_command_writes_the_history_and_its_figure(tmp_path, capsys):
    # a missing folder is made; the log is flushed as each epoch ends
    jsonl, csv, png = tmp_path / "logs" / "h.jsonl", tmp_path / "h.csv", tmp_path / "a/b/h.png"
    assert main([*CLI, "--grad", "analytic", "--history", str(jsonl),
                 "--checkpoint-dir", str(tmp_path / "run"), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["epoch", "step", "loss"]  # the table comes first
    assert "backprop_check           passed" in out
    plot = ["--plot", str(png)] if _has_matplotlib() else []
    assert main([*CLI, "--history", str(csv), "--checkpoint-dir", str(tmp_path / "run"),
                 "--grad", "analytic", "--resume", "--no-check-backprop", *plot]) == 0
    out = capsys.readouterr().out  # no check, no checkpoint written: no line, not Python's None
    assert "backprop_check" not in out and "None" not in out and "signal" not in out
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["step"] == 8
    lines = csv.read_text().splitlines()
    assert lines[0] == "epoch,step,loss" and [line.split(",")[0] for line in lines[1:]] == [
        "1", "2", "3"]  # the resumed run's log holds the epochs it restored
    assert float(lines[1].split(",")[2]) == rows[0]["loss"]
    assert not plot or png.stat().st_size > 1000
    for extra, message in [(["--history", str(tmp_path / "h.txt")],
                            "--history " + str(tmp_path / "h.txt") + "; expected a file name "
                            "ending in .csv or .jsonl"),
                           (["--plot", str(jsonl / "h.png")],
                            f"--plot {jsonl / 'h.png'}: {jsonl} is a file; expected a folder "
                            "there"),
                           (["--history", str(tmp_path / "logs")],
                            f"--history {tmp_path / 'logs'} is a folder; expected a file name")]:
        assert main([*CLI, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _dropout_model(*, same_key: bool):
    """A linear model whose loss drops inputs with the step's key, and its hand gradient,
    which draws the same mask from the same key (or, when ``same_key`` is False, another)."""

    def mask(key, X):
        return jax.random.bernoulli(key, 0.75, X.shape).astype(X.dtype) / 0.75

    def loss(params, batch, key):
        X, y = batch
        return jnp.mean((X * mask(key, X) @ params["w"] - y) ** 2)

    def backprop(params, batch, key):
        X, y = batch
        Xm = X * mask(key if same_key else jax.random.fold_in(key, 1), X)
        return {"w": 2 * Xm.T @ (Xm @ params["w"] - y) / y.shape[0]}

    return mcjax.Model(lambda key: {"w": jnp.zeros(3, F64)}, loss, backprop, name="dropout")


def test_the_check_sees_the_first_step_as_training_does():
    """The rows and the key the check uses are the first step's: a loss that draws from its
    key (dropout) is checked against a hand gradient drawing the same mask."""
    key = jax.random.key(3)
    batch, step_key = first_batch((X, Y), key, batch_size=8)
    batches = epoch_batches((X, Y), key, batch_size=8)
    chex.assert_trees_all_equal(batch, jax.tree.map(lambda a: a[0], batches))
    keys = jax.random.split(jax.random.fold_in(key, STEP_KEYS), len(batches[0]))
    assert (jax.random.key_data(step_key) == jax.random.key_data(keys[0])).all()
    assert mcjax.train(_dropout_model(same_key=True), (X, Y), grad="analytic",
                       **RUN).backprop_check.ok
    with pytest.raises(mcjax.DerivativeError, match="the backprop of model 'dropout' is not"):
        mcjax.train(_dropout_model(same_key=False), (X, Y), grad="analytic", **RUN)


def test_a_resumed_run_checks_its_backprop_where_it_resumes(tmp_path):
    # (a backprop edited between the two is another traced loss, refused before any check)
    wrong = _times_two(NEURON)
    mcjax.train(wrong, (X, Y), grad="analytic", checkpoint_dir=tmp_path, check_backprop=False,
                **{**RUN, "epochs": 2})
    with pytest.raises(mcjax.DerivativeError, match="at the start of epoch 3, on the 8 rows"):
        mcjax.train(wrong, (X, Y), grad="analytic", checkpoint_dir=tmp_path, resume=True, **RUN)
    with pytest.raises(mcjax.CheckpointError, match=r"the traced loss \(and its gradient\) "
                                                    r"differs: mul gone"):
        mcjax.train(NEURON, (X, Y), grad="analytic", checkpoint_dir=tmp_path, resume=True, **RUN)


def test_what_a_callback_raises_stops_the_run_and_says_where(tmp_path):
    class Enough(Exception):
        pass

    def stop_at_two(record):
        if record.epoch == 2:
            raise Enough("loss is low enough")

    with pytest.raises(Enough, match="loss is low enough") as caught:
        mcjax.train(NEURON, (X, Y), callback=stop_at_two, checkpoint_dir=tmp_path, **RUN)
    if hasattr(caught.value, "__notes__"):  # Python 3.11+
        assert caught.value.__notes__ == [
            "mcjax.train: raised by callback=test_what_a_callback_raises_stops_the_run_and_"
            "says_where.<locals>.stop_at_two after epoch 2 (step 12); the run stopped there, "
            f"its last checkpoint is {tmp_path / 'epoch_00000002'}"]
    # the checkpoint of the epoch the callback stopped is there to resume from
    resumed = mcjax.train(NEURON, (X, Y), checkpoint_dir=tmp_path, resume=True, **RUN)
    chex.assert_trees_all_equal(resumed.params, mcjax.train(NEURON, (X, Y), **RUN).params)


def test_a_long_parameter_tree_is_counted_and_a_notebook_gets_a_table():
    mlp = mcjax.mlp_model((3, 4, 4, 4, 4, 1), loss="mse", dtype=F64)
    result = mcjax.train(mlp, (X, Y[:, None]), **{**RUN, "epochs": 25})
    assert "params=<10 arrays, 81 numbers>" in repr(result)
    page = result._repr_html_()
    assert page.startswith("<pre>TrainResult(epoch=25, ") and page.count("<tr>") == 1 + 10
    assert "10 of 25 epochs" in page
    pytest.importorskip("matplotlib")
    png = base64.b64decode(re.search(r"src='data:image/png;base64,([^']+)'", page).group(1))
    assert png.startswith(b"\x89PNG") and 2000 < len(png) < 60_000  # a small plot, inline


def test_without_matplotlib_plot_names_the_extra(monkeypatch, tmp_path, capsys):
    result = mcjax.train(NEURON, (X, Y), **{**RUN, "epochs": 1})
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    page = result._repr_html_()  # a notebook's view: the table, without a plot
    assert "<table>" in page and "<img" not in page
    with pytest.raises(ImportError, match=r"^mcjax.TrainResult.plot needs matplotlib: "
                                          r"pip install 'mcjax\[plot\]'$"):
        result.plot()
    assert main([*CLI, "--plot", str(tmp_path / "h.png")]) == 2
    assert capsys.readouterr().err == ("mcjax train: --plot needs matplotlib: pip install "
                                       "'mcjax[plot]'\n")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal (POSIX)")
def test_in_a_terminal_the_bar_stays_at_its_last_epoch(tmp_path):
    """``mcjax train`` with its stderr on a terminal: the bar is drawn (the default there), and
    nothing after its last state moves the cursor up or erases the line."""
    primary, secondary = os.openpty()
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": str(ROOT)}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen([sys.executable, "-m", "mcjax", *CLI[:-1], "--json"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=secondary, env=env, cwd=tmp_path)
    os.close(secondary)
    written = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the other end closed (Linux)
            break
        if not chunk:
            break
        written += chunk
    os.close(primary)
    assert process.wait(timeout=120) == 0
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", written).decode()
    assert "epoch 0/3" in text and re.search(r"epoch 3/3 \S* loss \d", text), text
    last = written[written.rindex(b"3/3"):]
    assert b"\x1b[2K" not in last and b"\x1b[1A" not in last and b"\r\n" in last, last


def test_the_check_of_a_repeated_run_compiles_nothing():
    """The check's programs are cached like the epoch's: another seed (other parameters, other
    rows) checks and trains without compiling."""
    mcjax.train(NEURON, (X, Y), grad="analytic", **RUN)
    with counting_compiles() as compiles:
        again = mcjax.train(NEURON, (X, Y), grad="analytic", seed=1, **RUN)
    assert again.backprop_check.ok and compiles.count == 0
