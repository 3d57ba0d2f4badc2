"""experiments/_common.py: the one timing harness every benchmark uses.

Fake variants record how they are called, so that the protocol (an untimed call before every
sample, interleaved rounds in a new order each round, slow variants in the first rounds only)
is checked without timing anything real."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import _common  # noqa: E402


def recorder(log: list, name: str, seconds: float = 0.0):
    def run(n: int) -> None:
        log.append((name, n))
        time.sleep(seconds * n)
    return run


def test_every_sample_follows_an_untimed_call_and_rounds_interleave():
    log: list = []
    names = [f"v{i}" for i in range(4)]
    results = _common.measure({name: recorder(log, name) for name in names}, rounds=6,
                              sample_seconds=0.0, calls_per_sample={"v0": 3})
    calibration, rounds = log[:4 * len(names)], log[4 * len(names):]
    assert calibration == [(name, 1) for name in names for _ in range(4)]
    assert len(rounds) == 2 * 6 * len(names)
    samples = list(zip(rounds[::2], rounds[1::2]))
    for untimed, timed in samples:
        assert untimed == (timed[0], 1)  # the untimed call, then the sample, of one variant
        assert timed[1] == (3 if timed[0] == "v0" else 1)
    orders = [tuple(s[1][0] for s in samples[i:i + len(names)])
              for i in range(0, len(samples), len(names))]
    assert all(sorted(order) == names for order in orders)  # every variant in every round
    assert len(set(orders)) > 1  # ... in a new order
    for name in names:
        assert results[name]["rounds"] == len(results[name]["samples_s"]) == 6
        assert results[name]["median_s"] >= results[name]["min_s"] > 0


def test_a_slow_variant_takes_part_in_the_first_rounds_only():
    log: list = []
    results = _common.measure({"fast": recorder(log, "fast"),
                               "slow": recorder(log, "slow", 0.01)},
                              rounds=5, sample_seconds=0.0, slow_s=0.005, slow_rounds=2)
    assert results["fast"]["rounds"] == 5 and results["slow"]["rounds"] == 2
    # the paired ratio uses the rounds both took part in
    assert _common.paired_ratio(results, "slow", "fast") > 1


def test_paired_ratio_divides_within_a_round():
    # a load that doubles every time from round to round cancels out of the paired ratio
    results = {"a": {"samples_s": [3.0, 6.0, 12.0]}, "b": {"samples_s": [1.0, 2.0, 4.0]},
               "c": {"samples_s": [2.0, 8.0, 8.0]}}
    assert _common.paired_ratio(results, "a", "b") == pytest.approx(3.0)
    # several variants: the slowest of them in each round
    assert _common.paired_ratio(results, ["a", "c"], "b") == pytest.approx(3.0)
    assert _common.paired_ratio(results, ["c"], "b") == pytest.approx(2.0)


def test_machine_is_one_description():
    m = _common.machine()
    assert {"cpu", "cores", "platform", "python", "jax", "device", "load_average"} <= set(m)
    assert m["cores"] >= 1
    assert m["cpu"] in _common.describe_machine(m)


def test_out_under_a_file_is_refused_before_the_experiment_runs(tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    parser = _common.parser("an experiment", "neuron")
    assert parser.parse_args(["--out", str(tmp_path / "new" / "runs")]).out == \
        tmp_path / "new" / "runs"
    for out in (tmp_path / "a-file", tmp_path / "a-file" / "runs"):
        with pytest.raises(SystemExit) as refused:
            parser.parse_args(["--out", str(out)])
        assert refused.value.code == 2
        assert f"argument --out: {out}: {tmp_path / 'a-file'} is a file; expected a folder" in \
            capsys.readouterr().err
