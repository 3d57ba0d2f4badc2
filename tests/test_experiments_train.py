"""The training experiments run in their --smoke size and write what they promise."""

import importlib.util
import json
import sys
from pathlib import Path

import jax
import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(autouse=True)
def as_a_user():
    """The scripts run as a user runs them: with JAX's standard dtype promotion (their optax
    baselines are written for it), not the suite's strict one."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def _load(name: str):
    sys.path.insert(0, str(EXPERIMENTS))
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["neuron", "digits_mlp", "gradients", "bench_train"])
def test_help(name, capsys):
    with pytest.raises(SystemExit) as done:
        _load(name).main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--smoke" in out and "--out" in out


def test_neuron_recovers_the_true_weights(tmp_path, capsys):
    assert _load("neuron").main(["--smoke", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["optimizers"]) == {"sgd", "momentum", "adam"}
    for run in metrics["optimizers"].values():
        assert run["loss_curve"][-1] < run["loss_curve"][0]
    # momentum and SGD get close even in the smoke size; the full run gets all three to ~1e-3
    assert metrics["optimizers"]["momentum"]["w_error"] < 0.05
    assert (tmp_path / "neuron_loss.png").stat().st_size > 0
    assert "max |w - w*|" in capsys.readouterr().out


def test_digits_mlp_reports_accuracy_for_both_gradient_sources(tmp_path):
    pytest.importorskip("sklearn")
    assert _load("digits_mlp").main(["--smoke", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["test_accuracy"]) == {"analytic", "autodiff"}
    assert all(acc > 0.8 for acc in metrics["test_accuracy"].values())
    assert (tmp_path / "digits_mlp.png").stat().st_size > 0


def test_gradients_agree_and_the_control_does_not(tmp_path):
    assert _load("gradients").main(["--smoke", "--out", str(tmp_path)]) == 0
    cases = json.loads((tmp_path / "metrics.json").read_text())["cases"]
    control = cases.pop("control: the MLP rule times 1.001 (wrong)")
    assert all(c["max_relative_difference"] < 1e-12 for c in cases.values())
    assert control["max_relative_difference"] > 1e-4


def test_bench_train_smoke(tmp_path):
    assert _load("bench_train").main(["--smoke", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "results.json").read_text())
    names = set(record["results"])
    for cfg in ("big", "small"):
        for variant in ("mcjax autodiff", "mcjax analytic", "plain JAX", "matmul floor", "NumPy"):
            assert f"{cfg}: {variant}" in names
    assert {"square matmul", "tiny scan: mcjax", "tiny scan: plain JAX"} <= names
    assert all(r["median_s"] > 0 for r in record["results"].values())
    checks = {c["check"]: c for c in record["checks"]}
    assert {"big: analytic / autodiff", "tiny scan: mcjax / plain JAX"} <= set(checks)
    # every variant is measured by its distance from its own matmul floor: required for
    # mcjax's steps on the big MLP, reported for the peers; no "peer / mcjax" target is left
    for grad in ("autodiff", "analytic"):
        assert checks[f"big: mcjax {grad} / matmul floor"]["target"] == "<= 1.05"
    for peer in ("plain JAX", "NumPy"):
        floor = checks[f"big: {peer} / matmul floor"]
        assert floor["target"] == "reported" and floor["ok"] is None
        assert floor["value"] == record["results"][f"big: {peer}"]["vs_floor"] > 0
    assert not [name for name in checks if name.endswith("/ mcjax")]
    assert record["machine"]["cores"] >= 1
    assert (tmp_path / "bench_train.png").stat().st_size > 0
