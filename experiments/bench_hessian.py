"""Benchmark mcjax.hessian: structured Hessians and Newton steps against jax.hessian.

    python experiments/bench_hessian.py --out results/bench_hessian     # the full size, minutes
    python experiments/bench_hessian.py --smoke --out /tmp/bench        # seconds, for the tests

For each loss (xᵀAx at n = 2000; L2-regularised logistic regression on 10 000 × 500 and on
1 000 × 5 000 data, and on 10 000 × 500 with a bias, weights and bias one vector that ``f``
slices; softmax cross-entropy over 1 000 classes) and in one interleaved
measurement (``_common.measure``: an untimed call before each sample, ``block_until_ready``
on every result, ratios paired within a round, medians over rounds):

- **time to the Hessian**: ``jax.jit(mcjax.hessian(f))(x)`` (the structured operator, compiled
  once per shape and kept by JAX's cache on the function, as ``jax.jit`` keeps anything) against
  ``jax.jit(jax.hessian(f))(x)`` (the dense n × n array), and ``mcjax.hessian(f)(x)`` as called
  without ``jax.jit`` (``f`` traced afresh on every call, so that an edit of what ``f`` reads is
  never answered by a stale program: a fixed cost per call);
- **time to a Newton step** $(H + \\lambda I)^{-1} \\nabla f$: ``H.solve(grad, damping)``
  (Woodbury, factor-wise or an n × n system, as the structure allows) against
  ``jnp.linalg.solve(jax.hessian(f)(x) + damping I, grad)``, each one compiled program from
  ``x``; the two steps' relative difference is reported;
- **an HVP** with the operator held, ``H.hvp(v)``, against JAX's forward-over-reverse
  ``jax.jvp(jax.grad(f), (x,), (v,))``;
- **bytes held**: ``H.nbytes`` against the dense Hessian's ``n² · itemsize``.

One dense layer's Gauss-Newton block of the digits MLP (its last layer, 10 × 256 weights, a
batch of 32): ``mcjax.gauss_newton`` against JAX's dense ``Jᵀ H_L J`` from ``jax.jacfwd`` and
``jax.hessian``, its Newton step against ``jnp.linalg.solve``, its product with a vector
against JAX's ``jvp``-``hvp``-``vjp``.  ``--cases`` picks cases by name.

Writes results.json and bench_hessian.png into --out and prints a table.  --smoke runs tiny
sizes: it only shows that the script runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import mcjax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

DAMPING = 1e-2
"""The Levenberg damping of every Newton step (softmax cross-entropy's Hessian is singular)."""

CASES = ("quadratic", "logistic-tall", "logistic-wide", "logistic-bias", "softmax",
         "gauss-newton")
"""The cases, by the names ``--cases`` takes."""


def problems(smoke: bool, dtype, seed: int) -> list[tuple[str, str, Any, tuple]]:
    """``(key, name, f, args)`` per case, data drawn by NumPy with ``seed``.  The data are ``f``'s
    arguments, not constants it closes over: XLA would fold products of constants (``X Xᵀ``)
    while compiling, and time them nowhere."""
    rng = np.random.default_rng(seed)

    def arr(*shape, scale=1.0):
        return jnp.asarray(scale * rng.standard_normal(shape), dtype)

    n_quad, (N1, d1), (N2, d2), classes = ((20, (50, 10), (10, 50), 20) if smoke else
                                           (2000, (10_000, 500), (1_000, 5_000), 1_000))

    def quadratic(x, A):
        return x @ A @ x

    def logistic(w, X, y):
        z = X @ w
        return jnp.mean(jax.nn.softplus(z) - y * z) + 1e-3 * jnp.sum(w * w)

    def logistic_with_bias(wb, X, y):  # weights and bias in one vector: z = X w + b
        z = X @ wb[:-1] + wb[-1]
        return jnp.mean(jax.nn.softplus(z) - y * z) + 1e-3 * jnp.sum(wb * wb)

    def data(N, d):
        X = arr(N, d, scale=1 / np.sqrt(d))
        y = jnp.asarray(rng.random(N) > 0.5, dtype)
        return X, y

    def cross_entropy(z, label):
        return -jnp.take(jax.nn.log_softmax(z), label)

    label = jnp.asarray(rng.integers(classes), jnp.int32)
    return [("quadratic", f"xᵀAx, n={n_quad}", quadratic, (arr(n_quad), arr(n_quad, n_quad))),
            ("logistic-tall", f"logistic {N1}×{d1}", logistic,
             (arr(d1, scale=0.1), *data(N1, d1))),
            ("logistic-wide", f"logistic {N2}×{d2}", logistic,
             (arr(d2, scale=0.1), *data(N2, d2))),
            ("logistic-bias", f"logistic (w, b) {N1}×{d1}", logistic_with_bias,
             (arr(d1 + 1, scale=0.1), *data(N1, d1))),
            ("softmax", f"softmax CE, {classes} classes", cross_entropy, (arr(classes), label))]


def digits_layer(smoke: bool, dtype, seed: int):
    """The digits MLP (64-256-256-10, He-initialised) on a batch of 32 digits: its last dense
    layer's logits as a function of that layer's weights ``W`` (10 × 256), the hidden
    activations feeding it, and softmax cross-entropy: ``(f, loss, W, h, labels)``."""
    (X, y), _ = mcjax.datasets.digits_data(seed=seed)
    sizes = (64, 16, 10) if smoke else (64, 256, 256, 10)
    params = mcjax.mlp_init(jax.random.key(seed), sizes, dtype=dtype)
    batch = 8 if smoke else 32
    h = jnp.asarray(X[:batch], dtype)
    for layer in params[:-1]:
        h = jax.nn.relu(h @ layer["W"].T + layer["b"][None, :])
    b = params[-1]["b"]

    def logits(W, h):
        return h @ W.T + b[None, :]

    def cross_entropy(z, labels):
        return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(z), labels[:, None], axis=1))

    return logits, cross_entropy, params[-1]["W"], h, jnp.asarray(y[:batch], jnp.int32)


