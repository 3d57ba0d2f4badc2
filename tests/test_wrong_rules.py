"""The cross-check must catch deliberately wrong rules, in the API and in `mcjax verify`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mcjax
from mcjax.conventions import DTYPES

sys.path.insert(0, str(Path(__file__).parent / "data"))
import wrong_rules  # noqa: E402

REGISTRY = mcjax.registry.Registry()
wrong_rules.register(REGISTRY)
PLUGIN = Path(__file__).parent / "data" / "wrong_rules_plugin.py"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(wrong_rules.WRONG))
def test_wrong_rule_is_caught(name, dtype):
    results = mcjax.registry.verify(REGISTRY, pattern=name, dtypes=(dtype,))
    assert results, name
    # A rule passes only if every shape case passes.  At size 1 some slips are invisible
    # (a 1x1 matrix is its own transpose), so "caught" means: some case fails.
    assert not all(r.ok for r in results), [(r.shapes, r.comparisons) for r in results]
    # ... and the largest shape case, big enough to show every slip, fails
    largest = max(results, key=lambda r: sum(map(len, r.shapes)) + sum(map(sum, r.shapes)))
    assert not largest.ok


def test_the_suite_covers_the_usual_slips():
    slips = set(wrong_rules.WRONG.values())
    for slip in ("transposed Jacobian", "missing factor 2", "missing ReLU gate",
                 "wrong sign", "dense instead of diagonal", "off by 0.1%"):
        assert slip in slips


def test_verify_command_exits_1_on_wrong_rules():
    run = subprocess.run(
        [sys.executable, "-m", "mcjax", "verify", "--import", str(PLUGIN), "-k", "wrong.*",
         "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 1, run.stderr
    rows = json.loads(run.stdout)
    assert {row["name"] for row in rows} == set(wrong_rules.WRONG)
    assert not any(row["ok"] for row in rows)
