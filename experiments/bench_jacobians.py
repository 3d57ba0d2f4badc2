"""Structured Jacobians against dense autodiff: time and memory, n = 64 ... 4096.

Parr & Howard's observation (§4.2-§4.4) is that the Jacobians of deep learning are structured.
For each case below, the Jacobian is computed

- **structured**: the registry's hand-derived rule (``mcjax.derivative(rule, wrt)``), which
  returns a :class:`mcjax.Jacobian` (``Diagonal``, ``Fill``, ``Kronecker`` ...);
- **dense**: the same rule followed by ``.dense()``, the numerator-layout array;
- **jacfwd** / **jacrev**: ``jax.jacfwd`` / ``jax.jacrev`` of the forward function;

and a Jacobian-vector product ``J v`` (and ``u^T J``) is taken through the structured form
(the rule then ``.jvp`` / ``.vjp``) against ``jax.jvp`` / ``jax.vjp``.

Time: the experiments' one harness (``_common.measure``).  For each case and size, the
methods are ``jax.jit``-compiled, then timed in interleaved rounds (``--rounds``, the order
shuffled every round), each sample after an untimed call and long enough to last
``--sample-seconds``, with ``jax.block_until_ready`` on every result; the median over rounds
is reported per call, and ratios are the median over rounds of the ratio within a round.  The
cost of calling an empty jitted function (the dispatch floor) is measured too.

Memory: XLA's own account of the compiled program, ``compiled.memory_analysis()``:
``output_size_in_bytes + temp_size_in_bytes``, the memory the program allocates on top of its
arguments (temporaries share one buffer, so this bounds its peak); and the bytes of the arrays
it returns.  A variant whose dense Jacobian or compiled program would exceed ``--max-bytes``
is not run: it is recorded as skipped, with the reason and the would-be size.

Writes ``results.json``, ``time.png`` and ``memory.png`` (log-log against n) and ``table.md``
into ``--out``, and prints the table.  Run::

    python experiments/bench_jacobians.py --out runs/bench_jacobians
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mcjax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


@dataclass(frozen=True)
class Case:
    """One Jacobian to compute: a registered rule, the argument, what its structure is."""

    key: str
    rule: str
    wrt: str
    label: str

    def args(self, n: int, m: int, dtype, seed: int) -> tuple:
        """The rule's own sampler (it keeps ReLU points off the kink) at sizes n, m."""
        return mcjax.registry.REGISTRY.get(self.rule).example(seed, {"n": n, "m": m}, dtype)


CASES = (
    Case("relu", "relu", "x", "relu(x): diag(1[x > 0])"),
    Case("multiply", "multiply", "x", "x * y: diag(y)"),
    Case("add_scalar_x", "add_scalar", "x", "x + z wrt x: I"),
    Case("add_scalar_z", "add_scalar", "z", "x + z wrt z: column of ones"),
    Case("sum_reduction", "sum_reduction", "x", "sum(x): row of ones"),
    Case("affine_x", "affine", "x", "W x + b wrt x: W"),
    Case("affine_W", "affine", "W", "W x + b wrt W: I_m (x) x^T"),
    Case("neuron", "neuron", "w", "max(0, w.x + b) wrt w: 1[z > 0] x^T"),
)

JACOBIAN_METHODS = ("structured", "dense", "jacfwd", "jacrev")
PRODUCT_METHODS = ("jvp_structured", "jvp_jax", "vjp_structured", "vjp_jax")
METHODS = JACOBIAN_METHODS + PRODUCT_METHODS
# methods whose result is the whole dense Jacobian: skipped where that cannot fit
DENSE_METHODS = ("dense", "jacfwd", "jacrev")


