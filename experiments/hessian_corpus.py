"""mcjax.hessian on JAX's own gradient-test functions (``_jax_functions.py``), against jax.hessian.

Every corpus function ``f`` is made a scalar, $s(x) = \\sum c \\odot f(x) + \\frac{1}{2}
\\sum f(x)^2$ with a fixed random $c$ (so that both $f$'s own second derivative and
$J^\\top J$ take part), and, in float32 and float64 at one random point (its kink where it has
one; and, for a function of several floating arguments, once more with respect to all of
them, ``argnums=(0, 1, ...)``), ``H = mcjax.hessian(s, argnums)(*args)`` is compared with
``jax.hessian`` of the same $s$ (``jax.jacfwd`` twice where JAX's reverse mode fails on it):
``H.dense()``, ``H.hvp(v)`` and ``H.solve(b, damping)`` (damping $1 + \\rho$, $\\rho$ the
reference's spectral radius, so the damped system is well conditioned).  Each point is
counted as one of

- **structured**: a structure was found and all three agree (the table says how many of
  them are ``Dense``, the symmetric part of a derived dense second derivative);
- **fallback**: the named Hessian-vector-product fallback (``HessianVectorProducts``) and all
  three agree;
- **refused**: one clear sentence (an error whose message names ``mcjax.``), where JAX itself
  has no second derivative either;
- **wrong**: a disagreement with ``jax.hessian``, or a refusal where JAX has an answer;
- **crash**: any other exception.

A point runs under a time limit (``--timeout`` seconds, counted as **timeout**).  Writes
``results.json`` and ``table.md`` into ``--out`` and prints the table::

    python experiments/hessian_corpus.py --out runs/hessian_corpus
"""

from __future__ import annotations

import json
import signal
import sys
import time
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
SMOKE = {"nn.softmax": "float32", "lax.pad_value": "float64", "lax.igamma/0": "float32"}
"""The smoke run: a structure, the forward-over-forward fallback and a refusal, one dtype each."""
OUTCOMES = ("structured", "fallback", "refused", "wrong", "crash", "timeout")


def point(case: Case, dtype: str, seed: int) -> tuple:
    return tuple(jnp.asarray(a) for a in case.draw(np.random.default_rng(seed), np.dtype(dtype)))


def scalarized(case: Case, args: tuple, seed: int):
    """``s(*args) = Σ c ⊙ f(*args) + ½ Σ f(*args)²``, ``c`` drawn once per case."""
    out = jax.eval_shape(case.f, *args)
    rng = np.random.default_rng(seed + 1)
    weights = [jnp.asarray(rng.standard_normal(o.shape), o.dtype)
               for o in jax.tree_util.tree_leaves(out)]

    def s(*a):
        leaves = jax.tree_util.tree_leaves(case.f(*a))
        return sum(jnp.sum(c * o) + 0.5 * jnp.sum(o * o) for c, o in zip(weights, leaves))

    return s


def _agree(got, want, dtype: str) -> bool:
    tol = mcjax.conventions.tolerance(dtype)
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(1.0, float(np.nanmax(np.abs(want), initial=0.0)))
    return got.shape == want.shape and bool(np.allclose(
        got, want, rtol=10 * tol.rtol, atol=10 * tol.rtol * scale, equal_nan=True))


def reference(s, argnums, args: tuple):
    """``jax.hessian`` of ``s`` as an ``(n, n)`` float64 NumPy matrix (forward over forward
    where JAX's reverse mode fails on ``s``; its blocks in ``argnums``' order where that is a
    tuple), or the error JAX raises."""
    try:
        H = jax.hessian(s, argnums)(*args)
    except Exception:  # noqa: BLE001 - JAX's reverse mode fails (lax.pad's padding value)
        try:
            H = jax.jacfwd(jax.jacfwd(s, argnums), argnums)(*args)
        except Exception as e:  # noqa: BLE001 - JAX has no second derivative: a finding
            return e
    if isinstance(argnums, int):
        n = int(np.prod(jnp.shape(args[argnums])))
        return np.asarray(H, np.float64).reshape(n, n)
    sizes = [int(np.prod(jnp.shape(args[i]))) for i in argnums]
    return np.block([[np.asarray(H[i][j], np.float64).reshape(sizes[i], sizes[j])
                      for j in range(len(argnums))] for i in range(len(argnums))])


def all_arguments(case: Case, dtype: str, seed: int) -> tuple[int, ...] | None:
    """``(0, 1, ...)`` where ``case`` has several arguments, all floating (a tuple
    ``argnums``: the arguments interact), else None."""
    args = point(case, dtype, seed)
    floating = all(jnp.issubdtype(a.dtype, jnp.floating) for a in args)
    return tuple(range(len(args))) if len(args) > 1 and floating else None


