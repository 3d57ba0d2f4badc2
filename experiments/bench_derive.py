"""mcjax.derive against jax.jacfwd, jax.jacrev and asdex: set-up, evaluation, dense, memory.

For each case the Jacobian is produced four ways:

- **derive**: ``mcjax.derive(f)``, a structured Jacobian (it applies ``J v`` and ``uᵀ J``);
- **asdex**: sparse automatic differentiation (``pip install asdex``; timed only when it is
  installed): sparsity detection and colouring, then a BCOO matrix;
- **jacfwd**, **jacrev**: the dense Jacobian from JAX's autodiff.

Reported per case and method:

- *set-up*: derive's trace and structure (``jax.jit(derive(f)).lower(*args)``: the whole
  derivation, abstractly) against asdex's detection and colouring
  (``asdex.jacobian_coloring``); for jacfwd / jacrev their trace (``lower``);
- *to J*: seconds per call of the compiled function that returns a Jacobian ready to apply
  ``J v`` and ``uᵀ J`` (derive's structure, asdex's BCOO, the dense array);
- *to dense*: seconds per call of the compiled function that returns the dense array
  (``J.dense()``, ``BCOO.todense()``); skipped, with the would-be size, above ``--max-bytes``;
- *bytes held*: the bytes of the arrays the Jacobian keeps.

Timing: the experiments' shared harness (``_common.measure``): every method of a case is
compiled first; then ``--rounds`` rounds, each timing every method in a new random order (one
untimed call, then enough calls with ``jax.block_until_ready`` that a sample lasts
``--min-sample`` seconds), and each ratio to derive is the median of the per-round ratios
(``_common.paired_ratio``).  Set-up is timed once, after a warm-up trace of a smaller size,
since it is paid once.

Writes ``results.json``, ``time.png`` and ``table.md`` into ``--out`` and prints the table::

    python experiments/bench_derive.py --out runs/bench_derive
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import fmt_bytes, fmt_time  # noqa: E402

import mcjax  # noqa: E402
from mcjax._program._compile import quick_jit  # noqa: E402

METHODS = ("derive", "asdex", "jacfwd", "jacrev")


# -- the cases -------------------------------------------------------------------------------------
def _layer_norm(x):
    centred = x - jnp.mean(x)
    return centred * jax.lax.rsqrt(jnp.mean(centred**2) + 1e-5)


class Case(NamedTuple):
    key: str
    label: str
    f: Callable
    shapes: Callable[[int, int], tuple]  # (n, m) -> argument shapes
    kind: str  # "elementwise" (target O(n), >= 1000x jacfwd) or "matrix"


CASES = (
    Case("relu", "relu(x)", jax.nn.relu, lambda n, m: ((n,),), "elementwise"),
    Case("mix", "tanh(x) x + sin(x)", lambda x: jnp.tanh(x) * x + jnp.sin(x),
         lambda n, m: ((n,),), "elementwise"),
    Case("layer_W", "relu(W x + b) w.r.t. W", lambda W, x, b: jax.nn.relu(W @ x + b),
         lambda n, m: ((m, n), (n,), (m,)), "matrix"),
    Case("mlp_x", "relu(W₂ relu(W x)) w.r.t. x",
         lambda x, W, W2: jax.nn.relu(W2 @ jax.nn.relu(W @ x)),
         lambda n, m: ((n,), (m, n), (m, m)), "matrix"),
    Case("softmax", "softmax(x)", jax.nn.softmax, lambda n, m: ((n,),), "elementwise"),
    Case("layer_norm", "layer norm(x)", _layer_norm, lambda n, m: ((n,),), "elementwise"),
)


def arguments(case: Case, n: int, m: int, dtype, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.standard_normal(s) / math.sqrt(s[-1] if len(s) > 1 else 1),
                             dtype) for s in case.shapes(n, m))


# -- the methods --------------------------------------------------------------------------------------
def _nbytes(tree) -> int:
    return int(sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(tree)))


def methods(case: Case, args: tuple, asdex) -> dict[str, dict]:
    """Per method: ``setup()`` (seconds), ``to_j`` and ``to_dense`` (functions of args)."""
    f = case.f

    def lowering(fn):
        def setup():
            start = time.perf_counter()
            jax.jit(fn).lower(*args)
            return time.perf_counter() - start

        return setup

    out = {"derive": {"setup": lowering(mcjax.derive(f)), "to_j": mcjax.derive(f),
                      "to_dense": lambda *a: mcjax.derive(f)(*a).dense()},
           "jacfwd": {"setup": lowering(jax.jacfwd(f)), "to_j": jax.jacfwd(f),
                      "to_dense": jax.jacfwd(f)},
           "jacrev": {"setup": lowering(jax.jacrev(f)), "to_j": jax.jacrev(f),
                      "to_dense": jax.jacrev(f)}}
    if asdex is not None:
        holder = {}

        def setup():
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:  # a finding, not an error
                warnings.simplefilter("always", asdex.DenseColoringWarning)
                holder["coloring"] = asdex.jacobian_coloring(f, *args)
            holder["dense_coloring"] = any(issubclass(w.category, asdex.DenseColoringWarning)
                                           for w in caught)
            return time.perf_counter() - start

        def to_j(*a):
            return asdex.jacobian_from_coloring(f, holder["coloring"])(*a)

        out["asdex"] = {"setup": setup, "to_j": to_j, "to_dense": lambda *a: to_j(*a).todense(),
                        "dense_coloring": lambda: holder.get("dense_coloring", False)}
    return out


# -- timing ---------------------------------------------------------------------------------------------
def timed(compiled: dict[str, Callable], args, rounds: int, sample_seconds: float,
          seed: int) -> dict:
    """The shared harness (:func:`_common.measure`): interleaved rounds, ratios to derive
    paired within a round."""
    results = _common.measure({name: _common.calls(fn, *args) for name, fn in compiled.items()},
                              rounds=rounds, sample_seconds=sample_seconds, seed=seed)
    return {name: {"median_s": r["median_s"], "min_s": r["min_s"],
                   "calls_per_sample": r["calls_per_sample"], "rounds": r["rounds"],
                   "ratio_to_derive": _common.paired_ratio(results, name, "derive")}
            for name, r in results.items()}


def dense_bytes(case: Case, args, dtype) -> int:
    out = jax.eval_shape(case.f, *args)
    return math.prod(out.shape) * math.prod(np.shape(args[0])) * jnp.dtype(dtype).itemsize


def run_case(case: Case, n: int, m: int, *, dtype, seed, rounds, min_sample, max_bytes, smoke,
             asdex, log) -> list[dict]:
    args = arguments(case, n, m, dtype, seed)
    jit = quick_jit if smoke else jax.jit
    ms = methods(case, args, asdex)
    size = dense_bytes(case, args, dtype)
    too_big = {}
    if size > max_bytes:  # jacfwd and jacrev only make the dense array
        for name in ("jacfwd", "jacrev"):
            ms.pop(name)
            too_big[name] = (f"the dense Jacobian would take {fmt_bytes(size)} "
                             f"(> --max-bytes {fmt_bytes(max_bytes)})")
    warm = arguments(case, max(4, n // 16), max(2, m // 16), dtype, seed)
    for spec in methods(case, warm, None).values():
        jax.jit(spec["to_j"]).lower(*warm)  # a first trace pays JAX's own warm-up, not ours
    rows = {name: {"case": case.key, "label": case.label, "kind": case.kind, "method": name,
                   "n": n, "m": m, "setup_s": spec["setup"]()} for name, spec in ms.items()}
    to_j = {name: jit(spec["to_j"]) for name, spec in ms.items()}
    for name, fn in to_j.items():
        rows[name]["bytes_held"] = _nbytes(fn(*args))
    for name, t in timed(to_j, args, rounds, min_sample, seed).items():
        rows[name].update({f"to_j_{k}": v for k, v in t.items()})
    if size <= max_bytes:
        to_dense = {name: jit(spec["to_dense"]) for name, spec in ms.items()}
        for name, t in timed(to_dense, args, rounds, min_sample, seed).items():
            rows[name].update({f"to_dense_{k}": v for k, v in t.items()})
    else:
        for row in rows.values():
            row["to_dense_skipped"] = (f"the dense Jacobian would take {fmt_bytes(size)} "
                                       f"(> --max-bytes {fmt_bytes(max_bytes)})")
    skipped = [{"case": case.key, "label": case.label, "kind": case.kind, "method": name, "n": n,
                "m": m, "skipped": reason, "dense_bytes": size} for name, reason in too_big.items()]
    for row in rows.values():
        row["dense_bytes"] = size
        if row["method"] == "asdex":
            row["asdex_dense_coloring"] = ms["asdex"]["dense_coloring"]()
        log(f"  {case.key:10s} {row['method']:7s} set-up {fmt_time(row['setup_s'])}  "
            f"to J {fmt_time(row['to_j_median_s'])}  held {fmt_bytes(row['bytes_held'])}")
    return list(rows.values()) + skipped


# -- output ---------------------------------------------------------------------------------------------
def table(results: dict) -> str:
    head = ("| case | method | set-up | to J (Jv, uᵀJ ready) | vs derive | to dense | "
            "bytes held |\n|---|---|---|---|---|---|---|")
    lines = [head]
    for row in results["rows"]:
        if "skipped" in row:
            lines.append(f"| {row['label']} | {row['method']} | – | not run: {row['skipped']} | "
                         "– | – | – |")
            continue
        ratio = row.get("to_j_ratio_to_derive")
        dense = fmt_time(row.get("to_dense_median_s")) if "to_dense_median_s" in row else "skipped"
        lines.append(f"| {row['label']} | {row['method']} | {fmt_time(row['setup_s'])} | "
                     f"{fmt_time(row['to_j_median_s'])} | "
                     f"{'–' if ratio is None else f'{ratio:.3g}×'} | {dense} | "
                     f"{fmt_bytes(row['bytes_held'])} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> Path:
    plt = _common.pyplot()
    cases = list(dict.fromkeys(r["case"] for r in results["rows"]))
    present = [m for m in METHODS if any(r["method"] == m for r in results["rows"])]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(present)
    for i, method in enumerate(present):
        rows = {r["case"]: r for r in results["rows"] if r["method"] == method and
                "skipped" not in r}
        xs = [k + i * width for k in range(len(cases)) if cases[k] in rows]
        measured = [c for c in cases if c in rows]
        axes[0].bar(xs, [rows[c]["to_j_median_s"] for c in measured], width, label=method)
        axes[1].bar(xs, [max(rows[c]["bytes_held"], 1) for c in measured], width, label=method)
    for ax, title in zip(axes, ("seconds to a Jacobian that applies J v and uᵀ J",
                                "bytes the Jacobian holds")):
        ax.set_yscale("log")
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(cases))], cases, rotation=20)
        ax.set_title(title)
    return _common.save_figure(fig, path, legends=axes)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0], "bench_derive")
    p.add_argument("--n", type=int, default=4096, help="input size (default 4096)")
    p.add_argument("--m", type=int, default=256, help="rows of W (default 256)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--min-sample", type=float, default=0.05, help="seconds per sample")
    p.add_argument("--max-bytes", type=float, default=2**29,
                   help="skip a dense Jacobian above this many bytes (default 512 MiB)")
    p.add_argument("--no-asdex", action="store_true", help="leave asdex out even if installed")
    p.add_argument("--cases", nargs="+", choices=[c.key for c in CASES], default=None)
    args = p.parse_args(argv)
    n, m, rounds, min_sample = args.n, args.m, args.rounds, args.min_sample
    if args.smoke:
        n, m, rounds, min_sample = 64, 8, 2, 0.002
    try:
        import asdex
    except ImportError:
        asdex = None
    asdex = None if args.no_asdex else asdex
    dtype = "float32"
    rows = []
    for case in CASES:
        if args.cases is None or case.key in args.cases:
            rows += run_case(case, n, m, dtype=dtype, seed=args.seed, rounds=rounds,
                             min_sample=min_sample, max_bytes=int(args.max_bytes),
                             smoke=args.smoke, asdex=asdex, log=print)
    results = {"seed": args.seed, "dtype": dtype, "n": n, "m": m, "rounds": rounds,
               "command": "python experiments/bench_derive.py " + " ".join(argv or sys.argv[1:]),
               "machine": {**_common.machine(), "shared": "yes: other jobs ran on its cores"},
               "asdex": _version("asdex") if asdex else None,
               "rows": rows}
    _common.write_json(args.out, "results.json", results)
    plot(results, args.out / "time.png")
    (args.out / "table.md").write_text(table(results))
    _common.print_table(
        f"mcjax.derive against jacfwd, jacrev, asdex (n = {n}, m = {m}, {dtype})",
        ["case", "method", "set-up", "to J", "vs derive", "to dense", "bytes held"],
        [[r["label"], r["method"], "–", "not run (too big)", "–", "–", "–"] if "skipped" in r
         else [r["label"], r["method"], fmt_time(r["setup_s"]), fmt_time(r["to_j_median_s"]),
               f"{r['to_j_ratio_to_derive']:.3g}×", fmt_time(r.get("to_dense_median_s")),
               fmt_bytes(r["bytes_held"])] for r in rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
