"""Benchmark mcjax.check: fast mode against one gradient evaluation on a 1M-parameter MLP, and
full mode against jax.test_util.check_grads and torch.autograd.gradcheck (when installed).

    python experiments/bench_check.py --out results/bench_check        # the full size
    python experiments/bench_check.py --smoke --out /tmp/bench          # seconds, for the tests

Writes results.json and bench_check.png into --out and prints a table.  Timings are medians
of repeats after a warm-up, measured side by side in one run: compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import mcjax  # noqa: E402
from mcjax._check import _fast  # noqa: E402
from mcjax._check._problem import prepare  # noqa: E402


def median_time(fn, repeats):
    jax.block_until_ready(fn())  # warm-up: compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def mlp_problem(sizes, batch, dtype, seed):
    params = mcjax.mlp_init(jax.random.PRNGKey(seed), sizes, dtype=dtype)
    params = [{"W": layer["W"], "b": 0.1 * jax.random.normal(jax.random.PRNGKey(seed + 10 + i), layer["b"].shape, dtype)}
              for i, layer in enumerate(params)]
    X = jax.random.normal(jax.random.PRNGKey(seed + 1), (batch, sizes[0]), dtype)
    return params, X, jnp.arange(batch) % sizes[-1]


def bench_fast(sizes, batch, dtype, seed, repeats):
    params, X, Y = mlp_problem(sizes, batch, dtype, seed)
    grad = jax.jit(jax.grad(mcjax.mlp_loss))
    backprop = jax.jit(mcjax.mlp_backprop)
    p = prepare(mcjax.mlp_loss, mcjax.mlp_backprop, (params, X, Y), 0, "numerator")
    s = jnp.asarray(seed, jnp.uint32)
    program = lambda: _fast._program(p.static, p.x_spec, p.out_spec, p.dtype, 2, 4, p.dynamic, s)  # noqa: E731
    t_grad = median_time(lambda: grad(params, X, Y), repeats)
    t_backprop = median_time(lambda: backprop(params, X, Y), repeats)
    t_program = median_time(program, repeats)
    t_call = median_time(lambda: mcjax.check(mcjax.mlp_loss, mcjax.mlp_backprop, params, X, Y).ok, repeats)
    flops = (jax.jit(jax.grad(mcjax.mlp_loss)).lower(params, X, Y).compile().cost_analysis()["flops"])
    flops_check = _fast._program.lower(p.static, p.x_spec, p.out_spec, p.dtype, 2, 4, p.dynamic, s).compile().cost_analysis()["flops"]
    try:
        from jax.test_util import check_grads
        check_grads(lambda q: mcjax.mlp_loss(q, X, Y), (params,), order=1, modes=("rev",))
        check_grads_verdict = "pass"
    except AssertionError:
        check_grads_verdict = "FAIL (false alarm)"
    return {"dtype": dtype, "parameters": int(sum(a.size for a in jax.tree_util.tree_leaves(params))),
            "grad_s": t_grad, "backprop_s": t_backprop, "check_program_s": t_program,
            "check_call_s": t_call, "ratio_program_to_grad": t_program / t_grad,
            "ratio_call_to_grad": t_call / t_grad, "flops_ratio": flops_check / flops,
            "mcjax_check": "pass" if mcjax.check(mcjax.mlp_loss, mcjax.mlp_backprop, params, X, Y).ok else "FAIL",
            "check_grads": check_grads_verdict}


def bench_full(n, repeats):
    """A small function f: R^n -> R^n (tanh of an affine map), float64, every tool on it."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((n, n)) / np.sqrt(n)
    x = rng.standard_normal(n)
    Wj, xj = jnp.asarray(W), jnp.asarray(x)
    f = lambda x: jnp.tanh(Wj @ x)  # noqa: E731
    df = lambda x: (1 - f(x) ** 2)[:, None] * Wj  # noqa: E731
    out = {"n": n, "mcjax_check_full_s": median_time(lambda: mcjax.check(f, df, xj, mode="full").ok, repeats)}
    from jax.test_util import check_grads
    out["jax_check_grads_s"] = median_time(lambda: check_grads(f, (xj,), order=1) or 0, repeats)
    try:
        import torch
    except ImportError:
        out["torch_gradcheck_s"] = None
        return out
    Wt = torch.tensor(W)
    xt = torch.tensor(x, requires_grad=True)
    out["torch_gradcheck_s"] = median_time(
        lambda: torch.autograd.gradcheck(lambda v: torch.tanh(Wt @ v), (xt,)) or 0, repeats)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--out", default="results/bench_check", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 10, smoke 2)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.smoke else 10)
    sizes, batch = ((32, 64, 16, 10), 8) if args.smoke else ((784, 1024, 192, 10), 64)
    fast = [bench_fast(sizes, batch, dt, args.seed, repeats) for dt in ("float32", "float64")]
    full = [bench_full(n, repeats) for n in ((4, 16) if args.smoke else (4, 16, 64))]
    result = {"machine": f"{platform.machine()} {platform.processor() or ''} cpus={jax.device_count()}",
              "jax": jax.__version__, "sizes": sizes, "batch": batch, "fast": fast, "full": full}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(f"fast mode, MLP {sizes}, batch {batch}")
    print(f"{'dtype':8} {'params':>9} {'grad ms':>8} {'check ms':>9} {'check/grad':>10} {'flops x':>8} "
          f"{'mcjax':>6} {'check_grads':>18}")
    for r in fast:
        print(f"{r['dtype']:8} {r['parameters']:>9} {1e3 * r['grad_s']:>8.2f} {1e3 * r['check_program_s']:>9.2f} "
              f"{r['ratio_program_to_grad']:>10.2f} {r['flops_ratio']:>8.2f} {r['mcjax_check']:>6} {r['check_grads']:>18}")
    print("full mode, tanh(W x), float64, seconds per check")
    for r in full:
        torch_s = "n/a" if r["torch_gradcheck_s"] is None else f"{r['torch_gradcheck_s']:.4f}"
        print(f"n={r['n']:<4} mcjax.check {r['mcjax_check_full_s']:.4f}  check_grads "
              f"{r['jax_check_grads_s']:.4f}  torch.gradcheck {torch_s}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    a.bar([r["dtype"] for r in fast], [r["ratio_program_to_grad"] for r in fast], label="time")
    a.plot([r["dtype"] for r in fast], [r["flops_ratio"] for r in fast], "ko", label="flops")
    a.axhline(5, color="r", ls="--", label="budget: 5 gradients")
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
