"""``mcjax.check`` and ``mcjax.assert_derivative``: one call that says whether a derivative is right."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check import _fast, _full
from mcjax._check._compare import Threshold
from mcjax._check._problem import Prepared, name_of, prepare
from mcjax._check._references import coordinate_scales
from mcjax._check._report import Kinks, Report
from mcjax._conventions import (
    FAST_DIRECTIONS,
    FAST_PERTURBATION,
    FAST_POINTS,
    FULL_MODE_MAX_ENTRIES,
    FULL_MODE_MAX_INPUTS,
    KINK_CONVENTIONS,
)
from mcjax._errors import DerivativeError

MODES = ("auto", "full", "fast")


def check(f, derivative, *args, argnums: int = 0, mode: str = "auto", layout: str = "numerator",
          points: int | None = None, directions: int = FAST_DIRECTIONS,
          kink_convention: str | None = None, seed: int = 0) -> Report:
    r"""Check a hand-derived derivative of ``f`` with respect to ``args[argnums]``.

    Args:
      f: the function, ``f(*args)``; its output may be an array or a pytree.
      derivative: a function of the same ``*args`` returning the derivative in numerator
        layout (:data:`mcjax.LAYOUT`): an array of shape ``out.shape + arg.shape`` (for a
        scalar ``f``, the gradient, with the argument's shape or pytree), a structured
        :class:`~mcjax.Jacobian`, a pytree in ``jax.jacfwd``'s structure, or a VJP function
        ``u -> u^T J`` (``u`` shaped like ``f``'s output).
      *args: the point; arguments not differentiated may be anything (labels, flags).
      argnums: which argument (an int).
      mode: ``"full"`` materialises the Jacobian and compares every entry with ``jax.jacfwd``,
        ``jax.jacrev`` and float64 finite differences, and runs the Taylor test; ``"fast"``
        compares random projections ``u^T J v`` without building it; ``"auto"`` picks full
        mode up to :data:`~mcjax._conventions.FULL_MODE_MAX_ENTRIES` entries.
      layout: ``"numerator"`` or ``"denominator"`` (``arg.shape + out.shape``).
      points: how many points (``x`` then random points near it); default 1 in full mode,
        2 in fast mode.
      directions: fast mode's random directions ``v`` per point.
      kink_convention: ``None`` (any convention at a kink is fine) or one of ``"left"``,
        ``"right"``, ``"zero"``, ``"average"`` to require it.
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
        return _fast_report(p, points or FAST_POINTS, directions, seed)
    dynamics = [p.dynamic] + [_perturbed(p, seed, q) for q in range(1, points or 1)]
    return _full_reports([(p, dynamics)], seed, kink_convention)[0]


# NaN and Inf are findings to report, not NumPy warnings
_quiet = np.errstate(invalid="ignore", divide="ignore", over="ignore")


def assert_derivative(f, derivative, *args, **options) -> Report:
    """:func:`check`, raising :class:`~mcjax.DerivativeError` (an ``AssertionError``) on failure.

    Takes the same arguments as :func:`check` and returns the passing report.
    """
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
                kink_convention: str | None = None, seed: int = 0) -> list[Report]:
    """Full-mode :func:`check` of many ``(f, derivative, args, argnums)`` cases in one program."""
    prepared = [prepare(f, d, tuple(a), argnums, layout) for f, d, a, argnums in cases]
    groups: dict = {}
    for i, p in enumerate(prepared):
        key = (p.static, p.x_spec, p.out_spec,
               tuple((jnp.shape(d), jnp.result_type(d)) for d in p.dynamic))
        groups.setdefault(key, []).append(i)
    reports = _full_reports([(prepared[ix[0]], [prepared[i].dynamic for i in ix])
                             for ix in groups.values()], seed, kink_convention, merge=False)
    out = [None] * len(cases)
    for ix, group_reports in zip(groups.values(), reports):
        for i, r in zip(ix, group_reports):
            out[i] = r
    return out


def _perturbed(p: Prepared, seed: int, q: int) -> tuple:
    """The dynamic leaves with the argument moved by 5% of each coordinate's scale."""
    args = p.static.args(p.dynamic)
    x = p.x_spec.flatten(args[p.static.argnums])
    rng = np.random.default_rng([seed, q])
    step = FAST_PERTURBATION * coordinate_scales(x, p.x_spec) * rng.standard_normal(x.shape)
    moved = jax.tree_util.tree_map(lambda new, old: new.astype(jnp.result_type(old)),
                                   p.x_spec.unflatten(x + step.astype(x.dtype)),
                                   args[p.static.argnums])
    new_args = args[: p.static.argnums] + (moved,) + args[p.static.argnums + 1 :]
    leaves = jax.tree_util.tree_leaves(new_args)
    return tuple(leaves[i] for i in p.static.dynamic_positions)


def _header(p: Prepared, mode: str, points: int, threshold: Threshold) -> dict:
    return {"function": name_of(p.static.f), "derivative": name_of(p.static.derivative),
            "wrt": f"args[{p.static.argnums}]",
            "shapes": f"f: args[{p.static.argnums}] {p.x_spec.describe()} -> "
                      f"{p.out_spec.describe()}",
            "dtype": p.dtype, "mode": mode, "points": points, "threshold": threshold}


@_quiet
def _fast_report(p: Prepared, points: int, directions: int, seed: int) -> Report:
    v = _fast.run(p, points, directions, seed)
    notes = ("fast mode: the reference is jax.vjp in f's own dtype; compared are u^T J entry by "
             f"entry and {directions} projections u^T J v per point",)
    return Report(ok=v["ok"], **_header(p, "fast", points, v["threshold"]),
                  comparisons=v["comparisons"], projections=v["projections"],
                  worst=v["worst"], problems=v["problems"], notes=notes)


@_quiet
def _full_reports(groups, seed, kink_convention, merge=True) -> list:
    """Run full mode on ``(prepared, dynamics)`` groups; one merged report per group, or
    (``merge=False``) one report per point."""
    terms = [_full.terms_of(p) for p, _ in groups]
    with jax.enable_x64(True):
        precisions = [_full.reference_precision(p) for p, _ in groups]
    values = _full.run([(p, d, pr) for (p, d), pr in zip(groups, precisions)], seed)
    out = []
    for (p, dynamics), k, precision, per_point in zip(groups, terms, precisions, values):
        judged = [_full.judge(p, v, k, precision, kink_convention) for v in per_point]
        if merge:
            out.append(_assemble(p, judged, dynamics, k, precision))
        else:
            out.append([_assemble(p, [j], [d], k, precision) for j, d in zip(judged, dynamics)])
    return out


def _assemble(p: Prepared, judged: list[dict], dynamics: list, terms: int, precision: str) -> Report:
    threshold = Threshold.of(p.dtype, terms, _full.reference_words(precision))
    first_bad = next((i for i, j in enumerate(judged) if not j["ok"]), None)
    focus = judged[first_bad if first_bad is not None else 0]
    diagnosis = ()
    if first_bad is not None and focus["failed"]:
        args = p.static.args(dynamics[first_bad])
        diagnosis = tuple(_full.diagnose_point(p, focus, dynamics[first_bad], args))
    notes = list(dict.fromkeys(n for j in judged for n in j["notes"]))
    if precision != "float64":
        notes.append(f"f computes in {precision} even on float64 arguments: the "
                     f"finite-difference reference has {precision} precision")
    kinks = [j["kinks"] for j in judged]
    kink = kinks[first_bad if first_bad is not None and not kinks[first_bad].ok else 0]
    if len(kinks) > 1:
        kink = Kinks(sum(k.at for k in kinks), sum(k.near for k in kinks), kink.followed,
                     kink.asked, kink.entries, all(k.ok for k in kinks), kink.note)
    matrices = {}
    if focus["G"].size <= 40_000:
        matrices = {"expected": focus["R"], "got": focus["G"]}
    if first_bad is not None and len(judged) > 1:
        notes.append(f"point {first_bad} of {len(judged)} is the first that fails; the "
                     "entries and the diagnosis are for it")
    return Report(
        ok=first_bad is None, **_header(p, "full", len(judged), threshold),
        comparisons=_full.merge([j["comparisons"] for j in judged]),
        taylor=next((j["taylor"] for j in judged if not j["taylor"].ok), judged[0]["taylor"]),
        kinks=kink, worst=tuple(focus["worst"]), diagnosis=diagnosis,
        problems=tuple(dict.fromkeys(pr for j in judged for pr in j["problems"])),
        notes=tuple(notes), matrices=matrices,
    )
