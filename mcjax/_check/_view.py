"""How a ``mcjax.Report`` shows itself outside ``str``: a one-line ``repr`` (the verdict,
what failed, the diagnosis) and a notebook's HTML view (the verdict first, then the
comparison table, the worst entries and the diagnosis).

``str(report)`` (``render`` in ``_report``) stays the full text for terminals and
logs; these are its short and its rich forms, read from the same fields.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mcjax._check._report import Report

SHOWN_DIAGNOSIS = 90  # characters of the first diagnosis sentence in repr(report)
_OK, _FAIL = "#1a7f37", "#cf222e"  # GitHub's green and red: legible on light and dark themes


def _g(x: float) -> str:
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


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
