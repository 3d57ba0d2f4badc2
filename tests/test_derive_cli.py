"""``mcjax derive``: what it prints and its exit status (0 success, 1 a Jacobian that disagrees
with jax.jvp/jax.vjp on random probes or a primitive without a structured rule under --strict,
2 a usage, import or trace error with one line on stderr and no traceback).  Two runs in a
subprocess, as a user runs it; the other outcomes through
``mcjax._cli.main`` in this process (a subprocess costs a JAX start-up each)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mcjax.__main__ import main

ROOT = Path(__file__).resolve().parent.parent

MODULE = textwrap.dedent("""
    import jax
    import jax.numpy as jnp


    def layer(W, x, b):
        return jax.nn.relu(W @ x + b)


    def spectrum(x):
        return jnp.linalg.eigvalsh(jnp.diag(x) + 0.25)


    def smooth(W, x):
        return jnp.tanh(W @ x)
""")


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    path = tmp_path_factory.mktemp("derive") / "model.py"
    path.write_text(MODULE)
    return path


def mcjax_derive(*arguments):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "mcjax", "derive", *map(str, arguments)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_prints_the_structure_and_the_formula(module):
    run = mcjax_derive(f"{module}:layer", "--shapes", "8,4", "4", "8", "--wrt", "0")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[:4] == [
        "J: shape (8,) ← (8, 4)",
        "Composed  (8,) ← (8, 4)",
        "├─ Diagonal  (8,) ← (8,)",
        "└─ Kronecker  (8,) ← (8, 4)",
    ]
    assert "J = diag(1[z > 0]) (I_8 ⊗ xᵀ), z = W x + b" in run.stdout


def test_a_usage_error_is_one_line_and_status_2(module):
    run = mcjax_derive(f"{module}:missing", "--shapes", "3")
    assert run.returncode == 2
    assert run.stderr.strip() == f"mcjax derive: FUNCTION '{module}:missing': module {module} " \
        "has no 'missing'"


def test_several_arguments_are_labelled_by_their_numbers(module, capsys):
    assert main(["derive", f"{module}:layer", "--shapes", "3,2", "2", "3", "--wrt", "0,2"]) == 0
    labels = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()
              if line.startswith("J[") and ": shape" in line]
    assert labels == ["J[0]", "J[2]"]  # W and b, not the tuple's J[0] and J[1]


def test_latex_strict_and_errors(module, capsys):
    assert main(["derive", f"{module}:layer", "--shapes", "3,2", "2", "3", "--wrt", "1",
                 "--latex"]) == 0
    assert r"J = \operatorname{diag}(\mathbb{1}[\mathbf{z} > 0])\,W" in capsys.readouterr().out

    assert main(["derive", f"{module}:spectrum", "--shapes", "3", "--strict"]) == 1
    err = capsys.readouterr().err
    assert "'eigh'" in err and "model.py:" in err

    for arguments, says in (
        ((f"{module}:layer", "--shapes", "3,a"), "is not a shape like 3,4"),
        ((f"{module}:layer", "--shapes", "8,4", "5", "8"), "cannot derive"),
        (("nowhere.py:f", "--shapes", "3"), "no such file"),
    ):
        assert main(["derive", *arguments]) == 2, arguments
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_jacobian_is_checked_against_jax_by_default(module, capsys):
    assert main(["derive", f"{module}:layer", "--shapes", "3,2", "2", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("checked against jax.jvp/jax.vjp with 4 random probes: agrees to ")
    assert main(["derive", f"{module}:layer", "--shapes", "3,2", "2", "3", "--no-verify"]) == 0
    assert "checked against" not in capsys.readouterr().out
    assert main(["derive", f"{module}:layer", "--shapes", "3,2", "2", "3", "--probes", "2",
                 "--dtype", "float64"]) == 0
    assert "with 2 random probes: agrees to " in capsys.readouterr().out


def test_a_wrong_jacobian_exits_1(module, capsys, monkeypatch):
    import mcjax

    # a diagonal whose matvec is off by 10%: tanh's derivative in smooth's Jacobian
    monkeypatch.setattr(mcjax.Diagonal, "jvp", lambda self, v: 1.1 * self.diagonal * v)
    assert main(["derive", f"{module}:smooth", "--shapes", "3,2", "2", "--wrt", "1"]) == 1
    verdict = capsys.readouterr().out.splitlines()[-1]
    assert verdict.startswith("checked against jax.jvp/jax.vjp with 4 random probes: "
                              "DISAGREES in J v at f's output by 0.1 of its size"), verdict
    assert main(["derive", f"{module}:smooth", "--shapes", "3,2", "2", "--wrt", "1",
                 "--no-verify"]) == 0


def test_probes_must_be_a_positive_number(module, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["derive", f"{module}:layer", "--shapes", "3,2", "2", "3", "--probes", "0"])
    assert exit_.value.code == 2
    assert "--probes: expected an int >= 1, got '0'" in capsys.readouterr().err