def bench_case(name, f, args, timing) -> dict:
    """One loss: mcjax.hessian against jax.hessian (+ jnp.linalg.solve)."""
    x = args[0]
    n = x.size
    hessian = mcjax.hessian(f)
    newton = jax.jit(lambda *a: hessian(*a).solve(jax.grad(f)(*a), DAMPING))
    jax_newton = jax.jit(lambda *a: jnp.linalg.solve(
        jax.hessian(f)(*a) + DAMPING * jnp.eye(n, dtype=x.dtype), jax.grad(f)(*a)))
    jax_hvp = jax.jit(lambda x, v, *data: jax.jvp(lambda x: jax.grad(f)(x, *data),
                                                   (x,), (v,))[1])
    return compare(name, jax.jit(hessian), jax.jit(jax.hessian(f)), newton, jax_newton, jax_hvp,
                   args, timing, as_called=hessian)


def bench_gauss_newton(smoke: bool, dtype, seed: int, timing) -> dict:
    """One dense layer's Gauss-Newton block: mcjax.gauss_newton against JAX's
    ``jax.jacfwd(f)ᵀ jax.hessian(loss) jax.jacfwd(f)``, dense."""
    f, loss, W, h, labels = digits_layer(smoke, dtype, seed)
    n, m = W.size, labels.size * W.shape[0]
    gauss_newton = mcjax.gauss_newton(f, loss)

    def ours(W, h, labels):
        return gauss_newton(W, h, loss_args=(labels,))

    def theirs(W, h, labels):
        J = jax.jacfwd(f)(W, h).reshape(m, n)
        z = f(W, h)
        HL = jax.hessian(loss)(z, labels).reshape(m, m)
        return J.T @ HL @ J

    def gradient(W, h, labels):
        return jax.grad(lambda W: loss(f(W, h), labels))(W).reshape(-1)

    newton = jax.jit(lambda *a: ours(*a).solve(gradient(*a), DAMPING))
    jax_newton = jax.jit(lambda *a: jnp.linalg.solve(
        theirs(*a) + DAMPING * jnp.eye(n, dtype=W.dtype), gradient(*a)))

    def jax_gnvp(W, v, h, labels):  # J v forward, H_L (J v), then Jᵀ by reverse mode
        z, Jv = jax.jvp(lambda W: f(W, h), (W,), (v.reshape(W.shape),))
        HJv = jax.jvp(jax.grad(lambda z: loss(z, labels)), (z,), (Jv,))[1]
        return jax.vjp(lambda W: f(W, h), W)[1](HJv)[0].reshape(-1)

    return compare(f"digits MLP last layer GN, m={m}, n={n}", jax.jit(ours), jax.jit(theirs),
                   newton, jax_newton, jax.jit(jax_gnvp), (W, h, labels), timing, as_called=ours)


