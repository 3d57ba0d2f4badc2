"""What does data parallelism cost per step? The same training step on 1, 2 and 4 devices.

For an MLP 64-256-256-10 (batch 128, softmax cross-entropy, Adam, float32) it times one
data-parallel step (``mcjax.steps.make_train_step(..., mesh=...)``, the batch split along
``"data"``; each step waits for its result, as mcjax's step does on a CPU mesh) and one step
inside a compiled epoch (``make_train_epoch``, ``lax.scan``) on 1, 2
and 4 CPU devices forced with ``XLA_FLAGS=--xla_force_host_platform_device_count=D``.  The
flag is read when JAX starts, so each device count runs in a process of its own (passes in
the order 1 2 4 4 2 1, so that a noisy neighbour slows them alike).  Forced CPU devices share
the machine's cores: this measures the *overhead* of splitting the batch and all-reducing the
gradient, not a speed-up.  Each process also trains 20 steps from the same seed on the same
batches; the largest parameter difference from the 1-device run is reported with the bound
of ``mcjax._core._conventions.data_parallel_tolerance``.  Within a process the step and the scanned
epoch are timed by the experiments' one harness (``_common.measure``: interleaved rounds,
an untimed call before each sample).

Where JAX's default backend is a GPU (or TPU), it also times the single-device steps of
``bench_train``'s shapes (MLP 784-1024-1024-10 batch 256 and 64-256-256-10 batch 128, Adam,
float32) against an in-run square matmul: the accelerator's peak in the same run.

    python experiments/bench_scaling.py --out runs/bench_scaling
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

CPU_CONFIG = {"sizes": (64, 256, 256, 10), "batch": 128}
SMOKE_CPU_CONFIG = {"sizes": (8, 16, 4), "batch": 8}
GPU_CONFIGS = {"big": ((784, 1024, 1024, 10), 256), "small": ((64, 256, 256, 10), 128)}
SMOKE_GPU_CONFIGS = {"small": ((16, 32, 10), 16)}
ACCURACY_STEPS = 20


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes in one 4-device process (what the tests run); measures "
                        "nothing worth reporting")
    p.add_argument("--out", type=_common.out_folder, default=Path("runs") / "bench_scaling",
                   metavar="DIR",
                   help="where to write results.json and bench_scaling.png "
                        "(default runs/bench_scaling)")
    p.add_argument("--seed", type=int, default=0, help="seed of data and parameters (default 0)")
    p.add_argument("--devices", default="1,2,4", metavar="D,D,...",
                   help="forced CPU device counts (default 1,2,4)")
    p.add_argument("--rounds", type=int, default=None,
                   help="timed samples per device count and pass (default 15; smoke 2)")
    p.add_argument("--steps", type=int, default=None,
                   help="steps per timed sample (default 50; smoke 2)")
    p.add_argument("--passes", type=int, default=None,
                   help="processes per device count, run 1 2 4 4 2 1 ... (default 2; smoke 1)")
    p.add_argument("--no-accelerator", action="store_true",
                   help="skip the single-GPU/TPU figures even if JAX finds an accelerator")
    # the parent starts itself as a worker for each device count
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--counts", default=None, help=argparse.SUPPRESS)
    return p


# -- the worker: runs inside a process with forced CPU devices --------------------------------
def _measure_count(count: int, config: dict, args, params_out: Path) -> dict:
    import jax
    import numpy as np
    import optax

    import mcjax

    sizes, batch = config["sizes"], config["batch"]
    mesh = mcjax.sharding.data_mesh(count)
    model = mcjax.mlp_model(sizes)
    opt = optax.adam(1e-3)
    loss = mcjax.objective(model, grad="analytic")
    rng = np.random.default_rng(args.seed)
    n_batches = max(ACCURACY_STEPS, args.steps)
    X = rng.standard_normal((n_batches * batch, sizes[0])).astype(np.float32)
    Y = rng.integers(0, sizes[-1], n_batches * batch).astype(np.int32)
    batches = [mcjax.sharding.shard_batch((X[i * batch:(i + 1) * batch], Y[i * batch:(i + 1) * batch]),
                                 mesh) for i in range(n_batches)]
    init = jax.jit(model.init)(jax.random.key(args.seed))

    def fresh():
        return mcjax.sharding.replicate((init, opt.init(init)), mesh)

    step = mcjax.steps.make_train_step(loss, opt, mesh=mesh)
    tic = time.perf_counter()
    compiled = step.lower(*fresh(), batches[0]).compile()
    compile_s = time.perf_counter() - tic

    # the same 20 steps as every other device count: the accuracy figure
    params, opt_state = fresh()
    for b in batches[:ACCURACY_STEPS]:
        params, opt_state, _ = compiled(params, opt_state, b)
    leaves = jax.tree.leaves(jax.device_get(params))
    np.savez(params_out, *leaves)

    state = list(fresh())

    def run_steps(n):
        # one step in flight, on every device count alike: XLA:CPU can deadlock with two
        # collective programs in flight (see mcjax._train._sharding._DataParallel)
        params, opt_state = state
        for i in range(n):
            params, opt_state, metrics = jax.block_until_ready(
                compiled(params, opt_state, batches[i % n_batches]))
        state[:] = params, opt_state

    epoch = mcjax.steps.make_train_epoch(loss, opt, batch_size=batch, shuffle=False, mesh=mesh)
    data = mcjax.sharding.replicate((X[: args.steps * batch], Y[: args.steps * batch]), mesh)
    key = mcjax.sharding.replicate(jax.random.key(0), mesh)
    epoch_compiled = epoch.lower(*fresh(), data, key).compile()
    epoch_state = list(fresh())

    def run_epochs(n):  # n epochs of args.steps steps each
        params, opt_state = epoch_state
        for _ in range(n):
            params, opt_state, metrics = epoch_compiled(params, opt_state, data, key)
        jax.block_until_ready(metrics)
        epoch_state[:] = params, opt_state

    # a sample is args.steps steps either way: that many calls of the step, one epoch
    timed = _common.measure({"step": run_steps, "scan": run_epochs}, rounds=args.rounds,
                            sample_seconds=0.0,
                            calls_per_sample={"step": args.steps, "scan": 1}, seed=args.seed)
    return {
        "step_s": timed["step"]["median_s"],
        "scan_step_s": timed["scan"]["median_s"] / args.steps,
        "compile_s": compile_s,
        "all_reduces": compiled.as_text().count("all-reduce("),
    }


def _worker(args) -> int:
    import jax

    config = SMOKE_CPU_CONFIG if args.smoke else CPU_CONFIG
    out = {"cpu_devices": jax.device_count(), "counts": {}}
    for count in (int(c) for c in args.counts.split(",")):
        params_out = args.worker.with_name(f"{args.worker.stem}-params-{count}.npz")
        out["counts"][count] = {**_measure_count(count, config, args, params_out),
                                "params": str(params_out)}
    args.worker.write_text(json.dumps(out))
    return 0


# -- the accelerator: in the parent, on JAX's default backend ------------------------------------
def _accelerator(args) -> dict | None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import mcjax

    backend = jax.default_backend()
    # the smoke run exercises this code on any backend, CPU included; it measures nothing
    if args.no_accelerator or (backend == "cpu" and not args.smoke):
        return None
    configs = SMOKE_GPU_CONFIGS if args.smoke else GPU_CONFIGS
    n = 256 if args.smoke else 8192
    variants, steps = {"square matmul": _common.square_matmul(n, seed=1)}, {}
    for name, (sizes, batch) in configs.items():
        model = mcjax.mlp_model(sizes)
        opt = optax.adam(1e-3)
        rng = np.random.default_rng(args.seed)
        b = (jnp.asarray(rng.standard_normal((batch, sizes[0])), jnp.float32),
             jnp.asarray(rng.integers(0, sizes[-1], batch), jnp.int32))
        init = jax.jit(model.init)(jax.random.key(args.seed))
        for grad in mcjax.steps.GRAD_SOURCES:
            step = mcjax.steps.make_train_step(mcjax.objective(model, grad=grad), opt)
            state = [jax.tree.map(jnp.copy, init), opt.init(init)]

            def run(k, step=step, state=state, b=b):
                params, opt_state = state
                for _ in range(k):
                    params, opt_state, metrics = step(params, opt_state, b)
                jax.block_until_ready(metrics)
                state[:] = params, opt_state

            variants[f"{name} {grad}"] = run
            steps[f"{name} {grad}"] = (sizes, batch, grad)
    # the steps and the matmul side by side, round after round: the fraction is paired
    timed = _common.measure(variants, rounds=args.rounds, sample_seconds=0.0,
                            calls_per_sample=dict.fromkeys(variants, args.steps),
                            seed=args.seed)
    peak = 2.0 * n**3 / timed["square matmul"]["median_s"]
    out = {"device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind,
           "backend": backend,
           "square_matmul": {"n": n, "tflops": peak / 1e12}, "configs": {}}
    for label, (sizes, batch, grad) in steps.items():
        seconds, flops = timed[label]["median_s"], _common.step_flops(sizes, batch)
        out["configs"][label] = {
            "sizes": list(sizes), "batch": batch, "grad": grad, "step_s": seconds,
            "tflops": flops / seconds / 1e12,
            "fraction_of_peak": flops / (2.0 * n**3)
            / _common.paired_ratio(timed, label, "square matmul")}
    return out


# -- the parent ----------------------------------------------------------------------------------
def _run_workers(args, counts: list[int], tmp: Path) -> list[dict]:
    """One process per device count and pass (smoke: one process for all counts)."""
    import mcjax

    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(Path(mcjax.__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    forwarded = ["--seed", str(args.seed), "--rounds", str(args.rounds), "--steps",
                 str(args.steps)] + (["--smoke"] if args.smoke else [])
    if args.smoke:
        jobs = [(max(counts), counts)]
    else:
        order = counts + counts[::-1]
        jobs = [(c, [c]) for _, c in zip(range(args.passes * len(counts)), order * args.passes)]
    results = []
    for i, (devices, job_counts) in enumerate(jobs):
        result = tmp / f"worker{i}.json"
        done = subprocess.run(
            [sys.executable, __file__, "--worker", str(result),
             "--counts", ",".join(map(str, job_counts)), *forwarded],
            env={**env, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"
                 # the smoke run measures nothing: compile without LLVM optimisation, faster
                 + (" --xla_backend_optimization_level=0" if args.smoke else "")},
            capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"bench_scaling: the worker on {devices} devices failed:\n"
                             f"{done.stderr[-4000:]}")
        results.append(json.loads(result.read_text()))
    return results


def _summarise(worker_results: list[dict], counts: list[int]) -> dict:
    import jax.numpy as jnp
    import numpy as np

    from mcjax._core._conventions import data_parallel_tolerance

    by_count: dict[int, list[dict]] = {c: [] for c in counts}
    for r in worker_results:
        for c, v in r["counts"].items():
            by_count[int(c)].append(v)
    def leaves(path):  # np.savez(*leaves) names them arr_0, arr_1, ...
        with np.load(path) as f:
            return [f[f"arr_{i}"] for i in range(len(f.files))]

    # every process of one count trains the same 20 steps: the first one's will do
    params = {c: leaves(runs[0]["params"]) for c, runs in by_count.items()}
    base = min(counts)
    scale = max(float(np.max(np.abs(p))) for p in params[base])
    tol = data_parallel_tolerance(jnp.float32, ACCURACY_STEPS)
    out = {}
    for c, runs in by_count.items():
        step = statistics.median(r["step_s"] for r in runs)
        scan = statistics.median(r["scan_step_s"] for r in runs)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(params[c], params[base]))
        out[c] = {"step_ms": 1e3 * step, "scan_step_ms": 1e3 * scan,
                  "compile_s": statistics.median(r["compile_s"] for r in runs),
                  "all_reduces_in_step": runs[0]["all_reduces"], "processes": len(runs),
                  "max_param_diff_vs_1": diff, "bound": tol.atol + tol.rtol * scale}
    for c, v in out.items():
        v["step_overhead_ms_vs_1"] = v["step_ms"] - out[base]["step_ms"]
        v["step_ratio_vs_1"] = v["step_ms"] / out[base]["step_ms"]
        v["scan_overhead_ms_vs_1"] = v["scan_step_ms"] - out[base]["scan_step_ms"]
        v["scan_ratio_vs_1"] = v["scan_step_ms"] / out[base]["scan_step_ms"]
    return out


def _plot(cpu: dict, out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted(cpu)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(counts, [cpu[c]["step_ms"] for c in counts], "o-", label="jitted step")
    ax.plot(counts, [cpu[c]["scan_step_ms"] for c in counts], "s-", label="step inside lax.scan")
    ax.set(xlabel="forced CPU devices (sharing the same cores)", ylabel="ms per step (median)",
           xticks=counts, title=title)
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    path = out / "bench_scaling.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _print_tables(record: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    cfg = record["cpu_config"]
    table = Table(title=f"data-parallel step, MLP {'-'.join(map(str, cfg['sizes']))}, batch "
                        f"{cfg['batch']}, Adam, float32, on forced CPU devices sharing "
                        f"{record['machine']['cores']} cores")
    for c in ("devices", "ms/step", "+ms vs 1", "x 1", "ms/step in scan", "x 1 (scan)",
              "all-reduces", f"max|Δθ| vs 1, {ACCURACY_STEPS} steps", "bound"):
        table.add_column(c, justify="right")
    for c, v in sorted(record["cpu"].items(), key=lambda kv: int(kv[0])):
        table.add_row(str(c), f"{v['step_ms']:.3f}", f"{v['step_overhead_ms_vs_1']:+.3f}",
                      f"{v['step_ratio_vs_1']:.2f}", f"{v['scan_step_ms']:.3f}",
                      f"{v['scan_ratio_vs_1']:.2f}", str(v["all_reduces_in_step"]),
                      f"{v['max_param_diff_vs_1']:.2g}", f"{v['bound']:.2g}")
    console.print(table)
    acc = record["accelerator"]
    if acc is None:
        console.print(f"accelerator: {record['accelerator_note']}")
        return
    table = Table(title=f"one {acc['device_kind']}: {acc['square_matmul']['n']}² float32 "
                        f"matmul peak {acc['square_matmul']['tflops']:.1f} TFLOP/s in this run")
    for c in ("MLP", "batch", "grad", "ms / step", "TFLOP/s", "fraction of peak"):
        table.add_column(c, justify="right")
    for v in acc["configs"].values():
        table.add_row("-".join(map(str, v["sizes"])), str(v["batch"]), v["grad"],
                      f"{1e3 * v['step_s']:.3f}", f"{v['tflops']:.2f}",
                      f"{v['fraction_of_peak']:.2f}")
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.rounds = args.rounds or (2 if args.smoke else 15)
    args.steps = args.steps or (2 if args.smoke else 50)
    args.passes = args.passes or (1 if args.smoke else 2)
    if args.worker is not None:
        return _worker(args)
    counts = sorted({int(c) for c in args.devices.split(",")})
    config = SMOKE_CPU_CONFIG if args.smoke else CPU_CONFIG
    for c in counts:
        if config["batch"] % c:
            raise SystemExit(f"bench_scaling: batch {config['batch']} does not divide among "
                             f"{c} devices")
    with tempfile.TemporaryDirectory() as tmp:
        cpu = _summarise(_run_workers(args, counts, Path(tmp)), counts)
    import jax

    accelerator = _accelerator(args)
    record = {
        "experiment": "bench_scaling", "smoke": args.smoke, "seed": args.seed,
        "cpu_config": {"sizes": list(config["sizes"]), "batch": config["batch"],
                       "optimizer": "adam", "dtype": "float32", "grad": "analytic"},
        "protocol": {"rounds": args.rounds, "steps_per_sample": args.steps,
                     "processes_per_count": 1 if args.smoke else args.passes,
                     "statistic": "median over samples, then over processes"},
        "note": "forced CPU devices share the machine's cores: the times measure the overhead "
                "of splitting the batch and all-reducing the gradient, not a speed-up",
        "cpu": {str(c): v for c, v in cpu.items()},
        "accelerator": accelerator,
        "accelerator_note": (None if accelerator else
                             "skipped (--no-accelerator)" if args.no_accelerator else
                             f"none: JAX's default backend is {jax.default_backend()}"),
        "machine": _common.machine(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    title = f"MLP {'-'.join(map(str, config['sizes']))}, batch {config['batch']}"
    png = _plot(cpu, args.out, title)
    _print_tables(record)
    print(f"wrote {args.out / 'results.json'} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
