"""K-FAC from the function: its factors against kfac-jax's, and training the digits MLP against Adam.

1. **Factors.**  An MLP 64-32-16-10 (ReLU, softmax cross-entropy, float32, ``mlp_init`` from
   the seed) and one batch of 64 digits: ``mcjax.kfac_factors`` (no layer tags: found in the
   loss's jaxpr) against kfac-jax 0.0.8's own (its layer auto-registration, its registered
   softmax cross-entropy), for the exact GGN (kfac-jax ``ggn_exact``) and the empirical
   Fisher (``fisher_empirical``, whose G kfac-jax normalises by B^2: it is compared times B).
   kfac-jax runs in its own environment pinned to JAX 0.8.2 (``experiments/kfac_reference.py``
   says how); with ``--kfac-python`` it is run now on this script's inputs, otherwise the
   committed reference ``tests/data/kfac_reference.npz`` (made that way) is read.
   Agreement: max |mcjax - kfac-jax| / max |kfac-jax| per factor, target 1e-5.
2. **Training.**  The digits MLP 64-256-256-10 (``experiments/digits_mlp.py``'s), batch
   128, the same initial parameters and minibatches, with ``mcjax.kfac`` (factors refreshed
   every 5 steps, Cholesky inverses; a fixed learning rate with momentum 0.5 and a fixed
   damping, the same with the damping adapted by Martens & Grosse's Levenberg-Marquardt
   rule (§6.5), or the adaptive step of their §7) and with Adam, each row at the setting of
   a small grid
   (``GRIDS``) with the fewest median steps: steps until
   the test accuracy (evaluated after every step, untimed) first reaches 97 %, over three
   minibatch orders, and the wall clock of those steps (each step blocked on, the first,
   which compiles, left out).  Target: K-FAC in at most half of Adam's steps.

    python experiments/bench_kfac.py --out runs/bench_kfac [--kfac-python /tmp/kfac-env/bin/python]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mcjax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "data" / "kfac_reference.npz"
REFERENCE_SIZES = (64, 32, 16, 10)
REFERENCE_BATCH = 64
TARGET_ACCURACY = 0.97
AGREEMENT = 1e-5
# each row's optimizer and grid: (label, mcjax.optimizer keywords)
LM = {"adaptive_damping": True}  # Martens & Grosse's Levenberg-Marquardt rule, T1 = 5
GRIDS = {
    "adam": ("adam", [(f"lr {r:g}", {"learning_rate": r}) for r in (5e-3, 1e-2, 2e-2, 3e-2)]),
    "kfac": ("kfac", [(f"lr {r:g}", {"learning_rate": r}) for r in (0.2, 0.3)]),
    "kfac, LM damping": ("kfac", [(f"lr {r:g}, LM damping", {"learning_rate": r, **LM})
                                  for r in (0.2, 0.3)]),
    "kfac, adaptive step": ("kfac", [(f"adaptive, damping {d:g}",
                                      {"learning_rate": 1.0, "adaptive": True, "damping": d})
                                     for d in (1e-3, 3e-3, 1e-2)]),
    "kfac, adaptive step, LM damping": ("kfac", [
        (f"adaptive, LM damping from {d:g}",
         {"learning_rate": 1.0, "adaptive": True, "damping": d, **LM}) for d in (1e-2, 1e-1)]),
}
BATCH = 128


def reference_inputs(seed: int) -> dict[str, np.ndarray]:
    """The MLP's parameters (mcjax's layout) and the batch the factors are compared on."""
    (X, y), _ = mcjax.datasets.digits_data(seed=seed)
    params = mcjax.mlp_init(jax.random.key(seed), REFERENCE_SIZES)
    out = {f"W{i}": np.asarray(p["W"]) for i, p in enumerate(params)}
    out |= {f"b{i}": np.asarray(p["b"]) for i, p in enumerate(params)}
    out["X"] = np.asarray(X[:REFERENCE_BATCH], np.float32)
    out["y"] = np.asarray(y[:REFERENCE_BATCH], np.int32)
    return out


def run_reference(python: str, seed: int, out: Path) -> Path:
    """kfac-jax's factors of this script's inputs, computed now in its own environment."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.npz"
        np.savez(inputs, **reference_inputs(seed))
        target = out / "kfac_reference.npz"
        subprocess.run([python, str(ROOT / "experiments" / "kfac_reference.py"), "--inputs",
                        str(inputs), "--out", str(target)], check=True)
    return target


