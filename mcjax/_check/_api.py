"""``mcjax.check`` and its callers: one call that says whether a derivative is right.

``mcjax.check`` picks a mode and hands over to ``_full`` or
``_fast``; ``mcjax.assert_derivative`` raises on a failing report;
``mcjax.check_points`` and ``mcjax.check_cases`` run many full-mode checks as one program;
``mcjax.check_chain`` names the first wrong link of a composition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from mcjax._check import _fast, _full
from mcjax._check._problem import LAYOUTS, name_of, prepare
from mcjax._check._report import Report
from mcjax._core._arguments import count, describe, flag, tolerance
from mcjax._core._errors import DerivativeError
from mcjax._core._tolerance import (
    FAST_DIRECTIONS,
    FULL_MODE_MAX_ENTRIES,
    FULL_MODE_MAX_INPUTS,
    KINK_CONVENTIONS,
)
from mcjax._program._trace import digest
from mcjax.rules.chain import Differentiable

MODES = ("auto", "full", "fast")


def check(f: Callable[..., Any], derivative: Callable[..., Any], *args: Any,
          argnums: int | tuple[int, ...] = 0, mode: str = "auto", layout: str = "numerator", points: int | None = None,
          directions: int = FAST_DIRECTIONS, kink_convention: str | None = None, seed: int = 0,
          rtol: float | None = None, atol: float | None = None) -> Report:
    r"""Check a hand-derived derivative of ``f`` with respect to ``args[argnums]``.

    ``f`` and the derivative are traced afresh on every call and a compiled check is reused
    only for the same traced programs: after an edit to either (or to a helper or global
    they read) the next check runs the edited code.

    Args:
      f: the function, ``f(*args)``; its output may be an array or a pytree.
      derivative: a function of the same ``*args`` returning the derivative in numerator
        layout (``mcjax.conventions.LAYOUT``): an array of shape ``out.shape + arg.shape``
        (for a scalar ``f``, the gradient, with the argument's shape or pytree), a
        structured ``mcjax.Jacobian``, a pytree in ``jax.jacfwd``'s structure (a gradient
        may be in the model's own type: ``eqx.filter_grad``'s, ``nnx.grad``'s ``State``, a
        ``FrozenDict`` for a ``dict``: its leaves matched by path), or a VJP function
        ``u -> u^T J`` (``u`` shaped like ``f``'s output): a Python function, JAX's pullback,
        or any callable wrapped in ``mcjax.vjp`` (an ``eqx.Module`` is callable, so a
        callable pytree of arrays is taken for a gradient unless so wrapped).
      *args: the point; arguments not differentiated may be anything (labels, flags).  The
        differentiated one may be a model (an Equinox module with function-valued fields, an
        nnx Module or ``State``, linen variables): its trained leaves are differentiated
        (the inexact arrays, ``eqx.filter``'s rule, except a model's state: an nnx Module's
        ``nnx.Param`` only, linen's ``"params"`` only), the rest (an ``nnx.BatchStat``, an
        ``eqx.nn.State``, functions, integer arrays) is passed to ``f`` as it is.  A
        derivative's entries at the state (``jax.grad`` over a whole nnx ``State``) are not
        compared, and the report's notes name them.
      argnums: which argument (an int), or a tuple of them, as ``jax.grad`` takes it: then
        the derivative returns a tuple with one derivative per argument, as
        ``jax.jacrev(f, argnums=(0, 1))`` does, and the report names each argument.
      mode: ``"full"`` materialises the Jacobian and judges every entry: where ``f`` is
        differentiable against ``jax.jacfwd``, ``jax.jacrev`` and float64 finite differences,
        at a kink of ``f`` (read from its jaxpr) against JAX's own value, the one-sided
        derivatives and their average; plus the Taylor test.  ``"fast"`` compares random
        projections ``u^T J v`` without building it; ``"auto"`` picks full mode for a
        Jacobian of at most 65,536 entries and an argument of at most 2,048 coordinates.
      layout: ``"numerator"`` or ``"denominator"`` (``arg.shape + out.shape``).
      points: how many points, at least 1 (``x`` then random points near it); default 1 in
        full mode; in fast mode ``x`` and a point near it, but for a scalar ``f`` the point
        near ``x`` only when ``x`` could hide a slip (a constant or symmetric leaf, a leaf
        the gradient is 0 on) or fails (at ``x`` every entry of the gradient is compared).
      directions: fast mode's random directions ``v`` per point, at least 1.
      kink_convention: ``None`` (any accepted value at a kink) or one of ``"jax"``,
        ``"left"``, ``"right"``, ``"average"`` to require it at every kink entry.
      seed: seeds the random directions and points (an int >= 0).
      rtol: overrides the tolerance policy's relative threshold: an entry passes when
        ``|got - ref| <= rtol * scale + atol``, ``scale`` the largest reference magnitude of
        its block.  Default ``None``: the policy (``mcjax.conventions.check_rtol``,
        ``32 eps sqrt(T)``, widened by the rounding ``f`` itself shows), which is right for
        almost every check; an explicit ``rtol`` replaces all of it.
      atol: overrides the policy's absolute floor (default ``None``:
        ``mcjax.conventions.check_atol``, 1000 smallest normal numbers of the dtype).

    Returns:
      A ``mcjax.Report``: ``report.ok``, and ``str(report)`` is the verdict.

    Raises:
      ShapeError: the derivative does not have the expected shape (the message names both),
        or the argument or output is empty.
      DtypeError: the argument or output is not real floating point.
      TypeError: ``f`` or the derivative is not a function, or an option has the wrong type.
      ValueError: an option is out of range.
    """
    tolerances = _options("check", mode=mode, layout=layout, kink_convention=kink_convention,
                          seed=seed, rtol=rtol, atol=atol)
    if points is not None:
        count("check", "points", points)
    count("check", "directions", directions)
    p = prepare(f, derivative, args, argnums, layout)._replace(tolerance=tolerances)
    if mode == "auto":
        small = (p.x_spec.size <= FULL_MODE_MAX_INPUTS
                 and p.x_spec.size * p.out_spec.size <= FULL_MODE_MAX_ENTRIES)
        mode = "full" if small else "fast"
    if mode == "fast":
        return _fast.report(p, points, directions, seed)
    dynamics = [p.dynamic] + [_full.perturbed(p, seed, q) for q in range(1, points or 1)]
    return _full.reports([(p, dynamics)], seed, kink_convention)[0]


def _options(function: str, *, mode: str = "auto", layout: str = "numerator",
             kink_convention=None, seed=0, rtol=None, atol=None) -> tuple:
    """The keywords every check takes, validated (one sentence naming the bad one); returns
    the tolerances given, ``(rtol, atol)``, ``None`` where the policy's hold."""
    if mode not in MODES:
        raise ValueError(f"mcjax.{function}: mode={mode!r}; expected one of {', '.join(MODES)}")
    if layout not in LAYOUTS:
        raise ValueError(f"mcjax.{function}: layout={layout!r}; expected one of "
                         f"{', '.join(LAYOUTS)}")
    if kink_convention is not None and kink_convention not in KINK_CONVENTIONS:
        raise ValueError(f"mcjax.{function}: kink_convention={kink_convention!r}; expected "
                         f"None or one of {', '.join(KINK_CONVENTIONS)}")
    count(function, "seed", seed, minimum=0)
    return tolerance(function, "rtol", rtol), tolerance(function, "atol", atol)