def run_point(case: Case, dtype: str, seed: int, argnums=None) -> tuple[str, str]:
    """``(outcome, detail)`` of one point (with respect to ``case.argnums``, or ``argnums``)."""
    argnums = case.argnums if argnums is None else argnums
    args = point(case, dtype, seed)
    s = scalarized(case, args, seed)
    ref = reference(s, argnums, args)
    try:
        H = mcjax.hessian(s, argnums)(*args)
        n = H.shape[0]
        rng = np.random.default_rng(seed + 2)
        v = jnp.asarray(rng.standard_normal(n), dtype)
        ours = [H.dense(), H.hvp(v)]
    except TimeoutError:
        raise
    except Exception as e:  # noqa: BLE001 - a refusal or a crash is what is counted
        first = str(e).splitlines()[0] if str(e) else ""
        clear = first.startswith("mcjax.") and len(str(e).splitlines()) == 1
        if clear and isinstance(ref, Exception):
            return "refused", f"{type(e).__name__}: {first}"
        kind = "wrong" if clear else "crash"  # a refusal where JAX has an answer is wrong
        return kind, f"{type(e).__name__}: {first[:200]}"
    if isinstance(ref, Exception):
        return "wrong", f"jax.hessian raises {type(ref).__name__} but mcjax gave {H.structure}"
    sym = (ref + ref.T) / 2
    damping = 1.0 + float(np.max(np.abs(np.linalg.eigvalsh(sym)), initial=0.0))
    try:
        ours.append(H.solve(v, damping))
    except Exception as e:  # noqa: BLE001
        return "crash", f"solve: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    vv = np.asarray(v, np.float64)
    want = [ref, ref @ vv, np.linalg.solve(ref + damping * np.eye(n), vv)]
    for what, got, w in zip(("dense", "hvp", "solve"), ours, want):
        if not _agree(got, w, dtype):
            err = float(np.max(np.abs(np.asarray(got, np.float64) - w)))
            return "wrong", f"{what} differs by {err:.3g} ({H.structure})"
    fallback = isinstance(H, mcjax.curvature.HessianVectorProducts)
    return ("fallback" if fallback else "structured"), H.structure


class _Timeout:
    """``with _Timeout(seconds):`` raises ``TimeoutError`` inside the block after ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def _raise(self, *_):
        signal.setitimer(signal.ITIMER_REAL, 1.0)  # again in 1 s, should a callback of XLA's
        raise TimeoutError(f"over {self.seconds:g} s")  # (its garbage collector) swallow it

    def __enter__(self):
        if self.seconds > 0 and hasattr(signal, "SIGALRM"):
            signal.signal(signal.SIGALRM, self._raise)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *_):
        if hasattr(signal, "SIGALRM"):
            signal.setitimer(signal.ITIMER_REAL, 0)


def main(argv=None) -> int:
    p = _common.parser(__doc__.splitlines()[0], "hessian_corpus")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds per point before it counts as a timeout (default 60; 0: none)")
    args = p.parse_args(argv)
    cases = [c for c in CASES if c.name in SMOKE] if args.smoke else CASES
    rows, start = [], time.perf_counter()
    for case in cases:
        for dtype in (SMOKE[case.name],) if args.smoke else DTYPES:
            both = None if args.smoke else all_arguments(case, dtype, args.seed)
            for argnums in (case.argnums, both) if both else (case.argnums,):
                tic = time.perf_counter()
                try:
                    with _Timeout(args.timeout):
                        outcome, detail = run_point(case, dtype, args.seed, argnums)
                except TimeoutError as e:
                    outcome, detail = "timeout", str(e)
                rows.append({"case": case.name, "family": case.family, "dtype": dtype,
                             "argnums": argnums, "outcome": outcome, "detail": detail,
                             "seconds": round(time.perf_counter() - tic, 3)})
                if outcome not in ("structured", "fallback"):
                    print(f"  {case.name} {dtype} argnums={argnums}: {outcome}: {detail}",
                          flush=True)
    seconds = time.perf_counter() - start
    totals = dict(Counter(r["outcome"] for r in rows))
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"command": "python experiments/hessian_corpus.py " + " ".join(argv or sys.argv[1:]),
               "machine": _common.machine(), "seconds": seconds, "seed": args.seed,
               "functions": len(cases), "totals": totals, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    table = _table(rows)
    (args.out / "table.md").write_text(table)
    print(table)
    print(f"{len(rows)} points of {len(cases)} functions in {seconds:.0f} s")
    bad = sum(totals.get(k, 0) for k in ("wrong", "crash", "timeout"))
    return 0 if bad == 0 else 1


def _table(rows) -> str:
    by_family = defaultdict(list)
    for r in rows:
        by_family[r["family"]].append(r)
    head = ("| family | points | structured (of them dense) | " + " | ".join(OUTCOMES[1:])
            + " |")
    lines = [head, "|---" * (len(OUTCOMES) + 2) + "|"]
    for family, group in [*sorted(by_family.items()), ("**all**", rows)]:
        c = Counter(r["outcome"] for r in group)
        dense = sum(r["outcome"] == "structured" and r["detail"].startswith("dense:")
                    for r in group)
        lines.append(f"| {family} | {len(group)} | {c['structured']} ({dense}) | "
                     + " | ".join(str(c[k]) for k in OUTCOMES[1:]) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
