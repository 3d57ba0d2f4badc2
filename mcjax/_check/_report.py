"""The report of ``mcjax.check``: a verdict a person reads, and the numbers behind it.

``str(report)`` is the readable verdict: a summary line, the thresholds used, one line per
reference, the Taylor test, kinks, a small table of the worst entries and the diagnosis;
``repr(report)`` its one line (``Report(FAIL: d f / d params by df; ...; diagnosis: ...)``);
in a notebook the report shows itself as HTML, its verdict first (the comparison table, the
worst entries and the diagnosis).  The three are read from the same fields, here beside the
report they show.
``report.heatmap()`` draws expected, got and their difference for a small Jacobian
(matplotlib, imported only then: ``pip install 'mcjax[plot]'``).
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from mcjax._check import _heatmap
from mcjax._check._compare import Comparison, Entry, Threshold
from mcjax._check._problem import Prepared, name_of
from mcjax._check._report_parts import Kinks, Later, Projection, Slip
from mcjax._check._taylor import Taylor


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
        return short(self)

    def _repr_html_(self) -> str:
        """A notebook's view: the verdict first, then the comparisons and the diagnosis."""
        return page(self)

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
        return _heatmap.draw(self.matrices, f"d {self.function} / d {self.wrt}: "
                             f"{'ok' if self.ok else 'FAIL'}", self.wrt, path)

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


# -- the one-line and the HTML view ---------------------------------------------------------------
SHOWN_DIAGNOSIS = 90  # characters of the first diagnosis sentence in repr(report)
_OK, _FAIL = "#1a7f37", "#cf222e"  # GitHub's green and red: legible on light and dark themes


def what(r: Report) -> str:
    """``d f / d params by df``."""
    return f"d {r.function} / d {r.wrt} by {r.derivative}"


def _failing(r: Report) -> str:
    """What failed, in a few words: the worst comparison, else the first other failure."""
    bad = [c for c in r.comparisons if not c.ok]
    if bad:
        c = max(bad, key=lambda c: c.worst_ratio)
        return (f"{c.violations} of {c.compared} entries over against {c.reference} "
                f"(worst {c.worst_ratio:.2g} x threshold)")
    if r.projections and any(not p.ok for p in r.projections):
        return f"{sum(not p.ok for p in r.projections)} of {len(r.projections)} projections over"
    if r.taylor is not None and not r.taylor.ok:
        return f"Taylor remainder: {r.taylor.note}"
    if r.kinks is not None and not r.kinks.ok:
        return f"kinks: {r.kinks.note}"
    if r.problems:
        return r.problems[0]
    return "see str(report)"


def short(r: Report) -> str:
    """``Report(FAIL: d f / d params by df; 4 of 16 entries over ...; diagnosis: ...)``."""
    if r.ok:
        points = f"{r.points} point{'s' if r.points != 1 else ''}"
        return f"Report(ok: {what(r)}; {r.dtype}, {r.mode} mode, {points})"
    parts = [f"FAIL: {what(r)}", _failing(r)]
    if r.diagnosis:
        first = r.diagnosis[0]
        parts.append("diagnosis: " + (first if len(first) <= SHOWN_DIAGNOSIS
                                      else first[:SHOWN_DIAGNOSIS - 1].rstrip() + "…"))
    return f"Report({'; '.join(parts)})"


def _e(text) -> str:
    return html.escape(str(text))


def _table(head: list[str], rows: list[list[str]]) -> str:
    """A table whose first column is text (left) and the others numbers (right)."""
    def align(i: int) -> str:
        return "text-align:left" if i == 0 else "text-align:right"

    cells = "".join(f"<th style='{align(i)}'>{_e(h)}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td style='{align(i)}'>{cell}</td>"
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _status(ok: bool, text: str = "") -> str:
    word = "ok" if ok else "FAIL"
    return (f"<span style='color:{_OK if ok else _FAIL};font-weight:bold'>{word}</span>"
            + (f" {_e(text)}" if text else ""))


def page(r: Report) -> str:
    """The report as HTML: the verdict and what was checked, the comparisons, the Taylor test
    and kinks, the worst entries, where they are, the diagnosis, links and notes."""
    verdict = "ok" if r.ok else "FAIL"
    colour = _OK if r.ok else _FAIL
    points = f"{r.points} point{'s' if r.points != 1 else ''}"
    out = [f"<div class='mcjax-report'><p><strong style='color:{colour}'>{verdict}</strong> "
           f"<code>{_e(what(r))}</code> (mcjax.check)</p>",
           f"<p style='margin:0.2em 0'>{_e(r.shapes)}, {_e(r.dtype)}, {_e(r.mode)} mode, "
           f"{points}</p>"]
    if r.comparisons:
        rows = [[_e(c.reference), f"{c.max_abs:.1e}", f"{c.max_rel:.1e}",
                 f"{c.worst_ratio:.2g}", _status(c.ok) if c.ok else _status(
                     False, f"{c.violations} of {c.compared} over"
                     + (f", {c.excluded} not compared" if c.excluded else ""))]
                for c in r.comparisons]
        out.append(_table(["reference", "max |got - ref|", "max rel", "worst / threshold",
                           ""], rows))
    checks = []
    if r.projections:
        bad = sum(not p.ok for p in r.projections)
        checks.append(f"u<sup>T</sup> J v: {_status(bad == 0)} {len(r.projections)} "
                      f"projections, {bad} over their threshold")
    if r.taylor is not None:
        checks.append(f"Taylor remainder: {_status(r.taylor.ok, r.taylor.note)}")
    if r.kinks is not None and (r.kinks.at or r.kinks.jumps):
        checks.append(f"kinks: {_status(r.kinks.ok, r.kinks.note)}")
    checks += [f"problem: {_e(p)}" for p in r.problems]
    if checks:
        out.append("<ul>" + "".join(f"<li>{c}</li>" for c in checks) + "</ul>")
    if r.worst:
        out.append(_table(["entry", "expected", "got", "error", "allowed"],
                          [[f"<code>{_e(e.label)}</code>", _g(e.expected), _g(e.got),
                            f"{e.error:.2e}", f"{e.allowed:.1e}"] for e in r.worst]))
    if r.where:
        out.append("<p>where: " + "; ".join(_e(w) for w in r.where) + "</p>")
    if r.diagnosis:
        out.append("<p><strong>diagnosis</strong></p><ul>"
                   + "".join(f"<li>{_e(d)}</li>" for d in r.diagnosis) + "</ul>")
    if r.links:
        out.append("<ul>" + "".join(
            f"<li>link <code>{_e(name)}</code>: {_status(link.ok)}"
            + (f" ({_e(link.diagnosis[0])})" if link.diagnosis else "") + "</li>"
            for name, link in r.links) + "</ul>")
    out.append(f"<p style='font-size:smaller'>threshold: {_e(r.threshold.describe())}</p>")
    out += [f"<p style='font-size:smaller'>note: {_e(n)}</p>" for n in r.notes]
    return "".join(out) + "</div>"