def compare_factors(reference: Path) -> dict:
    """mcjax's factors against kfac-jax's in ``reference``: relative error per factor."""
    data = np.load(reference)
    n = sum(1 for k in data.files if k.startswith("W"))
    params = [{"W": jnp.asarray(data[f"W{i}"]), "b": jnp.asarray(data[f"b{i}"])}
              for i in range(n)]
    sizes = [data["W0"].shape[1]] + [data[f"W{i}"].shape[0] for i in range(n)]
    loss = mcjax.mlp_model(sizes).loss
    batch = (jnp.asarray(data["X"]), jnp.asarray(data["y"]))
    scale = {"ggn": 1.0, "empirical": float(data["X"].shape[0])}
    rows = []
    for estimator in ("ggn", "empirical"):
        found = mcjax.kfac_factors(loss, params, batch, estimator=estimator)
        for i, factors in enumerate(found.values()):
            for name, mine in zip("AG", factors):
                ref = data[f"{name}{i}_{estimator}"] * (scale[estimator] if name == "G" else 1)
                err = float(np.max(np.abs(np.asarray(mine) - ref)) / np.max(np.abs(ref)))
                rows.append({"estimator": estimator, "layer": i, "factor": name,
                             "shape": list(ref.shape), "relative_error": err})
    return {"reference": str(reference), "versions": str(data["versions"]), "rows": rows,
            "max_relative_error": max(r["relative_error"] for r in rows)}


def steps_to_target(model, params, data, test, optimizer, *, batch_size: int, seed: int,
                    max_steps: int) -> dict:
    """Train until the test accuracy first reaches the target: its step and the steps'
    seconds (evaluation untimed)."""
    loss = mcjax.objective(model)
    step = mcjax.steps.make_train_step(loss, optimizer)
    X, y = data
    Xt, yt = test

    @jax.jit
    def accuracy(p):
        return jnp.mean(jnp.argmax(model.apply(p, Xt), -1) == yt)

    params = jax.tree.map(jnp.array, params)  # a copy: the step donates its buffers
    state = optimizer.init(params)
    rng = np.random.default_rng(seed)
    n = X.shape[0] // batch_size
    seconds, t, acc, curve = 0.0, 0, 0.0, []
    while t < max_steps:
        order = rng.permutation(X.shape[0])
        for b in range(n):
            rows = order[b * batch_size:(b + 1) * batch_size]
            batch = (X[rows], y[rows])
            start = time.perf_counter()
            params, state, _ = step(params, state, batch)
            jax.block_until_ready(params)
            seconds += time.perf_counter() - start if t else 0.0  # step 1 compiles
            t += 1
            acc = float(accuracy(params))
            curve.append(acc)
            if acc >= TARGET_ACCURACY or t >= max_steps:
                return {"steps": t if acc >= TARGET_ACCURACY else None, "seconds": seconds,
                        "accuracy": acc, "seconds_per_step": seconds / max(t - 1, 1),
                        "curve": curve}
    return {"steps": None, "seconds": seconds, "accuracy": acc,
            "seconds_per_step": seconds / max(t - 1, 1), "curve": curve}


def compare_training(seed: int, *, hidden, batch_size: int, max_steps: int, shuffles: int,
                     grids) -> dict:
    """Each optimizer at each setting of its grid, from the same initial parameters, over
    ``shuffles`` minibatch orders: the median steps to the target (a run that never reaches
    it counts as infinitely many), the best setting by that median, and its runs."""
    (X, y), (Xt, yt) = mcjax.datasets.digits_data(seed=seed)
    X, y, Xt, yt = (jnp.asarray(a) for a in (X, y, Xt, yt))
    model = mcjax.mlp_model((64, *hidden, 10))
    params = model.init(jax.random.key(seed))
    results: dict[str, dict] = {}
    for row, (name, grid) in grids.items():
        tried = {}
        for label, settings in grid:
            opt = mcjax.optimizer(name, **settings)
            runs = [steps_to_target(model, params, (X, y), (Xt, yt), opt,
                                    batch_size=batch_size, seed=seed + k, max_steps=max_steps)
                    for k in range(shuffles)]
            steps = [r["steps"] if r["steps"] is not None else np.inf for r in runs]
            median = float(np.median(steps))
            tried[label] = {"settings": settings, "median_steps": median if np.isfinite(median) else None,
                           "steps": [r["steps"] for r in runs],
                           "median_seconds": float(np.median([r["seconds"] for r in runs])),
                           "median_seconds_per_step": float(np.median(
                               [r["seconds_per_step"] for r in runs])),
                           "accuracy": [r["accuracy"] for r in runs],
                           "curves": [r["curve"] for r in runs]}
        best = min(tried, key=lambda r: tried[r]["median_steps"] or np.inf)
        results[row] = {"best": best, **tried[best], "grid": tried}
    return results


