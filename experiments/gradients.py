"""One-step gradients in float64: the registry's hand-derived rules against JAX autodiff.

For the paper's neuron (§5), the paper's loss (§6) and an MLP with MSE and with softmax
cross-entropy, at random parameters and data, this computes the gradient that training uses
with ``grad="analytic"`` (the registry's rules through ``jax.custom_vjp``) and with
``grad="autodiff"`` (``jax.grad``), both jitted, and reports the largest absolute difference
and that difference relative to the largest gradient entry.  A last row, a rule with a
deliberate 0.1% slip, shows that the comparison does catch a wrong gradient.

    python experiments/gradients.py --out runs/gradients
"""

from __future__ import annotations

import sys

import jax

jax.config.update("jax_enable_x64", True)  # before any array exists

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mcjax  # noqa: E402

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import _common  # noqa: E402

F64 = jnp.float64


def _neuron_unit(n):
    """mcjax.neuron's registered derivatives (§5) against jax.grad, over a batch of inputs."""
    rule = {a: mcjax.derivative(mcjax.neuron, a) for a in ("w", "x", "b")}

    @jax.jit
    def both(key):
        k_w, k_x = jax.random.split(key)
        w, X = jax.random.normal(k_w, (n,), F64), jax.random.normal(k_x, (64, n), F64)
        b = jnp.asarray(0.1, F64)
        analytic = jax.vmap(lambda x: [rule[a](w, x, b).dense() for a in ("w", "x", "b")])(X)
        autodiff = jax.vmap(lambda x: list(jax.grad(mcjax.neuron, (0, 1, 2))(w, x, b)))(X)
        return analytic, autodiff

    return both


def _objective(model, batch):
    # each gradient is its own jitted program, as in training
    grads = {g: jax.jit(jax.grad(mcjax.objective(model, grad=g))) for g in mcjax.steps.GRAD_SOURCES}
    init = jax.jit(model.init)

    def run(key):
        params = init(key)
        return grads["analytic"](params, batch), grads["autodiff"](params, batch)

    return run


def cases(smoke: bool):
    key = jax.random.key(0)
    n, (B, sizes) = 5, ((8, (6, 7, 5, 3)) if smoke else (128, (64, 256, 256, 10)))
    k_x, k_y, k_n = jax.random.split(key, 3)
    X = jax.random.normal(k_x, (B, sizes[0]), F64)
    (Xn, yn), _ = mcjax.datasets.neuron_data(k_n, n_samples=B, n_features=n, noise=0.1, dtype=F64)
    yield "neuron max(0, w.x + b) (§5)", _neuron_unit(n)
    yield "the paper's loss, neuron_loss (§6)", _objective(mcjax.neuron_model(n, dtype=F64), (Xn, yn))
    yield (f"MLP {'-'.join(map(str, sizes))}, MSE",
           _objective(mcjax.mlp_model(sizes, loss="mse", dtype=F64),
                      (X, jax.random.normal(k_y, (B, sizes[-1]), F64))))
    labels = (X, jax.random.randint(k_y, (B,), 0, sizes[-1]))
    mlp = mcjax.mlp_model(sizes, dtype=F64)
    yield f"MLP {'-'.join(map(str, sizes))}, softmax cross-entropy", _objective(mlp, labels)
    # a control that must fail: the same rule with a 0.1% slip shows what a wrong one looks like
    slipped = mlp._replace(backprop=lambda p, batch: jax.tree.map(lambda g: 1.001 * g,
                                                                  mlp.backprop(p, batch)))
    yield "control: the MLP rule times 1.001 (wrong)", _objective(slipped, labels)


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.split("\n\n")[0], "gradients")
    p.add_argument("--points", type=int, default=None,
                   help="random parameter draws per case (default 5; smoke 2)")
    args = p.parse_args(argv)
    points = args.points or (2 if args.smoke else 5)
    rows = {}
    for name, run in cases(args.smoke):
        worst_abs = worst_rel = 0.0
        for i in range(points):
            analytic, autodiff = run(jax.random.key(args.seed * 1000 + i))
            for a, d in zip(jax.tree.leaves(analytic), jax.tree.leaves(autodiff), strict=True):
                a, d = np.asarray(a), np.asarray(d)
                diff = float(np.max(np.abs(a - d)))
                worst_abs = max(worst_abs, diff)
                worst_rel = max(worst_rel, diff / max(float(np.max(np.abs(d))), 1e-300))
        rows[name] = {"max_abs_difference": worst_abs, "max_relative_difference": worst_rel}
    tol = mcjax.conventions.tolerance(F64)
    record = {"experiment": "gradients", "dtype": "float64", "points": points,
              "smoke": args.smoke, "tolerance": tol._asdict(), "cases": rows,
              "machine": _common.machine()}
    _common.write_json(args.out, "metrics.json", record)
    _plot(rows, args.out)
    _common.print_table(
        f"one-step gradients, analytic vs autodiff, float64, {points} random points each",
        ["model", "max |analytic - autodiff|", "relative to max |grad|"],
        [[n, r["max_abs_difference"], r["max_relative_difference"]] for n, r in rows.items()],
    )
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'gradients.png'}")
    return 0


def _plot(rows: dict, out) -> None:
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    values = [max(r["max_relative_difference"], 1e-18) for r in rows.values()]
    colors = ["tab:red" if name.startswith("control") else "tab:blue" for name in rows]
    ax.barh(list(rows), values, color=colors)
    ax.axvline(mcjax.conventions.tolerance(F64).rtol, color="tab:red", ls="--", label="float64 rtol")
    ax.axvline(np.finfo(np.float64).eps, color="gray", ls=":", label="float64 eps")
    ax.set(xscale="log", xlabel="max |analytic - autodiff| / max |gradient| (0 drawn at 1e-18)",
           title="hand-derived vs autodiff gradients, float64")
    ax.invert_yaxis()
    ax.legend(loc="upper right")
    _common.save_figure(fig, out / "gradients.png")


if __name__ == "__main__":
    mcjax.compilation.enable_compilation_cache()
    raise SystemExit(main())
