"""What the experiment scripts share: their command line, their outputs and their tables.

Every script has ``--help``, ``--smoke`` (a size that runs in seconds; the tests run it),
``--out DIR`` (receives ``metrics.json`` or ``results.json`` and PNG plots) and ``--seed``,
and prints a short summary table.

The benchmarks share one way of timing (:func:`measure`: interleaved rounds, an untimed call
before each sample, ratios paired within a round, medians over rounds) and one description of
the machine (:func:`machine`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def out_folder(text: str) -> Path:
    """An argparse type for ``--out``: a folder, or a path where one can be made (checked
    before the experiment runs, not when its results are written at the end)."""
    path = existing = Path(text)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text}: {existing} is a file; expected a folder, or a path where one can be made")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: {existing} is not writable; expected a "
                                         "folder this process may write")
    return path


def parser(description: str, name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes that run in seconds (what the tests run)")
    p.add_argument("--out", type=out_folder, default=Path("runs") / name, metavar="DIR",
                   help=f"where to write the JSON and the plots (default runs/{name})")
    p.add_argument("--seed", type=int, default=0, help="seed of data, parameters and shuffling")
    return p


def machine() -> dict:
    """The one description of the machine a result was measured on, in every results file.

    ``cores`` counts the cores this process may run on (a container or ``taskset`` may allow
    fewer than the machine has); ``load_average`` is the 1-minute load when the description
    was taken, so that a number measured on a busy machine says so.
    """
    import jax

    device = jax.devices()[0]
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count())
    return {"cpu": _cpu_name(), "cores": cores, "platform": platform.platform(),
            "python": platform.python_version(), "jax": jax.__version__,
            "device": f"{device.platform}: {device.device_kind}",
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def describe_machine(m: dict) -> str:
    """``machine()`` in one line, for titles and tables."""
    return f"{m['cpu']}, {m['cores']} cores, {m['device']}, jax {m['jax']}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- the one timing harness ------------------------------------------------------------------
#: ``run(n)`` makes n calls of the thing measured and returns once their results are ready.
Run = Callable[[int], None]


def calls(fn: Callable, *args) -> Run:
    """``run(n)``: n calls of ``fn(*args)``, blocking on every result.

    For a variant that threads state from call to call (a training step), write ``run(n)``
    by hand instead: n calls, then one block on the last result.
    """
    import jax

    def run(n: int) -> None:
        for _ in range(n):
            jax.block_until_ready(fn(*args))

    return run


def measure(variants: dict[str, Run], *, rounds: int, sample_seconds: float,
            calls_per_sample: dict[str, int] | None = None, slow_s: float = 1.0,
            slow_rounds: int = 3, seed: int = 0) -> dict[str, dict]:
    """Seconds per call of every variant, measured in interleaved rounds.

    Every variant is called once untimed first (it compiles and warms up), then timed for
    a few calls to choose ``calls_per_sample``: enough calls that one sample lasts about
    ``sample_seconds`` (``calls_per_sample`` fixes it by name instead).  Then, ``rounds``
    times, every variant in a new random order takes one sample: one untimed call, which
    absorbs what the previous variant left behind (threads of another runtime still
    spinning, caches holding other data), then ``calls_per_sample`` timed calls.  A noisy
    neighbour therefore slows all variants of a round alike, and :func:`paired_ratio`
    divides within a round.  A variant slower than ``slow_s`` per call takes part in the
    first ``slow_rounds`` rounds only, so that a slow one does not hold up a benchmark.

    Returns, per variant: ``median_s`` and ``min_s`` (seconds per call over its samples),
    ``calls_per_sample``, ``rounds`` (its samples) and ``samples_s`` (one per round, in
    round order).
    """
    fixed = calls_per_sample or {}
    inner, per_call = {}, {}
    for name, run in variants.items():
        run(1)  # compile and warm up
        times = []
        for _ in range(3):
            tic = time.perf_counter()
            run(1)
            times.append(time.perf_counter() - tic)
        per_call[name] = statistics.median(times)
        inner[name] = fixed.get(name) or max(1, math.ceil(sample_seconds / max(per_call[name], 1e-7)))
    rounds_of = {name: rounds if per_call[name] < slow_s else min(rounds, slow_rounds)
                 for name in variants}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    order = random.Random(seed)
    for r in range(rounds):
        names = [name for name in variants if r < rounds_of[name]]
        order.shuffle(names)  # no variant always follows the same one
        for name in names:
            variants[name](1)
            tic = time.perf_counter()
            variants[name](inner[name])
            samples[name].append((time.perf_counter() - tic) / inner[name])
    return {name: {"median_s": statistics.median(s), "min_s": min(s),
                   "calls_per_sample": inner[name], "rounds": len(s), "samples_s": s}
            for name, s in samples.items()}


def square_matmul(n: int, seed: int = 4) -> Run:
    """``run(k)``: k float32 products of two n x n matrices; ``2 n^3`` flops each, so its
    rate is the machine's matmul peak in the same run."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)
    a, b = (jnp.asarray(rng.standard_normal((n, n), np.float32)) for _ in range(2))
    mm = jax.jit(jnp.matmul)

    def run(k: int) -> None:
        for _ in range(k):
            c = mm(a, b)
        jax.block_until_ready(c)

    return run


def step_flops(sizes, batch: int) -> float:
    """Matmul flops of one MLP training step: forward X W^T per layer, backward dZ^T A per
    layer and dZ W for every layer but the first (the input needs no gradient)."""
    pairs = list(zip(sizes, sizes[1:]))
    return 2.0 * batch * (3 * sum(n * m for n, m in pairs) - pairs[0][0] * pairs[0][1])


def paired_ratio(results: dict[str, dict], a: str | list[str], b: str) -> float:
    """The median over rounds of (time of ``a``) / (time of ``b``) within the same round: a
    load that drifts during the run cancels out.  ``a`` may list variants, whose slowest
    counts in each round.  Only the rounds that all of them took part in count."""
    names = [a] if isinstance(a, str) else list(a)
    series = [results[n]["samples_s"] for n in names] + [results[b]["samples_s"]]
    k = min(len(s) for s in series)
    return statistics.median(max(s[i] for s in series[:-1]) / series[-1][i] for i in range(k))


def torch_available() -> bool:
    """Whether PyTorch is installed (an optional peer of the benchmarks)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def write_json(out: Path, name: str, record: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def pyplot():
    """matplotlib's pyplot drawing to files only (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, *, legends=()) -> Path:
    """Give each axis in ``legends`` a legend and a light grid, then write ``fig`` to ``path``."""
    for ax in legends:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def fmt_time(s: float | None) -> str:
    """Seconds in s, ms or µs, three digits; "–" for a time not measured."""
    if s is None:
        return "–"
    return f"{s * 1e6:.3g} µs" if s < 1e-3 else f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def fmt_bytes(b: float) -> str:
    """Bytes in B, KiB, MiB or GiB, three digits."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{int(b)} B"


def fmt_ratio(r: float | None) -> str:
    """A ratio as ``12x`` (or ``1.5x`` below 10); "–" for none."""
    return "–" if r is None else f"{r:,.0f}x" if r >= 10 else f"{r:.2g}x"


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if c != columns[0] else "left")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    Console(width=120).print(table)
