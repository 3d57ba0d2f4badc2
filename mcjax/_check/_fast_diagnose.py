r"""Name the slip in fast mode: which leaves of the argument are wrong, and how.

Fast mode never builds the Jacobian, but a failing check has, at each failing point, the whole
vector ``u^T J`` of both sides, leaf by leaf (for a scalar ``f``, ``u = 1``: the gradient
itself).  A slip of the usual kinds leaves a trace there that needs no further evaluation of
``f``: with ``g`` the derivative under test's ``u^T J`` on one leaf and ``r`` the
reference's, each test below asks whether ``g`` equals ``r`` after one known slip, within
twice the comparison's own thresholds (full mode's slack), at every failing point:

- **a constant factor on the whole argument** (``G = c F``: a missing ``1/B``, a flipped sign),
  ``c = <g, r> / <r, r>`` over all leaves, the same ``c`` at every point;
- **a constant factor or sign on one leaf** (``sum`` for ``mean`` in one bias);
- **one leaf transposed** (its last two axes swapped: ``x h^T`` for ``h x^T`` with a square
  ``W``), or **two leaves' gradients swapped** (same shapes);
- **one leaf left out** (``g = 0``), **a missing gate** (right where ``r != 0``, not 0 where
  ``r = 0``), **NaN or Inf** where ``r`` is finite, **a few entries** only (an index or a
  special case);
- failing those, **a missing term or a wrong formula in that leaf**: it is wrong by more than
  a constant factor.

The leaves that pass are said to be right.  Factors are named by ``_diagnose._name_factor``
(``N``, ``1/N``, ``sqrt(d)`` from the problem's sizes).  For a vector ``f`` the same tests
hold for ``u^T G`` against ``u^T F`` of one random ``u`` (a factor or a transposition of a
leaf's block of the Jacobian shows as the same factor or transposition of ``u^T J``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mcjax._check._diagnose import _name_factor, usual_factor
from mcjax._check._flat import FlatSpec
from mcjax._check._report_parts import Slip

Sides = tuple[Sequence[np.ndarray], Sequence[np.ndarray]]  # (got, ref) leaf by leaf
_OTHER = ": a missing term or wrong formula in this leaf"
FEW_ENTRIES = 3  # a leaf wrong at this many entries or fewer is named by them


def _close(a, b, slack) -> bool:
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.abs(a - b) <= slack))


def _factor(points, slack, sizes: Mapping[str, int]) -> float | None:
    """The constant ``c != 0, 1`` with ``g = c r`` at every point (``points``: ``(g, r)``
    pairs, ``slack``: one per point), or None.  ``c`` is fitted over all the points at once
    (least squares), so a factor that changes with ``x`` misses at one of them.  Fitted on a
    single nonzero entry, only a usual ``c`` (``usual_factor``) counts."""
    denominator = sum(float(np.sum(r * r)) for _, r in points)
    if denominator == 0:
        return None
    c = sum(float(np.sum(g * r)) for g, r in points) / denominator
    if not np.isfinite(c) or c == 0 or abs(c - 1) <= 1e-6:
        return None
    if not all(_close(g, c * r, s * max(1.0, abs(c))) for (g, r), s in zip(points, slack)):
        return None
    # one nonzero entry fits any c: a factor that is none of the usual ones needs two
    evidence = sum(int(np.sum(np.abs(r) > s)) for (_, r), s in zip(points, slack))
    if evidence < 2 and usual_factor(c, sizes, two_sizes=False) is None:
        return None
    return c


def _kind(c: float) -> str:
    return "sign" if abs(c + 1) <= 1e-3 else "factor"


def _leaf_slip(j: int, vectors: Sequence[Sides], slack: np.ndarray, x_spec: FlatSpec,
               sizes: Mapping[str, int], wrong: Sequence[int], names: Sequence[str]) -> Slip:
    """What is wrong with leaf ``j`` (one of the leaves ``wrong``, which fail somewhere)."""
    name = names[j]
    pairs = [(got[j], ref[j]) for got, ref in vectors]
    leaf_slack = slack[:, j]
    g0, r0 = pairs[0]
    bad = ~np.isfinite(g0) & np.isfinite(r0)
    if bad.any():
        return Slip("nonfinite", f"NaN or Inf in the gradient of {name} at {int(bad.sum())} "
                    "entries where the reference is finite: an overflow (exp of a large "
                    "argument?) or 0/0 in an unstable formula")
    if all(_close(g, 0.0, s) for (g, _), s in zip(pairs, leaf_slack)):
        return Slip("missing-term", f"the gradient of {name} is 0 where the reference's is not: "
                    "this leaf's gradient left out (a term missing, or a stop_gradient?)")
    c = _factor(pairs, leaf_slack, sizes)
    if c is not None:
        return Slip(_kind(c), _on_leaves([name], _name_factor(c, sizes)))
    shape = g0.shape
    if len(shape) >= 2 and shape[-1] == shape[-2] > 1:
        axes = (len(shape) - 2, len(shape) - 1)
        swapped = [(g, np.swapaxes(r, -1, -2)) for g, r in pairs]
        if not all(_close(r, rt, s) for (_, rt), (_, r), s in zip(swapped, pairs, leaf_slack)):
            if all(_close(g, rt, s) for (g, rt), s in zip(swapped, leaf_slack)):
                return Slip("transposed", f"matches the reference with {name}'s axes {axes} "
                            "swapped: the gradient of a matrix transposed (x h^T where h x^T "
                            "was due?)")
            c = _factor(swapped, leaf_slack, sizes)
            if c is not None:
                return Slip("transposed", f"matches the reference with {name}'s axes {axes} "
                            "swapped (the gradient of a matrix transposed) and times "
                            f"{_name_factor(c, sizes)}")
    # a swap makes exactly two leaves wrong: compared with the other wrong ones, when few
    for k in wrong if len(wrong) <= 4 else ():
        if k == j or x_spec.shapes[k] != x_spec.shapes[j]:
            continue
        others = [(got[j], ref[k]) for got, ref in vectors]
        if all(_close(g, r, s) and not _close(ref[j], r, s)
               for (g, r), (_, ref), s in zip(others, vectors, leaf_slack)):
            return Slip("swapped", f"the gradient of {name} matches the reference's gradient of "
                        f"{names[k]}: two leaves' gradients swapped?")
    with np.errstate(invalid="ignore"):
        off = [np.argwhere(~(np.abs(g - r) <= s / 2)) for (g, r), s in zip(pairs, leaf_slack)]
    count = max(len(o) for o in off)
    if count <= FEW_ENTRIES and g0.size >= 10 * FEW_ENTRIES:
        at = [f"{name}[{', '.join(str(int(i)) for i in index)}]" for index in
              dict.fromkeys(tuple(i) for o in off for i in o)]
        return Slip("wrong-entries", f"{name} is wrong at {count} of its {g0.size} entries only "
                    f"({', '.join(at[:FEW_ENTRIES])}): an index or a special case off, not the "
                    "formula of the whole leaf")
    zero = [np.abs(r) <= s for (_, r), s in zip(pairs, leaf_slack)]
    if all(z.any() and (~z).any() for z in zero) and all(
            _close(np.where(z, 0.0, g), np.where(z, 0.0, r), s)
            for (g, r), z, s in zip(pairs, zero, leaf_slack)):
        return Slip("missing-gate", f"a missing gate or mask in {name}: its gradient is right "
                    "where the reference's is nonzero, but nonzero where it is 0 (a ReLU's "
                    "1[z > 0]?)")
    return Slip("missing-term", f"{name} is wrong by more than a constant factor{_OTHER}")


def diagnose(vectors: Sequence[Sides], allowed: np.ndarray, x_spec: FlatSpec,
             sizes: Mapping[str, int], scalar: bool = True
             ) -> tuple[list[Slip], list[str]]:
    """The slips that explain a failing fast check, and which leaves are wrong and right.

    Args:
      vectors: per failing point, ``(got, ref)``: ``u^T J`` of the derivative under test and of
        ``jax.vjp``, leaf by leaf in the leaves' shapes, float64.
      allowed: ``(points, leaves)``: each leaf's threshold at each failing point.
      x_spec: the argument's leaves (``x_spec.leaf_names`` name them: ``params['W2']``).
      sizes: the problem's sizes by description, candidates for a factor ``N``.
      scalar: whether ``f`` is scalar (``u^T J`` is then the gradient).

    Returns:
      ``(slips, where)``: the slips, one per wrong leaf or one for the whole argument; and one
      line per wrong leaf (how many of its entries fail) and one naming the right leaves.
    """
    allowed, names = np.asarray(allowed, np.float64), x_spec.leaf_names
    slack = 2 * allowed
    leaves = range(len(x_spec.paths))
    with np.errstate(invalid="ignore", over="ignore"):
        failed = [[~(np.abs(got[j] - ref[j]) <= a[j]) for (got, ref), a in zip(vectors, allowed)]
                  for j in leaves]
    wrong = [j for j in leaves if any(f.any() for f in failed[j])]
    what = "d out / d " if scalar else "u^T J on "
    where = [f"{int(max(f.sum() for f in failed[j]))} of {x_spec.sizes[j]} entries of "
             f"{what}{names[j]} are wrong" for j in wrong]
    right = [names[j] for j in leaves if j not in wrong]
    if right and wrong:
        where.append(f"right: {', '.join(right[:8])}{' ...' if len(right) > 8 else ''}")
    if not wrong:
        return [], where
    whole = [(np.concatenate([np.ravel(g) for g in got]), np.concatenate([np.ravel(r) for r in ref]))
             for got, ref in vectors]
    whole_slack = [np.concatenate([np.full(n, s) for n, s in zip(x_spec.sizes, row)])
                   for row in slack]
    c = _factor(whole, whole_slack, sizes)  # the leaves the reference is 0 on agree with any c
    if c is not None:
        return [Slip(_kind(c), "a constant factor: matches the reference times "
                     f"{_name_factor(c, sizes)}")], where
    slips = [_leaf_slip(j, vectors, slack, x_spec, sizes, wrong, names) for j in wrong]
    return _merged(slips, [names[j] for j in wrong]), where


def _listed(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]}"


def _on_leaves(names: Sequence[str], factor: str) -> str:
    whose = "its gradient matches" if len(names) == 1 else "their gradients match"
    return f"a constant factor on {_listed(names)} only: {whose} the reference times {factor}"


def _merged(slips: list[Slip], names: list[str]) -> list[Slip]:
    """One slip for the leaves that share one: the same constant factor, or wrong by more than
    a factor (a slip in a part of the backward pass they share, such as a layer's delta, shows
    in each of them)."""
    factors: dict[tuple[str, str], list[str]] = {}
    formula, other = [], []
    for slip, name in zip(slips, names):
        if slip.sentence == _on_leaves([name], factor := slip.sentence.split(" times ", 1)[-1]):
            factors.setdefault((slip.kind, factor), []).append(name)
        elif slip.sentence.endswith(_OTHER):
            formula.append(name)
        else:
            other.append(slip)
    out = [Slip(kind, _on_leaves(leaves, factor)) for (kind, factor), leaves in factors.items()]
    out += other
    if len(formula) == 1:
        out.append(Slip("missing-term", f"{formula[0]} is wrong by more than a constant "
                        f"factor{_OTHER}"))
    elif formula:
        out.append(Slip("missing-term", f"{_listed(formula)} are wrong by more than a constant "
                        "factor: a missing term or wrong formula in these leaves, or in a part "
                        "of the backward pass they share (a layer's delta, the forward values "
                        "it recomputes)"))
    return out