def compare(name, ours, theirs, newton, jax_newton, jax_hvp, args, timing, as_called) -> dict:
    """Time ours against theirs: the operator (ours under ``jax.jit`` as theirs is, and
    ``as_called``, without it), a Newton step, a product with a vector."""
    x, data = args[0], args[1:]
    n = x.size
    H = as_called(*args)
    v = jnp.asarray(np.random.default_rng(1).standard_normal(n), x.dtype)
    hvp = jax.jit(lambda H, v: H.hvp(v))
    timed = _common.measure({
        "mcjax_hessian": _common.calls(ours, *args),
        "mcjax_hessian_as_called": _common.calls(as_called, *args),
        "jax_hessian": _common.calls(theirs, *args),
        "mcjax_newton": _common.calls(newton, *args),
        "jax_newton": _common.calls(jax_newton, *args),
        "mcjax_hvp": _common.calls(hvp, H, v),
        "jax_hvp": _common.calls(jax_hvp, x, v, *data),
    }, **timing)
    ratio = lambda ours, theirs: _common.paired_ratio(timed, theirs, ours)  # noqa: E731
    step, reference = newton(*args), jax_newton(*args)
    hvp_ours, hvp_ref = hvp(H, v), jax_hvp(x, v, *data)
    relative = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))  # noqa: E731
    return {"case": name, "n": int(n), "dtype": str(x.dtype), "structure": H.structure,
            "seconds": {k: r["median_s"] for k, r in timed.items()},
            "rounds": {k: r["rounds"] for k, r in timed.items()},
            "hessian_speedup": ratio("mcjax_hessian", "jax_hessian"),
            "hessian_as_called_speedup": ratio("mcjax_hessian_as_called", "jax_hessian"),
            "newton_speedup": ratio("mcjax_newton", "jax_newton"),
            "hvp_time_ratio": _common.paired_ratio(timed, "mcjax_hvp", "jax_hvp"),
            "bytes_held": H.nbytes, "dense_bytes": n * n * x.dtype.itemsize,
            "newton_relative_difference": relative(step, reference),
            "hvp_relative_difference": relative(hvp_ours, hvp_ref)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds")
    parser.add_argument("--out", type=_common.out_folder, default="results/bench_hessian",
                        help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="the dtype of data and parameters (default float32)")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated cases to run (default all: {','.join(CASES)})")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds of measurement (default 7, smoke 2)")
    parser.add_argument("--sample-seconds", type=float, default=None,
                        help="the length of one timed sample (default 0.2 s, smoke 0.001 s)")
    args = parser.parse_args(argv)
    timing = {"rounds": args.rounds or (2 if args.smoke else 7),
              "sample_seconds": args.sample_seconds or (0.001 if args.smoke else 0.2)}
    machine = _common.machine()
    chosen = args.cases.split(",")
    unknown = sorted(set(chosen) - set(CASES))
    if unknown:
        parser.error(f"--cases: unknown {', '.join(unknown)}; expected some of {', '.join(CASES)}")
    dtype = jnp.dtype(args.dtype)
    cases = [bench_case(name, f, a, timing)
             for key, name, f, a in problems(args.smoke, dtype, args.seed) if key in chosen]
    if "gauss-newton" in chosen:
        cases.append(bench_gauss_newton(args.smoke, dtype, args.seed, timing))
    out = Path(args.out)
    _common.write_json(out, "results.json", {"machine": machine, "timing": timing,
                                             "damping": DAMPING, "cases": cases})
    rows = [[c["case"], c["structure"].split(":")[0],
             _common.fmt_time(c["seconds"]["jax_hessian"]),
             _common.fmt_time(c["seconds"]["mcjax_hessian"]), _common.fmt_ratio(c["hessian_speedup"]),
             _common.fmt_ratio(c["hessian_as_called_speedup"]),
             _common.fmt_time(c["seconds"]["jax_newton"]),
             _common.fmt_time(c["seconds"]["mcjax_newton"]), _common.fmt_ratio(c["newton_speedup"]),
             f"{c['hvp_time_ratio']:.2f}", f"{_common.fmt_bytes(c['bytes_held'])} / "
             f"{_common.fmt_bytes(c['dense_bytes'])}"]
            for c in cases]
    _common.print_table(
        f"mcjax.hessian vs jax.hessian ({args.dtype}; {_common.describe_machine(machine)}, "
        f"load {machine['load_average']:.1f})",
        ["case", "structure", "H: jax", "H: mcjax", "×", "× as called", "Newton: jax",
         "Newton: mcjax", "×",
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
