"""An MLP on scikit-learn's bundled digits, trained with analytic and with autodiff gradients.

The 8x8 digit images (1797, bundled with scikit-learn: no download) are split 75/25 by class;
an MLP 64-256-256-10 with ReLU is trained on softmax cross-entropy by AdamW (Adam with a
small decoupled weight decay) and a cosine learning-rate decay, once with the registry's hand-derived backpropagation
(``grad="analytic"``) and once with JAX autodiff, from the same initial parameters and the
same minibatches.  ``metrics.json`` holds ``test_accuracy`` for each gradient source.

    python experiments/digits_mlp.py --out runs/digits_mlp
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

import mcjax

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import _common  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.split("\n\n")[0], "digits_mlp")
    p.add_argument("--hidden", default=None,
                   help="hidden widths, comma-separated (default 256,256; smoke 32)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 60; smoke 3)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per step (default 32)")
    p.add_argument("--lr", type=float, default=3e-3, help="AdamW's initial learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-3, help="AdamW's weight decay")
    args = p.parse_args(argv)
    hidden = tuple(int(h) for h in (args.hidden or ("32" if args.smoke else "256,256")).split(","))
    epochs = args.epochs or (3 if args.smoke else 60)

    (X_train, y_train), (X_test, y_test) = mcjax.datasets.digits_data(seed=args.seed)
    model = mcjax.mlp_model((X_train.shape[1], *hidden, 10))
    steps = epochs * (len(y_train) // args.batch_size)
    learning_rate = mcjax.schedule("cosine_decay", init_value=args.lr, decay_steps=steps)
    X_test, y_test = jnp.asarray(X_test), jnp.asarray(y_test)

    @jax.jit
    def evaluate(params):
        logits = model.apply(params, X_test)
        predicted = jnp.argmax(logits, axis=-1)
        return {"test_accuracy": jnp.mean(predicted == y_test.astype(predicted.dtype)),
                "test_loss": mcjax.softmax_cross_entropy(logits, y_test)}

    runs = {}
    for grad in mcjax.steps.GRAD_SOURCES:
        result = mcjax.train(model, (X_train, y_train), optimizer="adamw",
                             learning_rate=learning_rate,
                             optimizer_options={"weight_decay": args.weight_decay}, grad=grad, epochs=epochs,
                             batch_size=args.batch_size, seed=args.seed, evaluate=evaluate)
        if result.interrupted:
            return 130
        runs[grad] = {
            "test_accuracy": result.history["test_accuracy"][-1],
            "test_loss": result.history["test_loss"][-1],
            "train_loss": result.history["loss"][-1],
            "curves": result.history,
            "compile_seconds": result.compile_seconds,
            "train_seconds": result.seconds,
            "params": result.params,
        }
    a, b = (jax.tree.leaves(runs[g].pop("params")) for g in mcjax.steps.GRAD_SOURCES)
    drift = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(a, b))

    record = {
        "experiment": "digits_mlp", "sizes": [X_train.shape[1], *hidden, 10],
        "train_examples": len(y_train), "test_examples": int(len(y_test)), "epochs": epochs,
        "batch_size": args.batch_size, "optimizer": "adamw", "learning_rate": args.lr,
        "weight_decay": args.weight_decay,
        "schedule": "cosine_decay", "seed": args.seed, "smoke": args.smoke,
        "test_accuracy": {g: r["test_accuracy"] for g, r in runs.items()},
        "final_params_max_abs_difference": drift,
        "runs": runs, "machine": _common.machine(),
    }
    _common.write_json(args.out, "metrics.json", record)
    _plot(runs, args.out)
    _common.print_table(
        f"MLP {'-'.join(map(str, record['sizes']))} on the digits, {epochs} epochs",
        ["gradients", "test accuracy", "test loss", "train loss", "compile s", "train s"],
        [[g, r["test_accuracy"], r["test_loss"], r["train_loss"], r["compile_seconds"],
          r["train_seconds"]] for g, r in runs.items()],
    )
    print(f"final parameters, analytic vs autodiff: max |difference| {drift:.3g} (float32)")
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'digits_mlp.png'}")
    return 0


def _plot(runs: dict, out) -> None:
    plt = _common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for (grad, r), style in zip(runs.items(), ("-", "--")):
        epochs = np.arange(1, len(r["curves"]["loss"]) + 1)
        left.semilogy(epochs, r["curves"]["loss"], style, label=f"train, {grad}")
        left.semilogy(epochs, r["curves"]["test_loss"], style, label=f"test, {grad}")
        right.plot(epochs, 100 * np.asarray(r["curves"]["test_accuracy"]), style, label=grad)
    left.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    right.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy",
              ylim=(90, 100))
    _common.save_figure(fig, out / "digits_mlp.png", legends=(left, right))


if __name__ == "__main__":
    mcjax.compilation.enable_compilation_cache()
    raise SystemExit(main())