def assert_derivative(f: Callable[..., Any], derivative: Callable[..., Any], *args: Any,
                      **options: Any) -> Report:
    """``mcjax.check``, raising ``mcjax.DerivativeError`` (an ``AssertionError``) on failure.

    Takes the same arguments as ``mcjax.check`` and returns the passing report.
    """
    __tracebackhide__ = True  # pytest shows the report under the user's line, not ours
    report = check(f, derivative, *args, **options)
    if not report.ok:
        raise DerivativeError(report)
    return report


def check_points(f: Callable[..., Any], derivative: Callable[..., Any],
                 points: Sequence[tuple[Any, ...]], *,
                 argnums: int | tuple[int, ...] = 0, layout: str = "numerator",
                 kink_convention: str | None = None, seed: int = 0, rtol: float | None = None,
                 atol: float | None = None) -> list[Report]:
    """Full-mode ``mcjax.check`` at many points (tuples of arguments), compiled as one program.

    Points that share shapes are vmapped; points of other shapes join the same program.
    The keywords are ``mcjax.check``'s.  Returns one report per point, in order.
    """
    for k, point in enumerate(points):
        if not isinstance(point, (tuple, list)):
            raise TypeError(f"mcjax.check_points: points[{k}] is {describe(point)}; expected a "
                            "tuple of f's arguments, e.g. (x,) for one argument")
    return _check_many("check_points", [(f, derivative, tuple(a), argnums) for a in points],
                       layout=layout, kink_convention=kink_convention, seed=seed, rtol=rtol,
                       atol=atol)


