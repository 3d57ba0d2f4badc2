"""Comparing a derivative with a reference, entry by entry, against stated thresholds.

An entry passes when ``|got - ref| <= rtol * scale + atol (+ the reference's own error)``:

- ``rtol = 32 eps(dtype) sqrt(terms)`` (``mcjax._core._conventions.check_rtol``) scales with the
  dtype the derivative is computed in and with the longest sum that builds an entry;
- ``scale`` is the largest reference magnitude of the entry's block (one leaf of the output
  against one leaf of the argument; at least ``eps`` times the largest of all blocks), so a
  derivative is judged relative to the size of its values;
- the finite-difference reference adds its own error estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from mcjax._check._flat import FlatSpec, entry_label
from mcjax._core._tolerance import WORST_ENTRIES, check_atol, check_rtol


@dataclass(frozen=True)
class Threshold:
    """The thresholds one check used, for the report."""

    dtype: str
    terms: int
    rtol: float
    atol: float
    reference: str  # what the derivative is judged against, in words
    given: tuple[str, ...] = ()  # "rtol", "atol": the caller's overrides of the policy

    @classmethod
    def of(cls, dtype: str, terms: int, reference: str, rtol: float | None = None,
           atol: float | None = None) -> "Threshold":
        """The tolerance policy's thresholds (``mcjax._core._tolerance``), or the ``rtol``
        and ``atol`` a caller gave instead."""
        given = tuple(name for name, v in (("rtol", rtol), ("atol", atol)) if v is not None)
        return cls(dtype, int(terms), check_rtol(dtype, terms) if rtol is None else rtol,
                   check_atol(dtype) if atol is None else atol, reference, given)

    def describe(self) -> str:
        factor = self.rtol / (float(jnp.finfo(self.dtype).eps) * np.sqrt(max(self.terms, 1)))
        why = ("rtol given" if "rtol" in self.given else
               f"{factor:.0f} eps({self.dtype}) sqrt({self.terms} terms)")
        why += ", atol given" if "atol" in self.given else ""
        return (
            f"|got - ref| <= {self.rtol:.1e} x scale + {self.atol:.0e}  ({why}; scale = "
            f"largest |ref| of the block); reference: {self.reference}"
        )


@dataclass(frozen=True)
class Comparison:
    """The derivative against one reference."""

    reference: str
    max_abs: float  # largest |got - ref| over the compared entries
    max_rel: float  # the same over the entry's scale
    worst_ratio: float  # largest |got - ref| / allowed: <= 1 passes
    violations: int  # entries over their threshold
    compared: int
    excluded: int  # entries left out: at kinks, where the reference is undefined or unresolved
    ok: bool


@dataclass(frozen=True)
class Entry:
    """One entry of a failing comparison."""

    label: str
    i: int
    j: int
    expected: float
    got: float
    error: float
    allowed: float


def block_scales(ref: np.ndarray, out_spec: FlatSpec, x_spec: FlatSpec, eps: float) -> np.ndarray:
    """``(m, n)``: each entry's block's largest ``|ref|``, floored at ``eps`` times the largest."""
    magnitude = np.abs(np.where(np.isfinite(ref), ref, 0.0))
    floor = eps * float(magnitude.max(initial=0.0))
    scale = np.empty_like(magnitude)
    for oi, mi in zip(out_spec.offsets, out_spec.sizes):
        for oj, nj in zip(x_spec.offsets, x_spec.sizes):
            block = magnitude[oi : oi + mi, oj : oj + nj]
            scale[oi : oi + mi, oj : oj + nj] = max(float(block.max(initial=0.0)), floor)
    return scale


def compare(name, got, ref, allowed, scale, include) -> Comparison:
    """Compare ``got`` with ``ref`` where ``include``; every argument ``(m, n)``."""
    error = np.where(include, np.abs(got - ref), 0.0)
    ratio = error / allowed
    bad = include & ~(error <= allowed)  # NaN is never <= anything
    return Comparison(
        reference=name,
        max_abs=float(error.max(initial=0.0)),
        max_rel=float((error / np.maximum(scale, np.finfo(np.float64).tiny)).max(initial=0.0)),
        worst_ratio=float(ratio.max(initial=0.0)),
        violations=int(bad.sum()),
        compared=int(include.sum()),
        excluded=int((~include).sum()),
        ok=not bad.any(),
    )


def worst_entries(got, ref, allowed, include, out_spec, x_spec, k=WORST_ENTRIES) -> list[Entry]:
    """The ``k`` entries furthest over their threshold."""
    ratio = np.where(include, np.abs(got - ref) / allowed, -np.inf)
    order = np.argsort(ratio, axis=None)[::-1][:k]
    entries = []
    for flat in order:
        i, j = np.unravel_index(flat, got.shape)
        if ratio[i, j] <= 1:
            break
        entries.append(Entry(entry_label(out_spec, x_spec, int(i), int(j)), int(i), int(j),
                             float(ref[i, j]), float(got[i, j]),
                             float(abs(got[i, j] - ref[i, j])), float(allowed[i, j])))
    return entries


def nonfinite(name: str, values: np.ndarray, out_spec: FlatSpec, x_spec: FlatSpec) -> str | None:
    """A sentence saying where ``values`` holds NaN or Inf, or None."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return None
    where = [entry_label(out_spec, x_spec, int(i), int(j)) for i, j in zip(*np.nonzero(bad))]
    shown = ", ".join(where[:5]) + (f" and {len(where) - 5} more" if len(where) > 5 else "")
    return f"{name} has {int(bad.sum())} NaN or Inf entr{'y' if bad.sum() == 1 else 'ies'} at {shown}"
