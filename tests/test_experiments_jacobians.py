"""experiments/bench_jacobians.py in its --smoke size: it runs, writes what it promises, and
its memory account shows the structure (O(n) bytes, not n x n)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    path = ROOT / "experiments" / "bench_jacobians.py"
    spec = importlib.util.spec_from_file_location("bench_jacobians", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_jacobians")
    assert bench.main(["--smoke", "--out", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_help(bench, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--help"])
    assert exit_.value.code == 0
    assert "--smoke" in capsys.readouterr().out


def test_smoke_writes_results_plots_and_table(bench, smoke):
    out, results = smoke
    for name in ("time.png", "memory.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "table.md").read_text()
    for case in bench.CASES:
        assert case.label in table
    assert results["seed"] == 0 and results["dtype"] == "float32"
    assert results["machine"]["cores"] >= 1
    # every case, every method, every size: measured (nothing is too big at smoke size)
    got = {(r["case"], r["method"], r["n"]) for r in results["rows"]}
    want = {(c.key, m, n) for c in bench.CASES for m in bench.METHODS for n in results["sizes"]}
    assert got == want
    for row in results["rows"]:
        assert row["status"] == "ok", row
        assert row["median_s"] > 0 and row["program_bytes"] >= 0


def test_structured_program_is_linear_in_n_where_dense_is_quadratic(smoke):
    """XLA's account: the structured ReLU Jacobian allocates n floats, jax.jacfwd n * n."""
    _, results = smoke
    for row in results["rows"]:
        n, itemsize = row["n"], 4  # float32
        if row["case"] in ("relu", "multiply", "add_scalar_x") and row["method"] == "structured":
            assert row["program_bytes"] <= n * itemsize, row
        if row["case"] == "relu" and row["method"] in ("jacfwd", "jacrev", "dense"):
            assert row["program_bytes"] >= n * n * itemsize, row
        if row["case"] == "affine_W" and row["method"] == "structured":
            assert row["program_bytes"] <= n * itemsize < row["dense_bytes"], row


def test_too_big_variants_are_skipped_with_the_would_be_size(bench, tmp_path):
    # at n = 8 the affine map's dense Jacobian w.r.t. W is 8 * 8 * 8 float32 = 2 KiB
    bench.main(["--smoke", "--out", str(tmp_path), "--cases", "affine_W", "--max-bytes", "1024"])
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    skipped = {r["method"]: r for r in rows if r["n"] == 8 and r["status"] == "skipped"}
    assert set(skipped) == {"dense", "jacfwd", "jacrev"}
    assert "(8, 8, 8) would take 2 KiB" in skipped["dense"]["reason"]
    measured = {r["method"] for r in rows if r["n"] == 8 and r["status"] == "ok"}
    assert {"structured", "jvp_structured", "vjp_structured"} <= measured