def check_cases(cases: Sequence[tuple[Any, ...]], *, layout: str = "numerator",
                kink_convention: str | None = None, seed: int = 0, stencils: bool = True,
                rtol: float | None = None, atol: float | None = None) -> list[Report]:
    """Full-mode ``mcjax.check`` of many ``(f, derivative, args, argnums)`` cases in one program.

    ``stencils=False`` judges by the exact references and ``f``'s kinks alone, without finite
    differences and the Taylor test (which test JAX's autodiff itself).  The other keywords
    are ``mcjax.check``'s.  Returns one report per case, in order.
    """
    return _check_many("check_cases", _cases(cases), layout=layout,
                       kink_convention=kink_convention, seed=seed, rtol=rtol, atol=atol,
                       stencils=flag("check_cases", "stencils", stencils))


def _check_many(function: str, cases: list[tuple], *, layout, kink_convention, seed, rtol, atol,
                stencils: bool = True) -> list[Report]:
    tolerances = _options(function, layout=layout, kink_convention=kink_convention, seed=seed,
                          rtol=rtol, atol=atol)
    traces: dict = {}  # this call's traces: each f and derivative once per shape
    prepared = [prepare(f, d, a, argnums, layout, traces, function)._replace(
        tolerance=tolerances) for f, d, a, argnums in cases]
    groups: dict = {}
    for i, p in enumerate(prepared):
        # one group runs on one set of the values f and the derivative close over (lifted
        # out of their programs): cases that differ only there are different groups
        key = (p.static, p.x_spec, p.out_spec,
               tuple((jnp.shape(d), jnp.result_type(d)) for d in p.dynamic),
               tuple(digest(c) for c in jax.tree_util.tree_leaves(p.static.consts())))
        groups.setdefault(key, []).append(i)
    # groups that differ only in the derivative (several hand derivatives of one f at the
    # same points: a slip corpus, a registry's rules) share one computation of the references
    shared: dict = {}
    for ix in groups.values():
        p = prepared[ix[0]]
        key = (p.static._replace(derivative=p.static.f, pullback=False), p.x_spec, p.out_spec,
               tuple(digest(c) for c in jax.tree_util.tree_leaves(p.static.f.consts)),
               tuple(digest(d) for i in ix for d in prepared[i].dynamic))
        shared.setdefault(key, []).append(ix)
    out: list = [None] * len(prepared)
    for members, reports in zip(shared.values(), _full.several(
            [(tuple(prepared[ix[0]] for ix in members), [prepared[i].dynamic for i in members[0]])
             for members in shared.values()], seed, kink_convention, merge=False,
            stencils=stencils)):
        for ix, group_reports in zip(members, reports):
            for i, r in zip(ix, group_reports):
                out[i] = r
    return out


def _cases(cases) -> list[tuple]:
    """``(f, derivative, args, argnums)`` four-tuples, or one sentence saying which is not."""
    out = []
    for k, case in enumerate(cases):
        if not isinstance(case, (tuple, list)) or len(case) != 4:
            raise TypeError(f"mcjax.check_cases: cases[{k}] is {describe(case)}; expected a "
                            "tuple (f, derivative, args, argnums)")
        f, d, a, argnums = case
        if not isinstance(a, (tuple, list)):
            raise TypeError(f"mcjax.check_cases: the args of cases[{k}] are {describe(a)}; "
                            "expected a tuple of f's arguments, e.g. (x,) for one argument")
        out.append((f, d, tuple(a), argnums))
    return out


def check_chain(chain: Differentiable, x: Any, **options: Any) -> Report:
    """``mcjax.check`` of a composition, naming the first wrong link when it fails.

    A composition built by ``mcjax.vector_chain_rule`` keeps its links (innermost first).
    When the whole fails, the links are checked in the order they are applied, each at its
    own input, and the first that fails is named; when every link passes, the composition
    itself is wrong (the Jacobians multiplied in the wrong order, say).

    Args:
      chain: a ``mcjax.Differentiable`` from ``mcjax.vector_chain_rule`` (or any
        ``Differentiable``; without links only the whole is checked).
      x: the point (one array).
      **options: passed to ``mcjax.check``.

    Returns:
      The report of the whole, with ``links``: each link's own report, and a diagnosis line
      naming the first wrong link.
    """
    if not (callable(getattr(chain, "forward", None))
            and callable(getattr(chain, "derivative", None))):
        raise TypeError(f"mcjax.check_chain: chain is {describe(chain)}; expected a "
                        "mcjax.Differentiable (from mcjax.vector_chain_rule, say)")
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
