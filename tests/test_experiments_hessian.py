"""experiments/bench_hessian.py: its command line, and the structure it benchmarks on each
case at the smoke size (the timed smoke run compiles two dozen programs, over the suite's
budget for one script; it is run by hand, see docs/second-order.md)."""

import importlib.util
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest

import mcjax

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    path = ROOT / "experiments" / "bench_hessian.py"
    spec = importlib.util.spec_from_file_location("bench_hessian", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_hessian_help(bench, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--help"])
    assert exit_.value.code == 0 and "--smoke" in capsys.readouterr().out


def test_each_case_has_the_structure_the_benchmark_claims(bench):
    kinds = [mcjax.hessian(f)(*a).kind for _, _, f, a in bench.problems(True, jnp.float32, 0)]
    assert kinds == ["dense", "gram", "gram", "through an affine map", "diagonal plus low rank"]
    f, loss, W, h, labels = bench.digits_layer(True, jnp.float32, 0)
    G = mcjax.gauss_newton(f, loss)(W, h, loss_args=(labels,))
    assert G.HL.kind == "batched diagonal plus low rank"  # one block per row of the batch
    assert G.HL.U.shape == (labels.size, W.shape[0], 2)


def test_unknown_cases_are_a_usage_error(bench, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--smoke", "--cases", "cubic"])
    assert exit_.value.code == 2 and "--cases: unknown cubic" in capsys.readouterr().err
