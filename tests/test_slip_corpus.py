"""The slip corpus (``tests/slip_corpus.py``): every slip caught, named right, none named
wrongly, and no false alarm on the correct gradients, in float32 and float64."""

import sys
from pathlib import Path

import pytest

import mcjax

sys.path.insert(0, str(Path(__file__).parent))
from slip_corpus import CORPUS, FAST  # noqa: E402


def run_corpus(dtype: str, corpus=CORPUS, mode: str = "full") -> dict:
    """Check every correct gradient and every slip at ``dtype``; the figures and the misses.
    Full mode checks them all in one call (the references computed once per function)."""
    cases, tags = [], []
    for name, layer in corpus.items():
        args = layer.args(dtype)
        cases.append((layer.f, layer.correct, args, layer.argnums))
        tags.append((name, None, None))
        for slip, (wrong, kinds) in layer.slips.items():
            cases.append((layer.f, wrong, args, layer.argnums))
            tags.append((name, slip, kinds))
    reports = mcjax.check_cases(cases) if mode == "full" else [
        mcjax.check(f, d, *args, argnums=argnums, mode=mode) for f, d, args, argnums in cases]
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
    judge(run_corpus(dtype), dtype, len(CORPUS), at_least=60)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_slip_corpus(dtype):
    if not FAST:
        pytest.skip("no fast-mode slips in the corpus yet (slip_corpus.FAST)")
    judge(run_corpus(dtype, FAST, "fast"), f"{dtype}, fast mode", len(FAST), at_least=1)


def judge(result: dict, what: str, functions: int, at_least: int):
    f = result["figures"]
    caught, right = f["caught"] / f["slips"], f["named right"] / max(f["caught"], 1)
    print(f"\n{what}: {f['slips']} slips over {functions} functions: caught {caught:.1%}, "
          f"named right {right:.1%} of those caught, named wrongly {f['named wrongly']}, "
          f"false alarms {f['false alarms']}")
    print("\n".join(result["misses"]))
    assert f["slips"] >= at_least and (functions >= 12 or at_least < 60)
    assert f["false alarms"] == 0, result["misses"]
    assert caught >= 0.95, result["misses"]
    assert f["named wrongly"] == 0, result["misses"]
    assert right >= 0.90, result["misses"]
