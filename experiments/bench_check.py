"""Benchmark mcjax.check: fast mode against one gradient evaluation on a 1M-parameter MLP, and
full mode against jax.test_util.check_grads and torch.autograd.gradcheck (when installed).

    python experiments/bench_check.py --out results/bench_check        # the full size
    python experiments/bench_check.py --smoke --out /tmp/bench          # seconds, for the tests
    python experiments/bench_check.py --calls-only --out results/bench_check_calls  # a minute
    python experiments/bench_check.py --fast-only --out results/bench_check_fast    # fast mode only

Fast mode's cost is given three ways, each as a ratio to one jax.grad of the same loss:

- wall time of the compiled check (``_fast._program`` as a passing check of a scalar ``f`` runs
  it: ``x`` alone, FAST_DIRECTIONS directions; the point near ``x`` runs only when ``x`` is
  special or fails) and of the whole ``mcjax.check`` call (its fixed cost beyond the compiled
  program, tracing and keying ``f`` and the derivative, is given in ms), measured with the
  gradient by the experiments' one harness (``_common.measure``: interleaved rounds, an
  untimed call before each sample, ``block_until_ready`` on every result); the ratio is the
  median over rounds of the ratio within a round, so that a busy machine slows both alike;
- FLOPs and bytes accessed, from XLA's cost analysis of the two compiled programs:
  deterministic, whatever the machine's load;
- working memory (``memory_analysis().temp_size_in_bytes``) over the arguments' bytes.

The first check of a new small function and a repeat of it are timed against
``jax.test_util.check_grads``: cold (a fresh process) and warm (a process that has checked
other functions), see :func:`bench_calls`.

Writes results.json and bench_check.png into --out and prints a table.  --smoke runs tiny
sizes, float32 only, and leaves PyTorch out: it only shows that the script runs (the tests
show fast mode on the full-size MLP in both dtypes).  Full mode's tools are timed the same
way, interleaved with each other.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import mcjax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from mcjax._check import _fast  # noqa: E402
from mcjax._check._problem import prepare  # noqa: E402
from mcjax._core._tolerance import FAST_DIRECTIONS, FAST_POINTS  # noqa: E402
from mcjax._program._compile import run_compiled  # noqa: E402


def mlp_problem(sizes, batch, dtype, seed):
    """He-initialised weights (as :func:`mcjax.mlp_init` draws them), small random biases and a
    batch: the arguments of :func:`mcjax.mlp_loss`.  NumPy draws them: ``jax.random`` outside
    ``jit`` compiles every operation, seconds on a CPU."""
    rng = np.random.default_rng(seed)
    params = [{"W": jnp.asarray(rng.standard_normal((m, n)) * np.sqrt(2 / n), dtype),
               "b": jnp.asarray(0.1 * rng.standard_normal(m), dtype)}
              for n, m in zip(sizes[:-1], sizes[1:])]
    X = jnp.asarray(rng.standard_normal((batch, sizes[0])), dtype)
    return params, X, jnp.arange(batch) % sizes[-1]


def check_grads_verdict(loss, params):
    from jax.test_util import check_grads

    try:  # jitted: the same verdict as op by op, in a fraction of the time
        check_grads(jax.jit(loss), (params,), order=1, modes=("rev",))
        return "pass"
    except AssertionError:
        return "FAIL (false alarm)"


def bench_fast(sizes, batch, dtype, seed, timing):
    params, X, Y = mlp_problem(sizes, batch, dtype, seed)
    p = prepare(mcjax.mlp_loss, mcjax.mlp_backprop, (params, X, Y), 0, "numerator")
    s = jnp.asarray(seed, jnp.uint32)
    # compiled once each: the executables are timed and their costs read off
    grad = jax.jit(jax.grad(mcjax.mlp_loss)).lower(params, X, Y).compile()
    backprop = jax.jit(mcjax.mlp_backprop).lower(params, X, Y).compile()
    which = _fast._which(p, None)[0]  # the points a passing check runs
    program = run_compiled(_fast._program, (p.static, p.x_spec, p.out_spec, which,
                                            FAST_DIRECTIONS, ()),
                           p.static.consts(), p.dynamic, s, call=False)
    timed = _common.measure({
        "grad": _common.calls(grad, params, X, Y),
        "backprop": _common.calls(backprop, params, X, Y),
        "check_program": _common.calls(program, p.static.consts(), p.dynamic, s),
        "check_call": _common.calls(lambda: mcjax.check(mcjax.mlp_loss, mcjax.mlp_backprop,
                                                        params, X, Y, mode="fast").ok),
    }, **timing)
    seconds = lambda name: timed[name]["median_s"]  # noqa: E731
    ratio = lambda name: _common.paired_ratio(timed, name, "grad")  # noqa: E731
    cost = lambda key: program.cost_analysis()[key] / grad.cost_analysis()[key]  # noqa: E731
    argument_bytes = sum(a.nbytes for a in jax.tree_util.tree_leaves((params, X)))
    ok = mcjax.check(mcjax.mlp_loss, mcjax.mlp_backprop, params, X, Y, mode="fast").ok
    return {"dtype": dtype, "parameters": int(p.x_spec.size),
            "points": len(which), "directions": FAST_DIRECTIONS,
            "grad_s": seconds("grad"), "backprop_s": seconds("backprop"),
            "check_program_s": seconds("check_program"), "check_call_s": seconds("check_call"),
            "ratio_program_to_grad": ratio("check_program"),
            "ratio_call_to_grad": ratio("check_call"),
            "call_overhead_ms": 1e3 * (seconds("check_call") - seconds("check_program")), "ratio_backprop_to_grad": ratio("backprop"),
            "flops_ratio": cost("flops"), "bytes_ratio": cost("bytes accessed"),
            "temp_memory_over_arguments": program.memory_analysis().temp_size_in_bytes / argument_bytes,
            "mcjax_check": "pass" if ok else "FAIL",
            "check_grads": check_grads_verdict(lambda q: mcjax.mlp_loss(q, X, Y), params)}


def bench_full(n, timing, with_torch):
    """A small function f: R^n -> R^n (tanh of an affine map), float64, every tool on it."""
    from jax.test_util import check_grads

    rng = np.random.default_rng(0)
    W = rng.standard_normal((n, n)) / np.sqrt(n)
    x = rng.standard_normal(n)
    Wj, xj = jnp.asarray(W), jnp.asarray(x)
    f = lambda x: jnp.tanh(Wj @ x)  # noqa: E731
    df = lambda x: (1 - f(x) ** 2)[:, None] * Wj  # noqa: E731
    tools = {"mcjax_check_full_s": _common.calls(lambda: mcjax.check(f, df, xj, mode="full").ok),
             "jax_check_grads_s": _common.calls(lambda: check_grads(f, (xj,), order=1) or 0)}
    if with_torch and _common.torch_available():
        import torch

        Wt = torch.tensor(W)
        xt = torch.tensor(x, requires_grad=True)
        tools["torch_gradcheck_s"] = _common.calls(
            lambda: torch.autograd.gradcheck(lambda v: torch.tanh(Wt @ v), (xt,)) or 0)
    timed = _common.measure(tools, **timing)
    return {"n": n, **{name: timed[name]["median_s"] if name in timed else None
                       for name in ("mcjax_check_full_s", "jax_check_grads_s", "torch_gradcheck_s")}}


_COLD = """
import sys, time
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import mcjax
from jax.test_util import check_grads
rng = np.random.default_rng(0)
W, x = jnp.asarray(rng.standard_normal((4, 4)) / 2), jnp.asarray(rng.standard_normal(4))
f = lambda x: jnp.tanh(W @ x)
df = lambda x: (1 - f(x) ** 2)[:, None] * W
tic = time.perf_counter()
if sys.argv[1] == "mcjax":
    assert mcjax.check(f, df, x).ok
