"""The report of ``mcjax.check``: a verdict a person reads, and the numbers behind it.

``str(report)`` is the readable verdict: a summary line, the thresholds used, one line per
reference, the Taylor test, kinks, a small table of the worst entries and the diagnosis;
``repr(report)`` its one line (``Report(FAIL: d f / d params by df; ...; diagnosis: ...)``);
in a notebook the report shows itself as HTML, its verdict first.
``report.heatmap()`` draws expected, got and their difference for a small Jacobian
(matplotlib, imported only then: ``pip install 'mcjax[plot]'``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mcjax._check import _view
from mcjax._check._compare import Comparison, Entry, Threshold
from mcjax._check._problem import Prepared, name_of
from mcjax._check._taylor import Taylor


@dataclass(frozen=True)
class KinkEntry:
    """One entry at a kink: what JAX, the one-sided derivatives and the derivative give."""

    label: str
    jax: float
    left: float
    right: float
    got: float
    conventions: tuple[str, ...]  # the accepted values the derivative matches


@dataclass(frozen=True)
class Kinks:
    """Entries where ``f`` is not differentiable at the point, read from its jaxpr."""

    at: int  # entries whose one-sided derivatives differ
    jumps: int  # entries where f jumps (a discontinuity): only JAX's value is accepted
    followed: tuple[str, ...]  # conventions every kink entry agrees with
    asked: str | None
    entries: tuple[KinkEntry, ...]  # a few, for the report
    ok: bool
    note: str


@dataclass(frozen=True)
class Slip:
    """A slip the diagnosis named: its kind (for programs) and the sentence (for people).

    The kinds: ``"sign"``, ``"factor"`` (the whole derivative), ``"leaf-sign"``,
    ``"leaf-factor"`` (one leaf of a pytree), ``"transposed"``, ``"wrong-argument"``,
    ``"nonfinite"``; planted in ``f`` (``mcjax._check._slips``): ``"missing-term"``,
    ``"sign-in-term"``, ``"missing-factor"``, ``"other-branch"``, ``"missing-gate"``,
    ``"sign-dropped"``, ``"value-for-derivative"``, ``"neighbour-derivative"``,
    ``"before-transform"``, ``"count-off-by-one"``, ``"not-transposed"``,
    ``"kernel-not-flipped"``, ``"padding-off"``, ``"tap-missing"``; from the structure alone:
    ``"dense-for-diagonal"``, ``"diagonal-for-dense"``, ``"low-rank"``; and ``"incomplete"``
    (last) where the slips could not be planted in ``f``, with the reason."""

    kind: str
    sentence: str


@dataclass(frozen=True)
class Projection:
    """Fast mode: one projection ``u^T J v`` at one point."""

    point: int
    direction: int
    expected: float
    got: float
    allowed: float

    @property
    def ok(self) -> bool:
        return abs(self.got - self.expected) <= self.allowed


class Later:
    """A field of a ``mcjax.Report`` computed when first read: the diagnosis traces variants of
    ``f``, work worth doing only for a report somebody reads (``check_cases`` of many failing
    points, a test that asks ``.ok``).  ``compute`` returns every lazy field at once, as a
    dict, and runs once for all the fields made together."""

    def __init__(self, name: str, compute):
        self.name, self.compute = name, compute

    @staticmethod
    def fields(compute, *names: str) -> dict:
        once = functools.cache(compute)
        return {name: Later(name, once) for name in names}

    def resolve(self):
        return self.compute()[self.name]

    def __reduce__(self):  # a report sent to another process carries the value
        return (tuple, (tuple(self.resolve()),))


@dataclass(frozen=True)
class Report:
    """The verdict of ``mcjax.check`` on one derivative.

    Attributes:
      ok: whether the derivative passed every check.
      function, derivative: the names of ``f`` and the derivative under test.
      wrt: which argument, as ``f`` names it (``"params"``; ``"args[0]"`` where ``f`` names
        none: a builtin, ``*args``), or arguments (``"(W, b)"``).
      shapes: ``f``'s argument and output, in words.
      mode: ``"full"`` (the Jacobian materialised) or ``"fast"`` (random projections).
      points: how many points were checked.
      threshold: the thresholds used (``Threshold``).
      comparisons: one per reference, worst over the points.
      taylor: the Taylor-remainder test (full mode), or None.
      kinks: the entries at kinks of ``f`` and the values accepted there (full mode), or None.
      projections: fast mode's ``u^T J v``.
      worst: the worst entries of a failing check.
      diagnosis: the usual slips that explain the failure, as sentences.
      slips: the same as ``Slip`` records (kind and sentence).
      where: which leaves, rows and columns hold the wrong entries.
      problems: other reasons for failing (NaN or Inf, ...).
      notes: what the reader should know (reference precision, ...).
      links: for a chain, each link's own report (``mcjax.check_chain``).
      parts: for a custom rule, each direction's own report (``"JVP"``, ``"VJP"``,
        ``mcjax.check_rule``).
    """

    ok: bool
    function: str
    derivative: str
    wrt: str
    shapes: str
    dtype: str
    mode: str
    points: int
    threshold: Threshold
    comparisons: tuple[Comparison, ...] = ()
    taylor: Taylor | None = None
    kinks: Kinks | None = None
    projections: tuple[Projection, ...] = ()
    worst: tuple[Entry, ...] = ()
    diagnosis: tuple[str, ...] = ()
    slips: tuple[Slip, ...] = ()
    where: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    links: tuple[tuple[str, "Report"], ...] = ()
    parts: tuple[tuple[str, "Report"], ...] = ()
    matrices: dict = field(default_factory=dict, repr=False, compare=False)

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        if type(value) is Later:
            value = value.resolve()
            object.__setattr__(self, name, value)
        return value

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return render(self)

    def __repr__(self) -> str:
        """One line: the verdict, what failed and the first diagnosis (``str`` is the whole)."""
        return _view.short(self)

    def _repr_html_(self) -> str:
        """A notebook's view: the verdict first, then the comparisons and the diagnosis."""
        return _view.page(self)

    def as_dict(self) -> dict[str, Any]:
        """Everything but the matrices, as JSON-ready Python values."""
        out = asdict(self)
        out.pop("matrices")
        out["links"] = [{"link": name, **r.as_dict()} for name, r in self.links]
        out["parts"] = [{"part": name, **r.as_dict()} for name, r in self.parts]
        finite = _finite(out)
        assert isinstance(finite, dict)
        return finite

    def heatmap(self, path=None):
        """Expected, got and their difference side by side (full mode, small Jacobians).

        Rows are the output's entries, columns the argument's, flat and row-major inside each
        pytree leaf; the leaves are separated by lines and named with their shapes.

        Args:
          path: where to save the PNG; None to only return the figure.

        Returns:
          The matplotlib ``Figure``.

        Raises:
          ValueError: fast mode kept no matrices (the Jacobian was never materialised).
          ImportError: matplotlib is not installed (``pip install 'mcjax[plot]'``).
        """
        if not self.matrices:
            raise ValueError(
                f"mcjax.Report.heatmap: this {self.mode}-mode report kept no Jacobian to draw; "
                "expected a full-mode check (mode='full') of a small Jacobian"
            )
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("mcjax.Report.heatmap needs matplotlib: pip install 'mcjax[plot]'") from e
        expected, got = self.matrices["expected"], self.matrices["got"]
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
        limit = float(np.nanmax(np.abs(np.concatenate([expected.ravel(), got.ravel()])))) or 1.0
        panels = (("expected (reference)", expected, limit), ("got (derivative under test)", got, limit),
                  ("got - expected", got - expected, None))
        rows = self.matrices.get("rows", (("out", (expected.shape[0],), expected.shape[0]),))
        columns = self.matrices.get("columns", ((self.wrt, (expected.shape[1],),
                                                 expected.shape[1]),))
        for ax, (title, values, lim) in zip(axes, panels):
            lim = lim or float(np.nanmax(np.abs(values))) or 1.0
            image = ax.imshow(values, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto",
                              interpolation="nearest")
            ax.set_title(title)
            _name_leaves(ax, "x", columns, f"d / d {self.wrt}")
            _name_leaves(ax, "y", rows, "d out")
            fig.colorbar(image, ax=ax, shrink=0.8)
        fig.suptitle(f"d {self.function} / d {self.wrt}: {'ok' if self.ok else 'FAIL'}")
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


