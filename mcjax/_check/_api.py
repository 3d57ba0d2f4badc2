"""``mcjax.check`` and its callers: one call that says whether a derivative is right.

:func:`check` picks a mode and hands over to :mod:`~mcjax._check._full` or
:mod:`~mcjax._check._fast`; :func:`assert_derivative` raises on a failing report;
:func:`check_points` and :func:`check_cases` run many full-mode checks as one program;
:func:`check_chain` names the first wrong link of a composition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mcjax._check import _fast, _full
from mcjax._check._problem import name_of, prepare
from mcjax._check._report import Report
from mcjax._core._errors import DerivativeError
from mcjax._core._tolerance import (
    FAST_DIRECTIONS,
    FAST_POINTS,
    FULL_MODE_MAX_ENTRIES,
    FULL_MODE_MAX_INPUTS,
    KINK_CONVENTIONS,
)
from mcjax._program._trace import digest

MODES = ("auto", "full", "fast")


def check(f, derivative, *args, argnums: int = 0, mode: str = "auto", layout: str = "numerator",
          points: int | None = None, directions: int = FAST_DIRECTIONS,
          kink_convention: str | None = None, seed: int = 0) -> Report:
    r"""Check a hand-derived derivative of ``f`` with respect to ``args[argnums]``.

    ``f`` and the derivative are traced afresh on every call and a compiled check is reused
    only for the same traced programs: after an edit to either (or to a helper or global
    they read) the next check runs the edited code.

    Args:
      f: the function, ``f(*args)``; its output may be an array or a pytree.
      derivative: a function of the same ``*args`` returning the derivative in numerator
        layout (:data:`mcjax.conventions.LAYOUT`): an array of shape ``out.shape + arg.shape`` (for a
        scalar ``f``, the gradient, with the argument's shape or pytree), a structured
        :class:`~mcjax.Jacobian`, a pytree in ``jax.jacfwd``'s structure, or a VJP function
        ``u -> u^T J`` (``u`` shaped like ``f``'s output).
      *args: the point; arguments not differentiated may be anything (labels, flags).
      argnums: which argument (an int).
      mode: ``"full"`` materialises the Jacobian and judges every entry: where ``f`` is
        differentiable against ``jax.jacfwd``, ``jax.jacrev`` and float64 finite differences,
        at a kink of ``f`` (read from its jaxpr) against JAX's own value, the one-sided
        derivatives and their average; plus the Taylor test.  ``"fast"`` compares random
        projections ``u^T J v`` without building it; ``"auto"`` picks full mode up to
        ``FULL_MODE_MAX_ENTRIES`` entries (``mcjax._core._tolerance``).
      layout: ``"numerator"`` or ``"denominator"`` (``arg.shape + out.shape``).
      points: how many points (``x`` then random points near it); default 1 in full mode,
        2 in fast mode.
      directions: fast mode's random directions ``v`` per point.
      kink_convention: ``None`` (any accepted value at a kink) or one of ``"jax"``,
        ``"left"``, ``"right"``, ``"average"`` to require it at every kink entry.
      seed: seeds the random directions and points.

    Returns:
      A :class:`Report`: ``report.ok``, and ``str(report)`` is the verdict.

    Raises:
      ShapeError: the derivative does not have the expected shape (the message names both),
        or the argument or output is empty.
      DtypeError: the argument or output is not floating point.
      ValueError: an option is out of range.
    """
    if mode not in MODES:
        raise ValueError(f"mcjax.check: mode={mode!r}; expected one of {', '.join(MODES)}")
    if kink_convention is not None and kink_convention not in KINK_CONVENTIONS:
        raise ValueError(f"mcjax.check: kink_convention={kink_convention!r}; expected None or "
                         f"one of {', '.join(KINK_CONVENTIONS)}")
    p = prepare(f, derivative, args, argnums, layout)
    if mode == "auto":
        small = (p.x_spec.size <= FULL_MODE_MAX_INPUTS
                 and p.x_spec.size * p.out_spec.size <= FULL_MODE_MAX_ENTRIES)
        mode = "full" if small else "fast"
    if mode == "fast":
        return _fast.report(p, points or FAST_POINTS, directions, seed)
    dynamics = [p.dynamic] + [_full.perturbed(p, seed, q) for q in range(1, points or 1)]
    return _full.reports([(p, dynamics)], seed, kink_convention)[0]


def assert_derivative(f, derivative, *args, **options) -> Report:
    """:func:`check`, raising :class:`~mcjax.DerivativeError` (an ``AssertionError``) on failure.

    Takes the same arguments as :func:`check` and returns the passing report.
    """
    __tracebackhide__ = True  # pytest shows the report under the user's line, not ours
    report = check(f, derivative, *args, **options)
    if not report.ok:
        raise DerivativeError(report)
    return report


def check_points(f, derivative, points: Sequence[tuple], *, argnums: int = 0,
                 layout: str = "numerator", kink_convention: str | None = None,
                 seed: int = 0) -> list[Report]:
    """Full-mode :func:`check` at many points (tuples of arguments), compiled as one program.

    Points that share shapes are vmapped; points of other shapes join the same program.
    Returns one report per point, in order.
    """
    return check_cases([(f, derivative, tuple(a), argnums) for a in points], layout=layout,
                       kink_convention=kink_convention, seed=seed)


def check_cases(cases: Sequence[tuple], *, layout: str = "numerator",
                kink_convention: str | None = None, seed: int = 0,
                stencils: bool = True) -> list[Report]:
    """Full-mode :func:`check` of many ``(f, derivative, args, argnums)`` cases in one program.

    ``stencils=False`` judges by the exact references and ``f``'s kinks alone, without finite
    differences and the Taylor test (which test JAX's autodiff itself).  Returns one report
    per case, in order.
    """
    traces: dict = {}  # this call's traces: each f and derivative once per shape
    prepared = [prepare(f, d, tuple(a), argnums, layout, traces)
                for f, d, a, argnums in cases]
    groups: dict = {}
    for i, p in enumerate(prepared):
        # one group runs on one set of the values f and the derivative close over (lifted
        # out of their programs): cases that differ only there are different groups
        key = (p.static, p.x_spec, p.out_spec,
               tuple((jnp.shape(d), jnp.result_type(d)) for d in p.dynamic),
               tuple(digest(c) for c in jax.tree_util.tree_leaves(p.static.consts())))
        groups.setdefault(key, []).append(i)
    reports = _full.reports([(prepared[ix[0]], [prepared[i].dynamic for i in ix])
                             for ix in groups.values()], seed, kink_convention, merge=False,
                            stencils=stencils)
    out: list = [None] * len(cases)
    for ix, group_reports in zip(groups.values(), reports):
        for i, r in zip(ix, group_reports):
            out[i] = r
    return out


def check_chain(chain, x, **options) -> Report:
    """:func:`check` of a composition, naming the first wrong link when it fails.

    A composition built by :func:`mcjax.vector_chain_rule` keeps its links (innermost first).
    When the whole fails, the links are checked in the order they are applied, each at its
    own input, and the first that fails is named; when every link passes, the composition
    itself is wrong (the Jacobians multiplied in the wrong order, say).

    Args:
      chain: a :class:`~mcjax.Differentiable` from :func:`~mcjax.vector_chain_rule` (or any
        ``Differentiable``; without links only the whole is checked).
      x: the point (one array).
      **options: passed to :func:`check`.

    Returns:
      The report of the whole, with ``links``: each link's own report, and a diagnosis line
      naming the first wrong link.
    """
    whole = check(chain.forward, chain.derivative, x, **options)
    links = getattr(chain, "links", ())
    if whole.ok or not links:
        return whole
    reports, first = [], None
    for k, link in enumerate(links):
        name = getattr(link, "name", "") or name_of(link.forward)
        inner = check_chain(link, x, **options)  # check() of a link without links
        reports.append((f"{k + 1}/{len(links)} {name}", inner))
        if not inner.ok and first is None:
            first = (k, name)
        x = link.forward(x)
    if first is not None:
        line = (f"the first wrong link is {first[1]} (link {first[0] + 1} of {len(links)}, "
                "counted from the innermost)")
    else:
        line = ("every link is right on its own: the composition is wrong (the Jacobians "
                "multiplied in the wrong order, or a link evaluated at the wrong input?)")
    return dataclasses.replace(whole, links=tuple(reports), diagnosis=whole.diagnosis + (line,))
