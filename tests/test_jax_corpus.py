"""derive and the checker on a sample of JAX's own gradient-test functions, one or two of
every family (the whole corpus runs in ``experiments/jax_corpus.py``; its totals are in the
docs): derive equals ``jax.jacfwd`` and is structured (no opaque block but for a matrix
decomposition); the checker passes ``jax.jacfwd`` itself (half the sample in float32, half in
float64) and catches it times 1.1."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import mcjax

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
from _jax_functions import CASES  # noqa: E402
from jax_corpus import has_opaque, main, point, run_derive  # noqa: E402

SAMPLE = ["lax.rem/0", "lax.clamp", "lax.erf_inv", "lax.pad", "lax.reshape_dimensions",
          "lax.gather_fill", "lax.scatter/1", "lax.reduce_pair", "lax.cumprod", "lax.cummax",
          "lax.sort_key_val/values", "lax.reduce_window_max(2, 1)(1, 2)((0, 3), (1, 2))(2, 3)",
          "lax.conv_dilated_groups", "linalg.solve/0", "linalg.cholesky",
          "linalg.triangular_solve/a", "lax.cond", "lax.scan", "nn.relu6", "lax.sort/tie"]
BY_NAME = {c.name: c for c in CASES}


def test_the_sample_is_in_the_corpus():
    assert set(SAMPLE) <= set(BY_NAME)
    assert len(CASES) > 150


@pytest.mark.parametrize("name", SAMPLE)
def test_derive_equals_jacfwd_and_is_structured(name):
    case = BY_NAME[name]
    assert run_derive(case, point(case, "float64", 1), "float64") == "ok"


@pytest.mark.parametrize("name", SAMPLE)
def test_the_checker_passes_jax_and_catches_a_slip(name):
    case = BY_NAME[name]
    dtype = ("float32", "float64")[SAMPLE.index(name) % 2]  # half the sample in each dtype
    args = point(case, dtype, 2)
    jac = jax.jacfwd(case.f, case.argnums)(*args)
    right = mcjax.check(case.f, lambda *a: jac, *args, argnums=case.argnums)
    assert right.ok, f"{name} {dtype}: a false alarm\n{right}"
    if np.abs(np.asarray(jac)).max() > 0:
        wrong = mcjax.check(case.f, lambda *a: 1.1 * jac, *args, argnums=case.argnums)
        assert not wrong.ok, f"{name} {dtype}: 1.1 times the Jacobian passed"


def test_a_decomposition_is_the_one_opaque_block():
    case = BY_NAME["linalg.eigh"]  # (and eigh is no opaque block of the checker: it passes)
    J = mcjax.derive(case.f)(*point(case, "float64", 0))
    assert has_opaque(J) and "J[eigh]" in J.formula()


def test_smoke_run_counts_no_problem(tmp_path):
    assert main(["--smoke", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "table.md").read_text()
    assert "| **all** |" in table and (tmp_path / "results.json").exists()


def test_hessian_sweep_smoke_counts_no_wrong_answer_and_no_crash(tmp_path):
    """experiments/hessian_corpus.py --smoke: a structure (softmax), the forward-over-forward
    fallback (lax.pad's padding value, where JAX's reverse mode fails) and a refusal in one
    sentence (lax.igamma with respect to a, which JAX cannot differentiate twice)."""
    import json

    import hessian_corpus

    assert hessian_corpus.main(["--smoke", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    outcome = {(r["case"], r["dtype"]): r["outcome"] for r in results["rows"]}
    assert outcome == {("nn.softmax", "float32"): "structured",
                       ("lax.pad_value", "float64"): "fallback",
                       ("lax.igamma/0", "float32"): "refused"}
    assert "| **all** | 3 | 1 (1) | 1 | 1 | 0 | 0 | 0 |" in (tmp_path / "table.md").read_text()


def test_hessian_sweep_counts_a_wrong_operator(monkeypatch):
    """The sweep's comparison catches a Hessian off by 10% (and a refusal where JAX answers)."""
    import hessian_corpus

    case = BY_NAME["nn.softmax"]
    real = mcjax.hessian

    def off(f, argnums=0):
        return lambda *args: mcjax.curvature.Dense(1.1 * real(f, argnums)(*args).dense())

    monkeypatch.setattr(mcjax, "hessian", off)
    assert hessian_corpus.run_point(case, "float64", 0)[0] == "wrong"

    def refuses(f, argnums=0):
        def at(*args):
            raise NotImplementedError("mcjax.hessian: no")
        return at

    monkeypatch.setattr(mcjax, "hessian", refuses)
    assert hessian_corpus.run_point(case, "float64", 0)[0] == "wrong"
