"""The slip corpus (``tests/slip_corpus.py``): every slip caught, named right, none named
wrongly, and no false alarm on the correct gradients, in float32 and float64."""

import sys
from pathlib import Path

import pytest

import mcjax

sys.path.insert(0, str(Path(__file__).parent))
from slip_corpus import CORPUS  # noqa: E402


def run_corpus(dtype: str) -> dict:
    """Check every correct gradient and every slip at ``dtype``; the figures and the misses."""
    cases, tags = [], []
    for name, layer in CORPUS.items():
        args = layer.args(dtype)
        cases.append((layer.f, layer.correct, args, layer.argnums))
        tags.append((name, None, None))
        for slip, (wrong, kinds) in layer.slips.items():
            cases.append((layer.f, wrong, args, layer.argnums))
            tags.append((name, slip, kinds))
    reports = mcjax.check_cases(cases)
    figures = {"slips": 0, "caught": 0, "named right": 0, "named wrongly": 0, "false alarms": 0}
    misses = []
    for (name, slip, kinds), report in zip(tags, reports):
        if slip is None:
            if not report.ok:
                figures["false alarms"] += 1
                misses.append(f"false alarm: {name}: {report!r}")
            continue
        figures["slips"] += 1
        if report.ok:
            misses.append(f"silent (passed): {name}: {slip}")
            continue
        figures["caught"] += 1
        named = [s.kind for s in report.slips]
        if named and named[0] in kinds:
            figures["named right"] += 1
        elif named:
            figures["named wrongly"] += 1
            misses.append(f"named wrongly: {name}: {slip}: {named} ({report.slips[0].sentence})")
        else:
            misses.append(f"not named: {name}: {slip} (expected {sorted(kinds)})")
    return {"figures": figures, "misses": misses}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_slip_corpus(dtype):
    result = run_corpus(dtype)
    f = result["figures"]
    caught, right = f["caught"] / f["slips"], f["named right"] / max(f["caught"], 1)
    print(f"\n{dtype}: {f['slips']} slips over {len(CORPUS)} functions: caught {caught:.1%}, "
          f"named right {right:.1%} of those caught, named wrongly {f['named wrongly']}, "
          f"false alarms {f['false alarms']}")
    print("\n".join(result["misses"]))
    assert f["slips"] >= 60 and len(CORPUS) >= 12
    assert f["false alarms"] == 0, result["misses"]
    assert caught >= 0.95, result["misses"]
    assert f["named wrongly"] == 0, result["misses"]
    assert right >= 0.90, result["misses"]