def wrt_of(p: Prepared) -> str:
    """The differentiated argument as ``f`` names it: ``params``, or ``(W, b)`` for several
    (``args[0]`` where ``f`` gives no name: a builtin, ``*args``; ``FlatSpec.names``)."""
    names = [p.x_spec.names[i] for i in p.static.positions]
    return names[0] if isinstance(p.static.argnums, int) else f"({', '.join(names)})"


def header(p: Prepared, mode: str, points: int, threshold: Threshold) -> dict:
    """The fields every report starts with."""
    wrt = wrt_of(p)
    x = p.x_spec.describe() if p.x_spec.root == "args" else f"{wrt} {p.x_spec.describe()}"
    return {"function": name_of(p.static.f), "derivative": name_of(p.static.derivative),
            "wrt": wrt, "shapes": f"f: {x} -> {p.out_spec.describe()}",
            "dtype": p.dtype, "mode": mode, "points": points, "threshold": threshold}


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _g(x: float) -> str:
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def render(r: Report) -> str:
    verdict = "ok" if r.ok else "FAIL"
    lines = [
        f"mcjax.check: {verdict}  d {r.function} / d {r.wrt} by {r.derivative}",
        f"  {r.shapes}, {r.dtype}, {r.mode} mode, {r.points} point{'s' if r.points != 1 else ''}",
        f"  threshold: {r.threshold.describe()}",
    ]
    width = max([19] + [len(c.reference) + 1 for c in r.comparisons])  # "VJP vs jax.jacrev"
    for c in r.comparisons:
        excluded = f", {c.excluded} not compared" if c.excluded else ""
        status = "ok" if c.ok else f"FAIL: {c.violations} of {c.compared} entries over"
        lines.append(f"  {c.reference:<{width}} max abs {c.max_abs:.1e}  max rel {c.max_rel:.1e}  "
                     f"(worst {c.worst_ratio:.2g} x threshold{excluded})  {status}")
    if r.projections:
        bad = [p for p in r.projections if not p.ok]
        lines.append(f"  u^T J v            {len(r.projections)} projections, "
                     f"{len(bad)} over their threshold")
    if r.taylor is not None:
        lines.append(f"  Taylor remainder   {'ok' if r.taylor.ok else 'FAIL'}: {r.taylor.note}")
    if r.kinks is not None and (r.kinks.at or r.kinks.jumps):
        lines.append(f"  kinks              {'ok' if r.kinks.ok else 'FAIL'}: {r.kinks.note}")
        for k in r.kinks.entries:
            follows = ", ".join(k.conventions) or "none"
            lines.append(f"    {k.label:<16} jax {_g(k.jax):>9}  left {_g(k.left):>9}  right "
                         f"{_g(k.right):>9}  got {_g(k.got):>9}  matches {follows}")
    for problem in r.problems:
        lines.append(f"  problem: {problem}")
    if r.worst:
        lines.append("  worst entries:")
        lines.append(f"    {'entry':<24}{'expected':>12}{'got':>12}{'error':>11}{'allowed':>11}")
        for e in r.worst:
            lines.append(f"    {e.label:<24}{_g(e.expected):>12}{_g(e.got):>12}"
                         f"{e.error:>11.2e}{e.allowed:>11.1e}")
    for line in r.where:
        lines.append(f"  where: {line}")
    for slip in r.diagnosis:
        lines.append(f"  diagnosis: {slip}")
    for name, link in r.links:
        lines.append(f"  link {name}: {'ok' if link.ok else 'FAIL'}"
                     + (f" ({link.diagnosis[0]})" if link.diagnosis else ""))
    for note in r.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)
