"""derive and the checker on JAX's own gradient-test functions (``_jax_functions.py``).

For every function, in float32 and float64, at ``--seeds`` random points (and at its kinks
where it has them):

- **derive**: ``mcjax.derive(f)`` must not crash, its dense form must equal ``jax.jacfwd``
  (to the checker's float64 / float32 rounding of ``jacfwd`` itself), and it must hold no
  opaque block except for a matrix decomposition;
- **check, right derivative**: ``mcjax.check(f, jax.jacfwd(f), ...)`` must pass (a failure is a
  false alarm) and not crash;
- **check, planted slips**: the same derivative times 1.1, with its sign flipped, with one
  entry moved by half the Jacobian's scale, and transposed (where square and not symmetric):
  each must fail (a pass is a missed slip).  At a kink only the first two are planted (one
  entry moved to another one-sided derivative can be a right answer there).

Writes ``results.json`` (every case's outcome) and ``table.md`` (totals per family) into
``--out``, and prints the table::

    python experiments/jax_corpus.py --out runs/jax_corpus
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # float64 cases; float32 ones are drawn as such

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _jax_functions import CASES, Case  # noqa: E402

import mcjax  # noqa: E402

DTYPES = ("float32", "float64")
SMOKE = ("nn.relu6", "nn.max_pool/tie")


def has_opaque(J) -> bool:
    return isinstance(J, mcjax.Opaque) or any(has_opaque(c) for c in J.children())


def point(case: Case, dtype: str, seed: int) -> tuple:
    return tuple(jnp.asarray(a) for a in case.draw(np.random.default_rng(seed), np.dtype(dtype)))


def run_derive(case: Case, args: tuple, dtype: str) -> str:
    """'ok', 'wrong', 'opaque' or 'crash: ...'."""
    try:
        J = mcjax.derive(case.f, case.argnums)(*args)
        want = jax.jacfwd(case.f, case.argnums)(*args)
    except Exception as e:  # noqa: BLE001 - a crash is what is counted
        return f"crash: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
    tol = mcjax.conventions.tolerance(dtype)
    for got, ref in zip(jax.tree_util.tree_leaves(mcjax.densify(J)), jax.tree_util.tree_leaves(want)):
        got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
        scale = max(1.0, float(np.nanmax(np.abs(ref), initial=0.0)))
        if not np.allclose(got, ref, rtol=tol.rtol * 10, atol=tol.rtol * 10 * scale,
                           equal_nan=True):
            return "wrong"
    blocks = jax.tree_util.tree_leaves(J, is_leaf=lambda j: isinstance(j, mcjax.Jacobian))
    if not case.decomposition and any(has_opaque(b) for b in blocks):
        return "opaque"
    return "ok"


def slips(case: Case, jac) -> dict:
    """The planted slips: name -> a wrong derivative (None where it is no slip here)."""
    J = np.asarray(jac)
    planted = {"times 1.1": lambda *a: 1.1 * jac, "sign": lambda *a: -jac}
    if not case.kink:
        flat = np.abs(J).reshape(-1)
        at = int(np.argmax(flat))
        moved = J.reshape(-1).copy()
        moved[at] += 0.5 * max(flat[at], 1e-3)
        planted["one entry"] = lambda *a, m=moved.reshape(J.shape): jnp.asarray(m, jac.dtype)
        if J.ndim == 2 and J.shape[0] == J.shape[1] and not np.allclose(J, J.T):
            planted["transposed"] = lambda *a: jac.T
    if not np.abs(J).max() > 0:
        planted.pop("times 1.1")
        planted.pop("sign")
    return planted


def run_check(case: Case, args: tuple) -> tuple[str, dict]:
    """(verdict on the right derivative, {slip: caught?})."""
    try:
        jac = jax.jacfwd(case.f, case.argnums)(*args)
        right = mcjax.check(case.f, lambda *a: jac, *args, argnums=case.argnums)
        verdict = "ok" if right.ok else "false alarm"
        caught = {}
        for name, wrong in slips(case, jac).items():
            caught[name] = not mcjax.check(case.f, wrong, *args, argnums=case.argnums).ok
    except Exception as e:  # noqa: BLE001 - a crash is what is counted
        return f"crash: {type(e).__name__}: {traceback.format_exception_only(e)[-1][:160]}", {}
    return verdict, caught


def main(argv=None) -> int:
    p = _common.parser(__doc__.splitlines()[0], "jax_corpus")
    p.add_argument("--seeds", type=int, default=2, help="random points per function and dtype "
                   "(kink points: one; default 2)")
    args = p.parse_args(argv)
    cases = [c for c in CASES if c.name in SMOKE] if args.smoke else CASES
    seeds = [args.seed] if args.smoke else [args.seed + k for k in range(args.seeds)]
    rows, start = [], time.perf_counter()
    for case in cases:
        for dtype in DTYPES:
            for seed in seeds[:1] if case.kink else seeds:
                x = point(case, dtype, seed)
                derive = run_derive(case, x, dtype)
                check, caught = run_check(case, x)
                rows.append({"case": case.name, "family": case.family, "dtype": dtype,
                             "seed": seed, "kink": case.kink, "derive": derive,
                             "check": check, "slips": caught})
                if derive != "ok" or check != "ok" or not all(caught.values()):
                    print(f"  {case.name} {dtype} seed {seed}: derive {derive}, check {check}, "
                          f"missed {[s for s, c in caught.items() if not c]}")
    seconds = time.perf_counter() - start
    totals = _totals(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"command": "python experiments/jax_corpus.py " + " ".join(argv or sys.argv[1:]),
               "machine": _common.machine(), "seconds": seconds, "seed": args.seed,
               "functions": len(cases), "totals": totals, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    table = _table(rows, totals)
    (args.out / "table.md").write_text(table)
    print(table)
    print(f"{len(rows)} points of {len(cases)} functions in {seconds:.0f} s")
    return 0 if totals["problems"] == 0 else 1


def _totals(rows) -> dict:
    derive = Counter(r["derive"].split(":")[0] for r in rows)
    check = Counter(r["check"].split(":")[0] for r in rows)
    planted = sum(len(r["slips"]) for r in rows)
    caught = sum(sum(r["slips"].values()) for r in rows)
    problems = (sum(v for k, v in derive.items() if k != "ok")
                + sum(v for k, v in check.items() if k != "ok") + planted - caught)
    return {"points": len(rows), "derive": dict(derive), "check": dict(check),
            "slips planted": planted, "slips caught": caught, "problems": problems}


def _table(rows, totals) -> str:
    by_family = defaultdict(list)
    for r in rows:
        by_family[r["family"]].append(r)
    lines = ["| family | points | derive right & structured | derive wrong / crash / opaque "
             "| false alarms | check crashes | slips caught |",
             "|---|---|---|---|---|---|---|"]
    for family, group in sorted(by_family.items()):
        d = Counter(r["derive"].split(":")[0] for r in group)
        c = Counter(r["check"].split(":")[0] for r in group)
        planted = sum(len(r["slips"]) for r in group)
        caught = sum(sum(r["slips"].values()) for r in group)
        lines.append(f"| {family} | {len(group)} | {d['ok']} | {d['wrong']} / {d['crash']} / "
                     f"{d['opaque']} | {c['false alarm']} | {c['crash']} | {caught} of {planted} |")
    lines.append(f"| **all** | {totals['points']} | {totals['derive'].get('ok', 0)} | "
                 f"{totals['derive'].get('wrong', 0)} / {totals['derive'].get('crash', 0)} / "
                 f"{totals['derive'].get('opaque', 0)} | {totals['check'].get('false alarm', 0)} "
                 f"| {totals['check'].get('crash', 0)} | {totals['slips caught']} of "
                 f"{totals['slips planted']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
