"""experiments/bench_check.py runs in its --smoke size and writes its results and plot."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_check_smoke(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench_check.py"), "--smoke",
                           "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert all(r["mcjax_check"] == "pass" for r in results["fast"])
    assert (tmp_path / "bench_check.png").stat().st_size > 1000
    assert "check/grad" in done.stdout


def test_bench_check_help():
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench_check.py"), "--help"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and "--smoke" in done.stdout
