"""What the experiment scripts share: their command line, their outputs and their tables.

Every script has ``--help``, ``--smoke`` (a size that runs in seconds; the tests run it),
``--out DIR`` (receives ``metrics.json`` or ``results.json`` and PNG plots) and ``--seed``,
and prints a short summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path


def parser(description: str, name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes that run in seconds (what the tests run)")
    p.add_argument("--out", type=Path, default=Path("runs") / name, metavar="DIR",
                   help=f"where to write the JSON and the plots (default runs/{name})")
    p.add_argument("--seed", type=int, default=0, help="seed of data, parameters and shuffling")
    return p


def machine() -> dict:
    import jax

    return {"device": str(jax.devices()[0]), "platform": platform.platform(),
            "processor": _cpu_name(),
            "cpu_count": os.cpu_count(), "jax": jax.__version__}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if c != columns[0] else "left")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    Console(width=120).print(table)