def variants(case: Case, args: tuple) -> dict[str, tuple[Callable, tuple]]:
    """Each method as (function to jit, its arguments)."""
    rule = mcjax.registry.REGISTRY.get(case.rule)
    i = rule.arg_index(case.wrt)
    derivative = mcjax.derivative(case.rule, case.wrt)

    def f(a, *rest):  # the forward function of argument i only
        return rule(*rest[:i], a, *rest[i:])

    rest = args[:i] + args[i + 1 :]
    out = jax.eval_shape(rule, *args)
    rng = np.random.default_rng(1)
    v = jnp.asarray(rng.standard_normal(np.shape(args[i])), args[i].dtype)
    u = jnp.asarray(rng.standard_normal(out.shape), out.dtype)
    return {
        "structured": (derivative, args),
        "dense": (lambda *a: derivative(*a).dense(), args),
        "jacfwd": (jax.jacfwd(f), (args[i], *rest)),
        "jacrev": (jax.jacrev(f), (args[i], *rest)),
        "jvp_structured": (lambda v, *a: derivative(*a).jvp(v), (v, *args)),
        "jvp_jax": (lambda v, a, *r: jax.jvp(lambda a: f(a, *r), (a,), (v,))[1],
                    (v, args[i], *rest)),
        "vjp_structured": (lambda u, *a: derivative(*a).vjp(u), (u, *args)),
        "vjp_jax": (lambda u, a, *r: jax.vjp(lambda a: f(a, *r), a)[1](u)[0],
                    (u, args[i], *rest)),
    }


def compile_and_account(fn: Callable, args: tuple, *, max_bytes: int):
    """Compile ``fn`` for ``args`` and read XLA's memory account of the program:
    ``(row, compiled)``, ``compiled`` None where the program would not fit in ``max_bytes``."""
    compiled = jax.jit(fn).lower(*args).compile()
    stats = compiled.memory_analysis()
    row = {
        "output_bytes": int(stats.output_size_in_bytes),
        "temp_bytes": int(stats.temp_size_in_bytes),
    }
    row["program_bytes"] = row["output_bytes"] + row["temp_bytes"]
    if row["program_bytes"] > max_bytes:
        return {**row, "status": "skipped",
                "reason": f"the compiled program needs {fmt_bytes(row['program_bytes'])} "
                          f"(> --max-bytes {fmt_bytes(max_bytes)})"}, None
    result = jax.block_until_ready(compiled(*args))
    row["result_bytes"] = int(sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(result)))
    row["returns"] = type(result).__name__
    return {**row, "status": "ok"}, compiled


fmt_bytes, fmt_time, fmt_ratio = _common.fmt_bytes, _common.fmt_time, _common.fmt_ratio


def run(cases, sizes, *, m: int | None, dtype: str, seed: int, rounds: int,
        sample_seconds: float, max_bytes: int, max_seconds: float, log=print) -> dict:
    rows, floor = [], {}
    too_slow: dict[tuple[str, str], str] = {}
    timing = {"rounds": rounds, "sample_seconds": sample_seconds}
    for n in sizes:
        x = jnp.zeros((n,), dtype)
        floor[n] = _common.measure({"floor": _common.calls(jax.jit(lambda x: x), x)},
                                   **timing)["floor"]["median_s"]
        for case in cases:
            mm = m or n
            args = case.args(n, mm, dtype, seed)
            J = jax.eval_shape(mcjax.derivative(case.rule, case.wrt), *args)
            dense_bytes = math.prod(J.shape) * jnp.dtype(dtype).itemsize
            base = {"case": case.key, "n": n, "m": mm, "jacobian_shape": list(J.shape),
                    "structure": type(J).__name__, "dense_bytes": dense_bytes}
            case_rows, timed = {}, {}
            for method, (fn, fargs) in variants(case, args).items():
                row = case_rows[method] = {**base, "method": method}
                if method in DENSE_METHODS and dense_bytes > max_bytes:
                    row.update(status="skipped", reason=(
                        f"the dense Jacobian {tuple(J.shape)} would take "
                        f"{fmt_bytes(dense_bytes)} (> --max-bytes {fmt_bytes(max_bytes)})"))
                elif (case.key, method) in too_slow:
                    row.update(status="skipped", reason=too_slow[case.key, method])
                else:
                    account, compiled = compile_and_account(fn, fargs, max_bytes=max_bytes)
                    row.update(account)
                    if compiled is not None:
                        timed[method] = _common.calls(compiled, *fargs)
            # the case's methods side by side, round after round: their ratios are paired
            for method, t in _common.measure(timed, **timing).items():
                row = case_rows[method]
                row.update(median_s=t["median_s"], min_s=t["min_s"],
                           calls_per_sample=t["calls_per_sample"], rounds=t["rounds"],
                           samples_s=t["samples_s"])
                if row["median_s"] > max_seconds:
                    too_slow[case.key, method] = (
                        f"took {fmt_time(row['median_s'])} at n = {n} "
                        f"(> --max-seconds {max_seconds:g})")
            for method, row in case_rows.items():
                rows.append(row)
                log(f"n={n:5d} {case.key:14s} {method:15s} "
                    + (fmt_time(row["median_s"]) if row["status"] == "ok" else "skipped"))
    return {"rows": rows, "floor_s": {str(n): s for n, s in floor.items()}}


