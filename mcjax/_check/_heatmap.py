"""The heatmap of a full-mode check: expected, got and their difference side by side, the
pytree leaves of the output and of the argument named along the axes.

matplotlib is an optional dependency (``pip install 'mcjax[plot]'``), imported only when a
heatmap is drawn.
"""

from __future__ import annotations

import numpy as np


def draw(matrices: dict, title: str, wrt: str, path=None):
    """Draw ``matrices["expected"]`` and ``matrices["got"]`` (``(m, n)``: rows the output's
    entries, columns the argument's, flat and row-major inside each leaf) and their difference.

    Args:
      matrices: ``expected``, ``got``, and the leaves along each axis, ``rows`` and
        ``columns``: ``(label, shape, size)`` each (``FlatSpec.leaves``); one leaf named
        ``out`` and ``wrt`` where they are missing.
      title: the figure's title (``d f / d params: FAIL``).
      wrt: the differentiated argument, as ``f`` names it, for the columns' axis.
      path: where to save the PNG; None to only return the figure.

    Returns:
      The matplotlib ``Figure``.

    Raises:
      ImportError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("mcjax.Report.heatmap needs matplotlib: pip install 'mcjax[plot]'") from e
    expected, got = matrices["expected"], matrices["got"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    limit = float(np.nanmax(np.abs(np.concatenate([expected.ravel(), got.ravel()])))) or 1.0
    panels = (("expected (reference)", expected, limit), ("got (derivative under test)", got, limit),
              ("got - expected", got - expected, None))
    rows = matrices.get("rows", (("out", (expected.shape[0],), expected.shape[0]),))
    columns = matrices.get("columns", ((wrt, (expected.shape[1],), expected.shape[1]),))
    for ax, (name, values, lim) in zip(axes, panels):
        lim = lim or float(np.nanmax(np.abs(values))) or 1.0
        image = ax.imshow(values, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto",
                          interpolation="nearest")
        ax.set_title(name)
        _name_leaves(ax, "x", columns, f"d / d {wrt}")
        _name_leaves(ax, "y", rows, "d out")
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


LABELLED_LEAVES = 16
"""Up to this many leaves along an axis of the heatmap are named; more are only separated."""


def _name_leaves(ax, axis: str, leaves, what: str) -> None:
    """Name the pytree leaves along one axis of a heatmap panel (``axis`` ``"x"``: the
    argument's, ``"y"``: the output's): a line between two leaves and each leaf's label and
    shape at its middle; for one leaf, its label and shape in the axis title.  Entries run
    flat, row-major inside each leaf."""
    set_title = ax.set_xlabel if axis == "x" else ax.set_ylabel
    if len(leaves) == 1:
        label, shape, _ = leaves[0]
        named = what if what.endswith(label) else f"{what}: {label}"  # a bare array: named once
        set_title(f"{named}, shape {tuple(shape)} (flat, row-major)")
        return
    edges = np.cumsum([0] + [size for _, _, size in leaves]) - 0.5
    for edge in edges[1:-1]:
        (ax.axvline if axis == "x" else ax.axhline)(edge, color="black", linewidth=0.8)
    if len(leaves) <= LABELLED_LEAVES:
        centres = (edges[:-1] + edges[1:]) / 2
        names = [f"{label} {tuple(shape)}" for label, shape, _ in leaves]
        if axis == "x":
            ax.set_xticks(centres, names, rotation=30, ha="right", fontsize="small")
        else:
            ax.set_yticks(centres, names, fontsize="small")
    set_title(f"{what}: {len(leaves)} leaves (each flat, row-major)")
