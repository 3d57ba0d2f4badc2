"""How fast is a training step? mcjax against its matmul floor and its peers, in one run.

For an MLP 784-1024-1024-10 (batch 256) and an MLP 64-256-256-10 (batch 128), softmax
cross-entropy, Adam, float32, it times one training step of

- mcjax with autodiff and with analytic (hand-derived, registry) gradients;
- the floor: the step's own forward and backward matrix products, exactly these shapes,
  jitted and timed alone (and a stricter floor whose products overwrite donated buffers,
  as the step overwrites its donated parameters);
- the obvious plain-JAX step (jax.grad + optax, written here by hand, no donation);
- a NumPy step with hand-written backprop and Adam;
- PyTorch eager, where torch is installed (an optional extra);

and, for a tiny MLP 8-32-32-2 (batch 16), the per-step time of a whole epoch inside
``jax.lax.scan``: mcjax's epoch against a hand-written plain-JAX scan.  A large square
matmul gives the machine's peak.  All variants are measured interleaved, round after round
(so that a noisy neighbour slows them alike), each sample after an untimed call, blocking on
the results.  Times are the median of the rounds; ratios are the median over rounds of the
ratio within a round, so that a load that drifts during the run cancels out.

    python experiments/bench_train.py --out runs/bench_train
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mcjax

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import _common  # noqa: E402
from _bench_peers import numpy_step, plain_jax_loss, torch_step  # noqa: E402

F32 = jnp.float32
TARGETS = {
    "big step / matmul floor": ("<=", 1.15),
    "mcjax / plain JAX": ("<=", 1.03),
    "analytic / autodiff": ("<=", 1.05),
    "NumPy / mcjax": (">=", 1.25),
    "torch eager / mcjax": (">=", 1.25),
    "tiny scan: mcjax / plain JAX": ("<=", 1.10),
}


# inputs are drawn with NumPy and initial states made by one jitted call each: eager
# jax.random would compile once per shape, which is most of a --smoke run's time
def _data(seed, sizes, batch):
    rng = np.random.default_rng(seed)
    X = jnp.asarray(rng.standard_normal((batch, sizes[0]), np.float32))
    return X, jnp.asarray(rng.integers(0, sizes[-1], batch, dtype=np.int32))


def _initializer(model, opt) -> Callable[[], tuple]:
    """``fresh()`` -> ``(params, opt_state)``: equal values every call, new buffers to donate."""
    init = jax.jit(lambda key: (lambda p: (p, opt.init(p)))(model.init(key)))
    key = jax.random.key(0)
    return lambda: init(key)


def _stepper(step, state, batch) -> Callable[[int], None]:
    """``run(n)``: n steps of ``step``, threading its state, then block on the result."""
    box = [state]

    def run(n):
        params, opt_state = box[0]
        for _ in range(n):
            params, opt_state, loss = step(params, opt_state, batch)
        jax.block_until_ready((params, opt_state, loss))
        box[0] = (params, opt_state)

    return run


def mlp_variants(name: str, sizes, batch: int, with_torch: bool) -> dict[str, Callable]:
    model = mcjax.mlp_model(sizes, dtype=F32)
    opt = optax.adam(1e-3)
    copy = _initializer(model, opt)
    params = copy()[0]
    X, y = _data(1, sizes, batch)
    variants = {}
    for grad in mcjax.GRAD_SOURCES:
        step = mcjax.make_train_step(mcjax.objective(model, grad=grad), opt)
        variants[f"{name}: mcjax {grad}"] = _stepper(
            lambda p, s, b, step=step: step(p, s, b), copy(), (X, y))

    @jax.jit
    def plain_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(plain_jax_loss)(params, *batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    variants[f"{name}: plain JAX"] = _stepper(plain_step, copy(), (X, y))
    variants[f"{name}: matmul floor"] = _floor(sizes, batch)
    variants[f"{name}: matmul floor, in place"] = _floor(sizes, batch, in_place=True)
    variants[f"{name}: NumPy"] = numpy_step(params, np.asarray(X), np.asarray(y))
    if with_torch:
        variants[f"{name}: torch eager"] = torch_step(params, np.asarray(X), np.asarray(y))
    return variants


def _floor(sizes, batch, *, in_place: bool = False) -> Callable[[int], None]:
    """The step's matrix products alone: forward X W^T per layer; backward dZ^T A per layer
    and dZ W for every layer but the first (the input needs no gradient).

    ``in_place``: the previous products are donated (and unused), so that XLA writes the new
    ones into their buffers, as the training step writes into its donated parameters; a
    stricter floor than the plain jitted products, which allocate their outputs each call.
    """
    rng = np.random.default_rng(2)
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape, np.float32))  # noqa: E731
    layers = [(normal(batch, n), normal(m, n), normal(batch, m)) for n, m in zip(sizes, sizes[1:])]

    def products(layers, previous):
        del previous
        out = []
        for i, (A, W, dZ) in enumerate(layers):
            out.append(A @ W.T)          # forward
            out.append(dZ.T @ A)         # dL/dW
            if i > 0:
                out.append(dZ @ W)       # dL/dA of the layer below
        return out

    products = jax.jit(products, donate_argnums=1 if in_place else ())
    box = [[jnp.asarray(np.zeros(s.shape, s.dtype)) for s in jax.eval_shape(products, layers, None)]]

    def run(n):
        out = box[0]
        for _ in range(n):
            out = products(layers, out if in_place else None)
        box[0] = jax.block_until_ready(out)

    return run


def step_flops(sizes, batch) -> float:
    pairs = list(zip(sizes, sizes[1:]))
    return 2.0 * batch * (3 * sum(n * m for n, m in pairs) - pairs[0][0] * pairs[0][1])


def tiny_scan_variants(sizes, batch, steps) -> dict[str, Callable]:
    model = mcjax.mlp_model(sizes, dtype=F32)
    X, y = _data(3, sizes, batch * steps)
    opt = optax.adam(1e-3)
    epoch = mcjax.make_train_epoch(mcjax.objective(model, grad="autodiff"), opt,
                                   batch_size=batch, shuffle=False)
    key = jax.random.key(0)

    @jax.jit
    def plain_epoch(params, opt_state, X, y):
        def body(state, batch):
            params, opt_state = state
            loss, grads = jax.value_and_grad(plain_jax_loss)(params, *batch)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        batches = (X.reshape(steps, batch, -1), y.reshape(steps, batch))
        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), batches)
        return params, opt_state, losses

    fresh = _initializer(model, opt)
    return {
        "tiny scan: mcjax": _stepper(lambda p, s, d: epoch(p, s, d, key), fresh(), (X, y)),
        "tiny scan: plain JAX": _stepper(lambda p, s, d: plain_epoch(p, s, *d), fresh(), (X, y)),
    }


def square_matmul(n: int) -> Callable[[int], None]:
    rng = np.random.default_rng(4)
    a, b = (jnp.asarray(rng.standard_normal((n, n), np.float32)) for _ in range(2))
    mm = jax.jit(jnp.matmul)

    def run(k):
        for _ in range(k):
            c = mm(a, b)
        jax.block_until_ready(c)

    return run


def measure(variants: dict[str, Callable], *, rounds: int, sample_seconds: float) -> dict:
    """Median seconds per call of each variant, measured round-robin.

    Each timed sample is ``inner`` calls (about ``sample_seconds`` in all) after one untimed
    call, which absorbs what the previous variant left behind (threads of another runtime
    still spinning, caches holding other data).  The order is shuffled every round, so that
    no variant always runs after the same one.
    """
    inner = {}
    for name, run in variants.items():
        run(1)  # compile and warm up
        times = []
        for _ in range(3):
            tic = time.perf_counter()
            run(1)
            times.append(time.perf_counter() - tic)
        inner[name] = max(1, math.ceil(sample_seconds / max(float(np.median(times)), 1e-7)))
    samples = {name: [] for name in variants}
    names = list(variants)
    order = np.random.default_rng(0)
    for _ in range(rounds):
        # a new order every round: no variant always follows the same one
        for name in order.permutation(names):
            variants[name](1)
            tic = time.perf_counter()
            variants[name](inner[name])
            samples[name].append((time.perf_counter() - tic) / inner[name])
    return {name: {"median_s": float(np.median(s)), "min_s": float(np.min(s)),
                   "calls_per_sample": inner[name], "rounds": rounds, "samples_s": s}
            for name, s in samples.items()}


def paired_ratio(results: dict, a: str | list[str], b: str) -> float:
    """The median over rounds of (time of ``a``) / (time of ``b``) within the same round:
    a load that drifts during the run cancels out.  ``a`` may list variants, whose slowest
    counts in each round."""
    names = [a] if isinstance(a, str) else a
    top = np.max([results[n]["samples_s"] for n in names], axis=0)
    return float(np.median(top / np.asarray(results[b]["samples_s"])))


def compile_seconds(sizes, batch) -> float:
    model = mcjax.mlp_model(sizes, dtype=F32)
    opt = optax.adam(1e-3)
    step = mcjax.make_train_step(mcjax.objective(model, grad="analytic"), opt)
    lowered = step.lower(*_initializer(model, opt)(), _data(1, sizes, batch))
    tic = time.perf_counter()
    lowered.compile()
    return time.perf_counter() - tic


def _checks(results: dict, configs: dict, with_torch: bool) -> list[dict]:
    checks = []

    def check(what, label, value):
        op, bound = TARGETS[label]
        ok = value <= bound if op == "<=" else value >= bound
        checks.append({"check": what, "target": f"{op} {bound}", "value": value, "ok": ok})

    for cfg in configs:
        ours = {g: f"{cfg}: mcjax {g}" for g in mcjax.GRAD_SOURCES}
        if cfg == "big":
            for g, name in ours.items():
                check(f"big: mcjax {g} / matmul floor", "big step / matmul floor",
                      paired_ratio(results, name, "big: matmul floor"))
        for g, name in ours.items():
            check(f"{cfg}: mcjax {g} / plain JAX", "mcjax / plain JAX",
                  paired_ratio(results, name, f"{cfg}: plain JAX"))
        check(f"{cfg}: analytic / autodiff", "analytic / autodiff",
              paired_ratio(results, ours["analytic"], ours["autodiff"]))
        peers = ["NumPy"] + (["torch eager"] if with_torch else [])
        for peer, label in zip(peers, ("NumPy / mcjax", "torch eager / mcjax")):
            # against the slower of mcjax's two sources, round by round
            slower = 1.0 / paired_ratio(results, list(ours.values()), f"{cfg}: {peer}")
            check(f"{cfg}: {peer} / mcjax", label, slower)
    check("tiny scan: mcjax / plain JAX", "tiny scan: mcjax / plain JAX",
          paired_ratio(results, "tiny scan: mcjax", "tiny scan: plain JAX"))
    return checks


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.split("\n\n")[0], "bench_train")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved rounds of measurement (default 21; smoke 2)")
    p.add_argument("--sample-seconds", type=float, default=None,
                   help="the length of one timed sample (default 0.2 s; smoke 0.005 s)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    args = p.parse_args(argv)
    if args.smoke:
        configs = {"big": ((32, 64, 64, 10), 32), "small": ((16, 32, 32, 10), 16)}
        tiny, square, rounds, sample = ((4, 8, 2), 4, 16), 128, 2, 0.005
    else:
        configs = {"big": ((784, 1024, 1024, 10), 256), "small": ((64, 256, 256, 10), 128)}
        tiny, square, rounds, sample = ((8, 32, 32, 2), 16, 256), 2048, 21, 0.2
    rounds, sample = args.rounds or rounds, args.sample_seconds or sample
    with_torch = not args.no_torch and _torch_available()

    compile_s = {cfg: compile_seconds(*configs[cfg]) for cfg in configs}
    variants = {"square matmul": square_matmul(square)}
    for cfg, (sizes, batch) in configs.items():
        variants.update(mlp_variants(cfg, sizes, batch, with_torch))
    variants.update(tiny_scan_variants(*tiny))
    results = measure(variants, rounds=rounds, sample_seconds=sample)
    # the tiny epoch's time per step; the square matmul's rate is the peak
    for name in ("tiny scan: mcjax", "tiny scan: plain JAX"):
        results[name]["median_s"] /= tiny[2]
        results[name]["min_s"] /= tiny[2]
    peak = 2.0 * square**3 / results["square matmul"]["median_s"]
    for cfg, (sizes, batch) in configs.items():
        for name, r in results.items():
            if name.startswith(f"{cfg}: "):
                r["vs_floor"] = paired_ratio(results, name, f"{cfg}: matmul floor")
                r["vs_floor_in_place"] = paired_ratio(results, name,
                                                      f"{cfg}: matmul floor, in place")
                # the step's rate over the square matmul's rate, in the same round
                r["fraction_of_peak"] = step_flops(sizes, batch) / (2.0 * square**3) / \
                    paired_ratio(results, name, "square matmul")
    checks = _checks(results, configs, with_torch)

    record = {
        "experiment": "bench_train", "smoke": args.smoke, "dtype": "float32",
        "optimizer": "adam", "loss": "softmax_cross_entropy",
        "configs": {c: {"sizes": list(s), "batch": b, "step_gflop": step_flops(s, b) / 1e9}
                    for c, (s, b) in configs.items()},
        "tiny_scan": {"sizes": list(tiny[0]), "batch": tiny[1], "steps_per_epoch": tiny[2]},
        "square_matmul": {"n": square, "gflops": peak / 1e9},
        "compile_seconds_first_step": compile_s,
        "torch": with_torch, "results": results, "checks": checks,
        "machine": _common.machine(),
    }
    _common.write_json(args.out, "results.json", record)
    _plot(results, configs, args.out)
    rows = [[name, 1e3 * r["median_s"], r.get("vs_floor", ""), r.get("vs_floor_in_place", ""),
             r.get("fraction_of_peak", "")] for name, r in results.items()]
    _common.print_table(
        f"training step, float32, Adam, on {_common.machine()['device']} "
        f"(square {square}x{square} matmul: {peak / 1e9:.1f} GFLOP/s)",
        ["variant", "ms / step", "x matmul floor", "x floor in place", "fraction of peak"], rows)
    _common.print_table("targets", ["check", "target", "value", "ok"],
                        [[c["check"], c["target"], c["value"], "yes" if c["ok"] else "NO"]
                         for c in checks])
    print("first-step compile (s): " + ", ".join(f"{c} {s:.2f}" for c, s in compile_s.items()))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'bench_train.png'}")
    return 0


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _plot(results: dict, configs: dict, out) -> None:
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 3.6))
    for ax, cfg in zip(np.atleast_1d(axes), configs):
        names = [n for n in results if n.startswith(f"{cfg}: ")]
        values = [1e3 * results[n]["median_s"] for n in names]
        colors = ["tab:gray" if "floor" in n else "tab:blue" if "mcjax" in n else "tab:orange"
                  for n in names]
        ax.barh([n.split(": ", 1)[1] for n in names], values, color=colors)
        ax.set(xscale="log", xlabel="ms per step (median, log scale)", title=f"MLP {'-'.join(map(str, configs[cfg][0]))}, "
                                                    f"batch {configs[cfg][1]}")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out / "bench_train.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