else:
    check_grads(f, (x,), order=1)
print(time.perf_counter() - tic)
"""


def bench_calls(repeats: int, timing) -> dict:
    """The first check of a new small function and a repeat of it, side by side with
    ``jax.test_util.check_grads``: tanh(W x) with n = 4, float64.

    - cold: the first check in a fresh process (after the imports), median of ``repeats``
      processes;
    - first: a function this process has never checked (each round traces a new program:
      another constant in it), after other checks warmed the machinery up;
    - repeat: the same check again, by the harness (nothing to trace anew but the keys).
    """
    import subprocess

    from jax.test_util import check_grads

    cold = {}
    for tool in ("mcjax", "check_grads"):
        runs = [float(subprocess.run([sys.executable, "-c", _COLD, tool], capture_output=True,
                                     text=True, check=True).stdout.split()[-1])
                for _ in range(repeats)]
        cold[tool] = float(np.median(runs)) if runs else None
    rng = np.random.default_rng(1)
    W, x = jnp.asarray(rng.standard_normal((4, 4)) / 2), jnp.asarray(rng.standard_normal(4))

    def problem(k):
        f = lambda x: jnp.tanh(W @ x + k)  # noqa: E731  a constant: a new program per k
        return f, lambda x: (1 - f(x) ** 2)[:, None] * W

    mcjax.check(*problem(0.0), x)  # warm the machinery
    first = {"mcjax": [], "check_grads": []}
    for r in range(max(repeats, 1)):
        f, df = problem(0.1 * (r + 1))
        tic = time.perf_counter()
        assert mcjax.check(f, df, x).ok
        first["mcjax"].append(time.perf_counter() - tic)
        g, _ = problem(-0.1 * (r + 1))
        tic = time.perf_counter()
        check_grads(g, (x,), order=1)
        first["check_grads"].append(time.perf_counter() - tic)
    f, df = problem(0.5)
    timed = _common.measure({"mcjax": _common.calls(lambda: mcjax.check(f, df, x).ok),
                             "check_grads": _common.calls(lambda: check_grads(f, (x,), order=1)
                                                          or 0)}, **timing)
    return {tool: {"cold_s": cold[tool], "first_s": float(np.median(first[tool])),
                   "repeat_s": timed[tool]["median_s"]} for tool in ("mcjax", "check_grads")}


def _print_calls(first: dict, machine: dict) -> None:
    print("first check of a new small function, and a repeat (tanh(W x), n = 4, float64), "
          f"seconds; {_common.describe_machine(machine)}, load {machine['load_average']}")
    for tool, r in first.items():
        cold = "n/a" if r["cold_s"] is None else f"{r['cold_s']:.3f}"
        print(f"{tool:12} cold {cold}  first {r['first_s']:.3f}  repeat {r['repeat_s']:.4f}")


def _print_fast(fast: list, sizes, batch: int, machine: dict) -> None:
    print(f"fast mode, MLP {sizes}, batch {batch}, a passing check: {fast[0]['points']} point(s) "
          f"(at most {FAST_POINTS}) x {FAST_DIRECTIONS} directions; {_common.describe_machine(machine)}, load {machine['load_average']}")
    print(f"{'dtype':8} {'params':>9} {'grad ms':>8} {'check ms':>9} {'check/grad':>10} {'call/grad':>9} "
          f"{'+call ms':>8} {'flops x':>8} {'bytes x':>8} {'mem/args':>8} {'mcjax':>6} {'check_grads':>18}")
    for r in fast:
        print(f"{r['dtype']:8} {r['parameters']:>9} {1e3 * r['grad_s']:>8.2f} {1e3 * r['check_program_s']:>9.2f} "
              f"{r['ratio_program_to_grad']:>10.2f} {r['ratio_call_to_grad']:>9.2f} {r['call_overhead_ms']:>8.1f} "
              f"{r['flops_ratio']:>8.2f} "
              f"{r['bytes_ratio']:>8.2f} {r['temp_memory_over_arguments']:>8.2f} {r['mcjax_check']:>6} "
              f"{r['check_grads']:>18}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, float32, no PyTorch: seconds")
    parser.add_argument("--out", type=_common.out_folder, default="results/bench_check",
                        help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds of measurement (default 21, smoke 2)")
    parser.add_argument("--sample-seconds", type=float, default=None,
                        help="the length of one timed sample (default 0.2 s, smoke 0.001 s)")
    parser.add_argument("--fast-only", action="store_true",
                        help="only fast mode against one gradient on the MLP, both dtypes "
                             "(the part that takes a while, without full mode and the calls)")
    parser.add_argument("--calls-only", action="store_true",
                        help="only the first check of a new small function and its repeat, "
                             "cold and warm, against check_grads (about a minute)")
    args = parser.parse_args(argv)
    timing = {"rounds": args.rounds or (2 if args.smoke else 21),
              "sample_seconds": args.sample_seconds or (0.001 if args.smoke else 0.2)}
    sizes, batch = ((8, 16, 4), 4) if args.smoke else ((784, 1024, 192, 10), 64)
    machine = _common.machine()
    dtypes = ("float32",) if args.smoke else ("float32", "float64")
    out = Path(args.out)
    if args.calls_only:
        first = bench_calls(0 if args.smoke else 5, timing)
        _common.write_json(out, "results.json", {"machine": machine, "timing": timing,
                                                 "calls": first})
        _print_calls(first, machine)
        return 0
    fast = [bench_fast(sizes, batch, dt, args.seed, timing) for dt in dtypes]
    if args.fast_only:
        _common.write_json(out, "results.json", {"machine": machine, "timing": timing,
                                                 "sizes": sizes, "batch": batch, "fast": fast})
        _print_fast(fast, sizes, batch, machine)
        return 0
    full = [bench_full(n, timing, not args.smoke) for n in ((4,) if args.smoke else (4, 16, 64))]
    first = bench_calls(0 if args.smoke else 5, timing)  # smoke: no fresh processes
    result = {"machine": machine, "timing": timing, "sizes": sizes, "batch": batch,
              "fast": fast, "full": full, "calls": first}
    _common.write_json(out, "results.json", result)
    _print_fast(fast, sizes, batch, machine)
    print("full mode, tanh(W x), float64, seconds per check")
    for r in full:
        torch_s = "n/a" if r["torch_gradcheck_s"] is None else f"{r['torch_gradcheck_s']:.4f}"
        print(f"n={r['n']:<4} mcjax.check {r['mcjax_check_full_s']:.4f}  check_grads "
              f"{r['jax_check_grads_s']:.4f}  torch.gradcheck {torch_s}")
    _print_calls(first, machine)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    at = np.arange(len(fast))
    a.bar(at - 0.2, [r["ratio_program_to_grad"] for r in fast], 0.4, label="wall time")
    a.bar(at + 0.2, [r["flops_ratio"] for r in fast], 0.4, label="FLOPs")
    a.set_xticks(at, [r["dtype"] for r in fast])
    a.axhline(3, color="r", ls="--", label="budget: 3 gradients")
    a.set_ylabel("fast check / one gradient")
    a.set_title(f"fast mode, {fast[0]['parameters']:,} parameters")
    a.legend()
    ns = [r["n"] for r in full]
    b.plot(ns, [r["mcjax_check_full_s"] for r in full], "o-", label="mcjax.check (full)")
    b.plot(ns, [r["jax_check_grads_s"] for r in full], "s-", label="jax check_grads")
    if full[0]["torch_gradcheck_s"] is not None:
        b.plot(ns, [r["torch_gradcheck_s"] for r in full], "^-", label="torch gradcheck")
    b.set_xlabel("n")
    b.set_ylabel("seconds per check")
    b.set_yscale("log")
    b.legend()
    fig.savefig(out / "bench_check.png", dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
