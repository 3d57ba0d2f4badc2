"""experiments/bench_check.py runs in its --smoke size and writes its results and plot.

The script is loaded in this process (as tests/test_experiments_jacobians.py does): a fresh
interpreter would import JAX again and compile everything again."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    path = ROOT / "experiments" / "bench_check.py"
    spec = importlib.util.spec_from_file_location("bench_check", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_check_smoke(bench, tmp_path, capsys):
    assert bench.main(["--smoke", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert all(r["mcjax_check"] == "pass" for r in results["fast"])
    assert all(r["ratio_program_to_grad"] > 0 and r["flops_ratio"] > 0 for r in results["fast"])
    assert (tmp_path / "bench_check.png").stat().st_size > 1000
    assert "check/grad" in capsys.readouterr().out


def test_bench_check_help(bench, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--help"])
    assert exit_.value.code == 0 and "--smoke" in capsys.readouterr().out
