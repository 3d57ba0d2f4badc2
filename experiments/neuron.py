"""The paper's single ReLU neuron, fitted by SGD, momentum and Adam (Parr & Howard §1, §5, §6).

Synthetic data from a known neuron: x_i ~ N(0, I), y_i = max(0, w*.x_i + b*) + noise.  The
neuron max(0, w.x + b) is trained on the paper's loss C = 1/N sum (y_i - max(0, w.x_i + b))^2
with the hand-derived gradient of §6 (``--grad analytic``, the default) or with autodiff, by
each of the paper's three optimizers.  It recovers (w*, b*): the parameter error is reported.

    python experiments/neuron.py --out runs/neuron
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

import mcjax

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import _common  # noqa: E402

OPTIMIZERS = {  # name -> (learning rate, other hyper-parameters)
    "sgd": (0.05, {}),
    "momentum": (0.01, {"momentum": 0.9}),
    "adam": (0.01, {}),
}


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.split("\n\n")[0], "neuron")
    p.add_argument("--grad", choices=mcjax.steps.GRAD_SOURCES, default="analytic",
                   help="gradient source (default analytic: the paper's formulas)")
    p.add_argument("--samples", type=int, default=None, help="N (default 1024; smoke 256)")
    p.add_argument("--features", type=int, default=5, help="n, the inputs per example (default 5)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 100; smoke 30)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per step (default 32)")
    args = p.parse_args(argv)
    samples = args.samples or (256 if args.smoke else 1024)
    epochs = args.epochs or (30 if args.smoke else 100)

    (X, y), truth = mcjax.datasets.neuron_data(jax.random.key(args.seed), n_samples=samples,
                                      n_features=args.features, noise=0.01)
    model = mcjax.neuron_model(args.features)

    def parameter_error(params):
        return {"w_error": jnp.max(jnp.abs(params["w"] - truth["w"])),
                "b_error": jnp.abs(params["b"] - truth["b"])}

    runs = {}
    for name, (lr, hyper) in OPTIMIZERS.items():
        result = mcjax.train(model, (X, y), optimizer=name, learning_rate=lr,
                             optimizer_options=hyper, grad=args.grad, epochs=epochs,
                             batch_size=args.batch_size, seed=args.seed,
                             evaluate=jax.jit(parameter_error))
        if result.interrupted:
            return 130
        runs[name] = {
            "learning_rate": lr, **hyper,
            "final_loss": result.history["loss"][-1],
            "w_error": result.history["w_error"][-1],
            "b_error": result.history["b_error"][-1],
            "w": np.asarray(result.params["w"]).tolist(),
            "b": float(result.params["b"]),
            "loss_curve": result.history["loss"],
            "w_error_curve": result.history["w_error"],
            "compile_seconds": result.compile_seconds,
            "train_seconds": result.seconds,
        }

    record = {
        "experiment": "neuron", "grad": args.grad, "samples": samples,
        "features": args.features, "epochs": epochs, "batch_size": args.batch_size,
        "seed": args.seed, "smoke": args.smoke,
        "w_true": np.asarray(truth["w"]).tolist(), "b_true": float(truth["b"]),
        "optimizers": runs, "machine": _common.machine(),
    }
    _common.write_json(args.out, "metrics.json", record)
    _plot(runs, args.out)
    _common.print_table(
        f"the paper's neuron, {args.grad} gradients, N={samples}, n={args.features}, "
        f"{epochs} epochs",
        ["optimizer", "final loss", "max |w - w*|", "|b - b*|"],
        [[n, r["final_loss"], r["w_error"], r["b_error"]] for n, r in runs.items()],
    )
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'neuron_loss.png'}")
    return 0


def _plot(runs: dict, out) -> None:
    plt = _common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, r in runs.items():
        epochs = np.arange(1, len(r["loss_curve"]) + 1)
        left.semilogy(epochs, r["loss_curve"], label=name)
        right.semilogy(epochs, r["w_error_curve"], label=name)
    left.set(xlabel="epoch", ylabel="loss C (mean over the epoch)", title="the paper's loss")
    right.set(xlabel="epoch", ylabel="max |w - w*|", title="distance to the true weights")
    _common.save_figure(fig, out / "neuron_loss.png", legends=(left, right))


if __name__ == "__main__":
    mcjax.compilation.enable_compilation_cache()
    raise SystemExit(main())