def lookup(rows, case: str, n: int, method: str) -> dict | None:
    for row in rows:
        if (row["case"], row["n"], row["method"]) == (case, n, method):
            return row
    return None


def ratio(rows, case, n, slow, fast) -> float | None:
    """Time of ``slow`` over time of ``fast``: paired within rounds where the rows hold their
    samples, else (results written before they did) the ratio of the medians."""
    a, b = lookup(rows, case, n, slow), lookup(rows, case, n, fast)
    if not (a and b and a["status"] == b["status"] == "ok"):
        return None
    if "samples_s" in a and "samples_s" in b:
        return _common.paired_ratio({slow: a, fast: b}, slow, fast)
    return a["median_s"] / b["median_s"]


def table(results: dict, n: int) -> str:
    """Two markdown tables of every case at size n: the Jacobian's time and speed-ups; the
    memory of the structured and dense forms and the Jacobian-vector products' times."""
    rows = results["rows"]

    def t(case, method):
        row = lookup(rows, case, n, method)
        return fmt_time(row["median_s"]) if row and row["status"] == "ok" else "skipped"

    def program(case, method):
        row = lookup(rows, case, n, method)
        return fmt_bytes(row["program_bytes"]) if row and "program_bytes" in row else "–"

    def markdown(head, cells):
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for key, case in results["cases"].items():
            first = lookup(rows, key, n, "structured")
            lines.append(f"| {case['label']} | " + " | ".join(cells(key, first)) + " |")
        return "\n".join(lines) + "\n"

    time_table = markdown(
        ("case", "structure", "structured", ".dense()", "jacfwd", "jacrev",
         "jacfwd / structured", "jacrev / structured"),
        lambda key, first: (f"`{first['structure']}`", t(key, "structured"), t(key, "dense"),
                            t(key, "jacfwd"), t(key, "jacrev"),
                            fmt_ratio(ratio(rows, key, n, "jacfwd", "structured")),
                            fmt_ratio(ratio(rows, key, n, "jacrev", "structured"))))
    memory_table = markdown(
        ("case", "structured program", "dense Jacobian", "jacrev program",
         "J v: structured", "J v: jax.jvp", "uᵀ J: structured", "uᵀ J: jax.vjp"),
        lambda key, first: (program(key, "structured"), fmt_bytes(first["dense_bytes"]),
                            program(key, "jacrev"), t(key, "jvp_structured"), t(key, "jvp_jax"),
                            t(key, "vjp_structured"), t(key, "vjp_jax")))
    return time_table + "\n" + memory_table


STYLES = {
    "structured": dict(color="C0", lw=2.5, marker="o"),
    "dense": dict(color="C1", marker="s"),
    "jacfwd": dict(color="C3", marker="^"),
    "jacrev": dict(color="C2", marker="v"),
    "jvp_structured": dict(color="C0", ls="--", marker="."),
    "jvp_jax": dict(color="C7", ls="--", marker="."),
}


