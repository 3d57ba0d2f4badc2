"""Benchmark mcjax.hessian: structured Hessians and Newton steps against jax.hessian.

    python experiments/bench_hessian.py --out results/bench_hessian     # the full size, minutes
    python experiments/bench_hessian.py --smoke --out /tmp/bench        # seconds, for the tests

For each loss (xᵀAx at n = 2000; L2-regularised logistic regression on 10 000 × 500 and on
1 000 × 5 000 data; softmax cross-entropy over 1 000 classes) and in one interleaved
measurement (``_common.measure``: an untimed call before each sample, ``block_until_ready``
on every result, ratios paired within a round, medians over rounds):

- **time to the Hessian**: ``mcjax.hessian(f)(x)`` (the structured operator, compiled) against
  ``jax.jit(jax.hessian(f))(x)`` (the dense n × n array);
- **time to a Newton step** $(H + \\lambda I)^{-1} \\nabla f$: ``H.solve(grad, damping)``
  (Woodbury, factor-wise or an n × n system, as the structure allows) against
  ``jnp.linalg.solve(jax.hessian(f)(x) + damping I, grad)``, each one compiled program from
  ``x``; the two steps' relative difference is reported;
- **an HVP** with the operator held, ``H.hvp(v)``, against JAX's forward-over-reverse
  ``jax.jvp(jax.grad(f), (x,), (v,))``;
- **bytes held**: ``H.nbytes`` against the dense Hessian's ``n² · itemsize``.

One dense layer's Gauss-Newton block of the digits MLP is listed as not measured:
``mcjax.gauss_newton`` is not built yet (``GAUSS_NEWTON``, the hook, says so in the results).

Writes results.json and bench_hessian.png into --out and prints a table.  --smoke runs tiny
sizes: it only shows that the script runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import mcjax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

DAMPING = 1e-2
"""The Levenberg damping of every Newton step (softmax cross-entropy's Hessian is singular)."""

GAUSS_NEWTON = {"case": "digits MLP, one dense layer's Gauss-Newton block",
                "status": "not measured: mcjax.gauss_newton is not built yet"}
"""The hook for the Gauss-Newton case of issue 21: filled when ``mcjax.gauss_newton`` exists."""


def problems(smoke: bool, dtype, seed: int) -> list[tuple[str, object, jax.Array]]:
    """``(name, f, x)`` per case, data drawn by NumPy with ``seed``."""
    rng = np.random.default_rng(seed)

    def arr(*shape, scale=1.0):
        return jnp.asarray(scale * rng.standard_normal(shape), dtype)

    n_quad, (N1, d1), (N2, d2), classes = ((20, (50, 10), (10, 50), 20) if smoke else
                                           (2000, (10_000, 500), (1_000, 5_000), 1_000))
    A = arr(n_quad, n_quad)

    def quadratic(x):
        return x @ A @ x

    def logistic(X, y):
        lam = jnp.asarray(1e-3, dtype)

        def loss(w):
            z = X @ w
            return jnp.mean(jax.nn.softplus(z) - y * z) + lam * jnp.sum(w * w)
        return loss

    def data(N, d):
        X = arr(N, d, scale=1 / np.sqrt(d))
        y = jnp.asarray(rng.random(N) > 0.5, dtype)
        return X, y

    label = int(rng.integers(classes))

    def cross_entropy(z):
        return -jax.nn.log_softmax(z)[label]

    return [(f"xᵀAx, n={n_quad}", quadratic, arr(n_quad)),
            (f"logistic {N1}×{d1}", logistic(*data(N1, d1)), arr(d1, scale=0.1)),
            (f"logistic {N2}×{d2}", logistic(*data(N2, d2)), arr(d2, scale=0.1)),
            (f"softmax CE, {classes} classes", cross_entropy, arr(classes))]


def bench_case(name, f, x, timing) -> dict:
    n = x.size
    hessian = mcjax.hessian(f)
    jax_hessian = jax.jit(jax.hessian(f))
    newton = jax.jit(lambda x: hessian(x).solve(jax.grad(f)(x), DAMPING))
    jax_newton = jax.jit(lambda x: jnp.linalg.solve(
        jax.hessian(f)(x) + DAMPING * jnp.eye(n, dtype=x.dtype), jax.grad(f)(x)))
    H = hessian(x)
    v = jnp.asarray(np.random.default_rng(1).standard_normal(n), x.dtype)
    hvp = jax.jit(lambda H, v: H.hvp(v))
    jax_hvp = jax.jit(lambda x, v: jax.jvp(jax.grad(f), (x,), (v,))[1])
    timed = _common.measure({
        "mcjax_hessian": _common.calls(hessian, x),
        "jax_hessian": _common.calls(jax_hessian, x),
        "mcjax_newton": _common.calls(newton, x),
        "jax_newton": _common.calls(jax_newton, x),
        "mcjax_hvp": _common.calls(hvp, H, v),
        "jax_hvp": _common.calls(jax_hvp, x, v),
    }, **timing)
    ratio = lambda ours, theirs: _common.paired_ratio(timed, theirs, ours)  # noqa: E731
    step, reference = newton(x), jax_newton(x)
    hvp_ours, hvp_ref = hvp(H, v), jax_hvp(x, v)
    relative = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))  # noqa: E731
    return {"case": name, "n": int(n), "dtype": str(x.dtype), "structure": H.structure,
            "seconds": {k: r["median_s"] for k, r in timed.items()},
            "rounds": {k: r["rounds"] for k, r in timed.items()},
            "hessian_speedup": ratio("mcjax_hessian", "jax_hessian"),
            "newton_speedup": ratio("mcjax_newton", "jax_newton"),
            "hvp_time_ratio": _common.paired_ratio(timed, "mcjax_hvp", "jax_hvp"),
            "bytes_held": H.nbytes, "dense_bytes": n * n * x.dtype.itemsize,
            "newton_relative_difference": relative(step, reference),
            "hvp_relative_difference": relative(hvp_ours, hvp_ref)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds")
    parser.add_argument("--out", type=_common.out_folder, default="results/bench_hessian",
                        help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="the dtype of data and parameters (default float32)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds of measurement (default 7, smoke 2)")
    parser.add_argument("--sample-seconds", type=float, default=None,
                        help="the length of one timed sample (default 0.2 s, smoke 0.001 s)")
    args = parser.parse_args(argv)
    timing = {"rounds": args.rounds or (2 if args.smoke else 7),
              "sample_seconds": args.sample_seconds or (0.001 if args.smoke else 0.2)}
    machine = _common.machine()
    cases = [bench_case(name, f, x, timing)
             for name, f, x in problems(args.smoke, jnp.dtype(args.dtype), args.seed)]
    out = Path(args.out)
    _common.write_json(out, "results.json", {"machine": machine, "timing": timing,
                                             "damping": DAMPING, "cases": cases,
                                             "not_measured": [GAUSS_NEWTON]})
    rows = [[c["case"], c["structure"].split(":")[0],
             _common.fmt_time(c["seconds"]["jax_hessian"]),
             _common.fmt_time(c["seconds"]["mcjax_hessian"]), _common.fmt_ratio(c["hessian_speedup"]),
             _common.fmt_time(c["seconds"]["jax_newton"]),
             _common.fmt_time(c["seconds"]["mcjax_newton"]), _common.fmt_ratio(c["newton_speedup"]),
             f"{c['hvp_time_ratio']:.2f}", f"{_common.fmt_bytes(c['bytes_held'])} / "
             f"{_common.fmt_bytes(c['dense_bytes'])}"]
            for c in cases]
    rows.append([GAUSS_NEWTON["case"], GAUSS_NEWTON["status"], *["–"] * 8])
    _common.print_table(
        f"mcjax.hessian vs jax.hessian ({args.dtype}; {_common.describe_machine(machine)}, "
        f"load {machine['load_average']:.1f})",
        ["case", "structure", "H: jax", "H: mcjax", "×", "Newton: jax", "Newton: mcjax", "×",
         "hvp / JAX's", "held / dense"], rows)
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    at = np.arange(len(cases))
    ax.bar(at - 0.2, [c["hessian_speedup"] for c in cases], 0.4, label="time to the Hessian")
    ax.bar(at + 0.2, [c["newton_speedup"] for c in cases], 0.4, label="time to a Newton step")
    ax.axhline(10, color="r", ls="--", label="target 10×")
    ax.set_xticks(at, [c["case"] for c in cases], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("jax.hessian time / mcjax time")
    _common.save_figure(fig, out / "bench_hessian.png", legends=[ax])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