def _plot(training: dict, out: Path) -> None:
    """Test accuracy against steps: each optimizer's best setting, every minibatch order."""
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange")
    for (name, r), color in zip(training.items(), colors):
        for k, curve in enumerate(r["curves"]):
            ax.plot(np.arange(1, len(curve) + 1), 100 * np.asarray(curve), color=color,
                    alpha=0.8, label=f"{name.split(',')[0]}, {r['best']}" if k == 0 else None)
    ax.axhline(100 * TARGET_ACCURACY, color="gray", linestyle=":", label="97 %")
    ax.set(xlabel="step", ylabel="test accuracy (%)", ylim=(50, 100),
           title="digits MLP 64-256-256-10, batch 128")
    _common.save_figure(fig, out / "accuracy.png", legends=(ax,))


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.split("\n\n")[0], "bench_kfac")
    p.add_argument("--kfac-python", default=None,
                   help="the python of kfac-jax's environment (default: read the committed "
                        "reference tests/data/kfac_reference.npz)")
    p.add_argument("--shuffles", type=int, default=None,
                   help="minibatch orders per setting (default 3; smoke 1)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    reference = run_reference(args.kfac_python, args.seed, args.out) if args.kfac_python \
        else FIXTURE
    factors = compare_factors(reference)
    hidden = (32,) if args.smoke else (256, 256)
    grids = {row: (name, grid[-1:]) for row, (name, grid) in GRIDS.items()} if args.smoke \
        else GRIDS
    training = compare_training(args.seed, hidden=hidden, batch_size=BATCH,
                                max_steps=10 if args.smoke else 300,
                                shuffles=args.shuffles or (1 if args.smoke else 3), grids=grids)
    adam = training["adam"]["median_steps"]
    kfac = min((r["median_steps"] for row, r in training.items()
                if row != "adam" and r["median_steps"]), default=None)
    ratio = kfac / adam if adam and kfac else None
    record = {"experiment": "bench_kfac", "seed": args.seed, "smoke": args.smoke,
              "factors": factors, "agreement_target": AGREEMENT,
              "factors_agree": factors["max_relative_error"] <= AGREEMENT,
              "training": training, "target_accuracy": TARGET_ACCURACY,
              "kfac_steps_over_adam_steps": ratio, "machine": _common.machine()}
    _common.write_json(args.out, "results.json", record)
    _plot(training, args.out)
    _common.print_table(
        f"K-FAC factors, mcjax vs kfac-jax ({factors['versions']}), float32",
        ["estimator", "layer", "factor", "shape", "max rel. error"],
        [[r["estimator"], r["layer"], r["factor"], "x".join(map(str, r["shape"])),
          f"{r['relative_error']:.2g}"] for r in factors["rows"]])
    _common.print_table(
        f"digits MLP 64-{'-'.join(map(str, hidden))}-10, batch {BATCH}: to "
        f"{TARGET_ACCURACY:.0%} test accuracy (median over minibatch orders)",
        ["optimizer", "best setting", "steps (each order)", "median steps", "seconds",
         "ms / step"],
        [[n, r["best"], ", ".join(map(str, r["steps"])), r["median_steps"],
          f"{r['median_seconds']:.3f}", f"{1e3 * r['median_seconds_per_step']:.2f}"]
         for n, r in training.items()])
    print(f"K-FAC (its best row) / Adam steps: {ratio if ratio is None else f'{ratio:.2f}'}; factors agree "
          f"to {factors['max_relative_error']:.2g} (target {AGREEMENT:g}); timings on a "
          "shared machine are noisy (medians)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
