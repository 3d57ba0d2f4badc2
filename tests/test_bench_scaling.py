"""experiments/bench_scaling.py: --help, and --smoke writes its JSON, its plot and its table."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "bench_scaling.py"


def _run(*args, timeout=300):
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_help_describes_the_options():
    done = _run("--help")
    assert done.returncode == 0
    for option in ("--smoke", "--out", "--seed", "--devices", "--rounds", "--passes"):
        assert option in done.stdout


def test_smoke_run_times_one_two_and_four_devices(tmp_path):
    done = _run("--smoke", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "bench_scaling.png").stat().st_size > 1000
    assert sorted(record["cpu"]) == ["1", "2", "4"]
    for r in record["cpu"].values():
        assert r["step_ms"] > 0 and r["scan_step_ms"] > 0
        assert r["max_param_diff_vs_1"] <= r["bound"]
    # one device needs no all-reduce; several do: the batch really is split
    reduces = {c: r["all_reduces_in_step"] for c, r in record["cpu"].items()}
    assert reduces["1"] == 0 < reduces["4"]
    assert "forced CPU devices" in done.stdout and "wrote" in done.stdout
    # the smoke run goes through the single-accelerator code even on CPU
    accelerator = record["accelerator"]
    assert sorted(accelerator["configs"]) == ["small analytic", "small autodiff"]
    assert accelerator["square_matmul"]["tflops"] > 0
    assert all(0 < c["fraction_of_peak"] for c in accelerator["configs"].values())
