"""The `mcjax verify` command."""

import json
import subprocess
import sys

import pytest

from mcjax.__main__ import main


def test_verify_json_one_object_per_rule(capsys):
    assert main(["verify", "-k", "affine*", "--json", "--seed", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["name"] for row in rows} == {"affine", "affine_batch"}
    for row in rows:
        assert row["ok"] is True
        assert {d["wrt"] for d in row["derivatives"]} == {"W", "x", "b"}
        assert all(d["jax.jacfwd"]["max_rel"] <= 1e-4 for d in row["derivatives"])


def test_verify_table_and_exit_status(capsys):
    assert main(["verify", "-k", "relu", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "relu" in out
    assert "1 rule, 1 derivative, dtype float32, 3 shape cases, seed 0: all 3 checks passed" in out


def test_verify_table_reads_at_80_columns(capsys, monkeypatch):
    """A CI log is 80 columns: the numbers keep their width, each formula stays readable
    (whole words, under its rule's name) and the two lines of a row are labelled abs and rel."""
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["verify", "-k", "dense_layer", "--dtype", "float32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines[:-1]) <= 80, "\n".join(lines)  # the verdict line wraps
    rows = [line for line in lines if line.startswith((" dense_layer", " diag"))]
    assert [row.split()[:2] for row in rows] == [["dense_layer", "W"], ["diag(act'(Z))", "(I_m"],
                                                 ["dense_layer", "X"], ["diag(act'(Z))", "(I_B"],
                                                 ["dense_layer", "b"], ["diag(act'(Z))", "(1"]]
    assert "diag(act'(Z)) (I_m (x) X)" in rows[1]  # the formula whole, on one line
    for first, second in zip(rows[::2], rows[1::2]):  # abs with the verdict, rel under it
        assert " abs " in first and first.split()[-2:] == ["3", "ok"], first
        assert " rel " in second, second


def test_verify_unknown_pattern_is_a_usage_error(capsys):
    assert main(["verify", "-k", "no_such_rule*"]) == 2  # 1 is a failed verdict
    err = capsys.readouterr().err
    assert "no rule matches" in err and len(err.strip().splitlines()) == 1


def test_list(capsys):
    assert main(["verify", "--list"]) == 0
    assert "neuron_loss" in capsys.readouterr().out


def test_python_dash_m_mcjax():
    run = subprocess.run([sys.executable, "-m", "mcjax", "verify", "-k", "sum_reduction"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "sum_reduction" in run.stdout


def test_version(capsys):
    import jax

    import mcjax

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"mcjax {mcjax.__version__} (jax {jax.__version__})\n"


def test_help_lists_verify():
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0


@pytest.mark.parametrize("command", [
    ["verify", "--list"],
    ["verify", "-k", "relu", "--dtype", "float32", "--jobs", "1", "--json"],
    ["train", "neuron", "--samples", "64", "--epochs", "1", "--no-cache", "--no-progress"],
], ids=" ".join)
def test_a_reader_gone_ends_the_command_quietly_with_status_141(command):
    """``mcjax ... | head``: stdout's reader closes the pipe before the command writes. The
    command says nothing (no BrokenPipeError traceback) and ends with 141, 128 + SIGPIPE."""
    process = subprocess.Popen([sys.executable, "-m", "mcjax", *command], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    process.stdout.close()  # before the child has written a byte: its first write fails
    _, err = process.communicate(timeout=120)
    assert (process.returncode, err) == (141, "")
