"""experiments/bench_derive.py in its --smoke size: it runs, writes what it promises, and the
structured Jacobians hold O(n) (element-wise) and O(m + n) (the W-Jacobian) bytes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    path = ROOT / "experiments" / "bench_derive.py"
    spec = importlib.util.spec_from_file_location("bench_derive", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_help(bench, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--help"])
    assert exit_.value.code == 0
    assert "--smoke" in capsys.readouterr().out


def test_smoke_writes_results_a_plot_and_the_table(bench, tmp_path):
    # asdex is optional and never needed here; a --max-bytes below the W-Jacobian's dense size
    # (8 * 8 * 64 floats) exercises the skipped path
    assert bench.main(["--smoke", "--no-asdex", "--out", str(tmp_path), "--max-bytes", "8000"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "table.md").read_text()
    assert results["seed"] == 0 and results["machine"]["cores"] >= 1
    n, m = results["n"], results["m"]
    rows = {(r["case"], r["method"]): r for r in results["rows"]}
    for case in bench.CASES:
        assert case.label in table
        derive = rows[case.key, "derive"]
        assert derive["to_j_median_s"] > 0 and derive["setup_s"] > 0
        if case.kind == "elementwise":  # a diagonal (plus two vectors for softmax, layer norm)
            assert derive["bytes_held"] <= 3 * 4 * n + 64, derive
        if case.key == "layer_W":  # diag(1[z > 0]) (I_m ⊗ xᵀ): m + n numbers, never m n m
            assert derive["bytes_held"] == 4 * (m + n)
            assert rows[case.key, "jacfwd"]["skipped"].startswith("the dense Jacobian would take")
            assert "to_dense_skipped" in derive