def plot(results: dict, path: Path, quantity: str) -> None:
    """One log-log panel per case: ``quantity`` (median_s or program_bytes) against n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5), sharex=True)
    # memory: the Jacobians only (the products' buffers are XLA's scheduling choices)
    methods = STYLES if quantity == "median_s" else JACOBIAN_METHODS
    for ax, (key, case) in zip(axes.flat, results["cases"].items()):
        for method in methods:
            style = STYLES[method]
            pts = [(r["n"], r[quantity]) for r in rows
                   if r["case"] == key and r["method"] == method and r["status"] == "ok"]
            if pts:
                ax.plot(*zip(*pts), label=method.replace("_", " "), **style)
        if quantity == "median_s":
            floor = sorted((int(n), s) for n, s in results["floor_s"].items())
            ax.plot(*zip(*floor), color="k", lw=0.8, ls=":", label="dispatch floor")
        else:  # the size of the dense Jacobian, also where it was too big to build
            dense = [(r["n"], r["dense_bytes"]) for r in rows
                     if r["case"] == key and r["method"] == "structured"]
            ax.plot(*zip(*dense), color="k", lw=0.8, ls=":", label="dense Jacobian size")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(case["label"], fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("n")
    ylabel = ("seconds per call (median)" if quantity == "median_s"
              else "program bytes (output + temp)")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    for ax in axes.flat[len(results["cases"]):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    info = results["machine"]
    fig.suptitle(f"mcjax structured Jacobians vs dense autodiff ({results['dtype']}; "
                 f"{info['cpu']}, {info['cores']} cores; jax {info['jax']})")
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench_jacobians.py",
        description="Time and measure the memory of structured Jacobians (mcjax's rules) "
                    "against their .dense() form and jax.jacfwd / jax.jacrev, and J v through "
                    "the structured form against jax.jvp, for n = 64 ... 4096.")
    p.add_argument("--out", type=_common.out_folder, required=True,
                   help="directory for results.json, "
                   "time.png, memory.png and table.md")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes (4, 8) and two rounds: checks the script, not the speed")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048, 4096])
    p.add_argument("--cases", nargs="+", choices=[c.key for c in CASES],
                   default=[c.key for c in CASES], help="which cases to run (default: all)")
    p.add_argument("--m", type=int, default=None, help="output size of the affine map "
                   "(default: m = n, a square layer)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=0, help="seed of the random arguments (default 0)")
    p.add_argument("--rounds", type=int, default=7,
                   help="interleaved rounds of measurement: timed samples per function")
    p.add_argument("--sample-seconds", type=float, default=0.05,
                   help="about how long one timed sample lasts (calls are repeated)")
    p.add_argument("--max-bytes", type=float, default=2**30,
                   help="skip variants whose dense Jacobian or compiled program exceeds this "
                        "many bytes (default 1 GiB)")
    p.add_argument("--max-seconds", type=float, default=5.0,
                   help="stop timing a method at larger n once one call takes longer")
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.rounds, args.sample_seconds = [4, 8], 2, 0.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "benchmark": "structured Jacobians vs dense autodiff",
        "command": "python experiments/bench_jacobians.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "machine": _common.machine(),
        "dtype": args.dtype,
        "seed": args.seed,
        "sizes": args.sizes,
        "affine_m": args.m or "n",
        "timing": "_common.measure: the methods of a case in --rounds interleaved rounds, an "
                  "untimed call before each sample, jax.block_until_ready on every result; "
                  "median over rounds of seconds per call; ratios paired within a round",
        "memory": "program_bytes = output_size_in_bytes + temp_size_in_bytes of "
                  "jax.jit(f).lower(*args).compile().memory_analysis(); result_bytes = the "
                  "nbytes of the returned arrays",
    }
    cases = [c for c in CASES if c.key in args.cases]
    results.update(run(cases, args.sizes, m=args.m, dtype=args.dtype, seed=args.seed,
                       rounds=args.rounds, sample_seconds=args.sample_seconds,
                       max_bytes=int(args.max_bytes), max_seconds=args.max_seconds,
                       log=(lambda *_: None) if args.smoke else print))
    results["cases"] = {c.key: {"rule": c.rule, "wrt": c.wrt, "label": c.label} for c in cases}
    n = max(args.sizes)
    results["ratios"] = {
        c.key: {str(size): {f"{slow}/structured": ratio(results["rows"], c.key, size, slow,
                                                        "structured")
                            for slow in DENSE_METHODS}
                for size in args.sizes}
        for c in cases
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    md = table(results, n)
    (args.out / "table.md").write_text(md)
    plot(results, args.out / "time.png", "median_s")
    plot(results, args.out / "memory.png", "program_bytes")
    print(f"n = {n}, {args.dtype}, affine m = {args.m or 'n'}:\n{md}")
    print(f"wrote {args.out}/results.json, table.md, time.png, memory.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
