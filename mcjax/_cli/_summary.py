"""Summaries of verification results: one row per rule and argument, as a rich table or JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mcjax._check._verify import RuleResult, json_number
from mcjax._registry import REGISTRY, SECTIONS, Registry

REFERENCES = ("jax.jacfwd", "jax.jacrev")
"""The references every rule is checked against (the checker's exact comparisons)."""
COLUMNS = {"jax.jacfwd": "jacfwd", "jax.jacrev": "jacrev"}


@dataclass(frozen=True)
class DerivativeSummary:
    """All verification results of one rule's derivative with respect to one argument."""

    rule: str
    wrt: str
    formula: str
    results: tuple[RuleResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def worst(self, reference: str) -> tuple[float, float] | None:
        """(max abs, max rel) error against ``reference`` over all cases, None if never used."""
        pairs = [
            (c.max_abs, c.max_rel)
            for r in self.results
            for c in r.comparisons
            if c.reference == reference
        ]
        if not pairs:
            return None
        return max(p[0] for p in pairs), max(p[1] for p in pairs)

    @property
    def errors(self) -> list[str]:
        return sorted({r.error for r in self.results if r.error})


def summarize(results: Sequence[RuleResult]) -> list[DerivativeSummary]:
    """Group results by (rule, argument), in the order they first appear."""
    groups: dict[tuple[str, str], list[RuleResult]] = {}
    for r in results:
        groups.setdefault((r.rule, r.wrt), []).append(r)
    return [
        DerivativeSummary(rule, wrt, rs[0].formula, tuple(rs)) for (rule, wrt), rs in groups.items()
    ]


def as_json(results: Sequence[RuleResult], registry: Registry | None = None) -> list[dict]:
    """One object per rule: ``name``, ``ok``, ``section`` and its ``derivatives``."""
    registry = registry if registry is not None else REGISTRY
    by_rule: dict[str, dict] = {}
    for s in summarize(results):
        entry = by_rule.setdefault(
            s.rule,
            {"name": s.rule, "ok": True, "section": registry.get(s.rule).section, "derivatives": []},
        )
        entry["ok"] = entry["ok"] and s.ok
        derivative = {"wrt": s.wrt, "formula": s.formula, "ok": s.ok, "errors": s.errors}
        for ref in REFERENCES:
            worst = s.worst(ref)
            if worst is not None:
                derivative[ref] = {"max_abs": worst[0], "max_rel": json_number(worst[1])}
        derivative["cases"] = [r.as_dict() for r in s.results]
        entry["derivatives"].append(derivative)
    return list(by_rule.values())


def _fmt(worst: tuple[float, float] | None) -> str:
    if worst is None:
        return "-\n-"
    abs_err, rel_err = worst
    if math.isnan(abs_err):
        return "nan\nnan"
    return f"{abs_err:.0e}\n{rel_err:.0e}".replace("e-0", "e-").replace("e+00", "")


def table(results: Sequence[RuleResult], title: str = "", registry: Registry | None = None):
    """A rich Table with one row per rule and argument, in the paper's order.

    Each row is two lines: the rule and argument above its formula, and in each reference
    column the largest absolute error over the rule's cases (``abs``) above the largest
    relative one (``rel``).  It reads at 80 columns (a CI log): the numbers keep their width
    and the formula folds under the rule's name.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    registry = registry if registry is not None else REGISTRY
    sections = list(SECTIONS)

    def order(s: DerivativeSummary):
        section = registry.get(s.rule).section if s.rule in registry else "beyond"
        return sections.index(section)

    t = Table(title=title or None, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
              caption="error: the largest over the rule's cases, abs(olute) above rel(ative)")
    t.add_column("rule  ∂/∂\nformula", overflow="fold", min_width=24)
    t.add_column("§", no_wrap=True)
    t.add_column("error", no_wrap=True, style="dim")
    for ref in REFERENCES:
        t.add_column(COLUMNS[ref], justify="right", no_wrap=True)
    t.add_column("n", justify="right", no_wrap=True)
    t.add_column("verdict", no_wrap=True)
    for s in sorted(summarize(results), key=order):
        verdict = "[green]ok[/green]" if s.ok else "[bold red]FAIL[/bold red]"
        rule = registry.get(s.rule) if s.rule in registry else None
        name = Text(f"{s.rule}  {s.wrt}", style="cyan")
        name.append("\n")
        name.append(s.formula)  # as Text: formulas hold brackets rich would read as markup
        t.add_row(
            name,
            rule.section if rule else "",
            "abs\nrel",
            *(_fmt(s.worst(ref)) for ref in REFERENCES),
            str(len(s.results)),
            verdict,
        )
    return t


def failures(results: Sequence[RuleResult]) -> list[str]:
    """One line per failing case: which rule, argument, shapes, dtype and why."""
    lines = []
    for r in results:
        if r.ok:
            continue
        where = f"{r.rule} wrt {r.wrt} ({r.dtype}, shapes {', '.join(map(str, r.shapes))})"
        if r.error:
            lines.append(f"{where}: {r.error}")
            continue
        report = r.report
        assert report is not None  # a result without an error has its report
        why = [f"{c.reference}: {c.violations} of {c.compared} entries over the threshold "
               f"(max rel {c.max_rel:.1e})" for c in report.comparisons if not c.ok]
        if report.taylor is not None and not report.taylor.ok:
            why.append(f"Taylor: {report.taylor.note}")
        if report.kinks is not None and not report.kinks.ok:
            why.append(f"kinks: {report.kinks.note}")
        why += list(report.problems) + [f"diagnosis: {d}" for d in report.diagnosis]
        lines.append(f"{where}: " + "; ".join(why))
    return lines
