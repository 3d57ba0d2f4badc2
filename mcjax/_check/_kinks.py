"""Finite differences on the host: Richardson's value, its error, and the kinks it crosses.

For a smooth ``f`` the one-sided differences of one stencil differ by
``D+(h) - D-(h) = h f'' + O(h^3)``: the gap halves when ``h`` halves.  Where a stencil
crosses a kink (ReLU, max, abs), the gap holds a jump that does not shrink.  Entries whose
gaps break the smooth law are *kinks*:

- **at a kink** when even the smallest stencil still straddles a jump: the derivative there
  is a convention, not a number; the checker reports which one the derivative under test
  follows (``left``, ``right``, ``zero``, ``average``) and fails only when it follows none,
  or not the one the user asked for;
- **near a kink** when only the larger stencils cross it: the derivative at ``x`` is well
  defined (autodiff still judges it) but the extrapolated finite difference is not trusted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcjax._conventions import FD_ERROR_SAFETY, KINK_CONVENTIONS, KINK_JUMP, KINK_MATCH


@dataclass(frozen=True)
class FiniteDifferences:
    """The finite-difference reference at one point, all arrays ``(m, n)`` in float64."""

    value: np.ndarray  # Richardson-extrapolated central differences
    error: np.ndarray  # the allowance for the reference's own error (already times the safety)
    at_kink: np.ndarray  # bool
    near_kink: np.ndarray  # bool
    left: np.ndarray  # one-sided derivatives of the smallest stencil
    right: np.ndarray
    precision: str


def analyse(stencils: dict, scale: np.ndarray, precision: str) -> FiniteDifferences:
    """Extrapolate, estimate the error and find the kinks of one point's stencils.

    Args:
      stencils: from :func:`mcjax._check._references.finite_difference_stencils`, as NumPy.
      scale: ``(m, n)``, the magnitude each entry is judged against.
      precision: the dtype ``f`` rounds to.
    """
    f0 = np.asarray(stencils["f0"], np.float64)[:, None]
    plus = np.asarray(stencils["plus"], np.float64)
    minus = np.asarray(stencils["minus"], np.float64)
    hp = np.asarray(stencils["h_plus"], np.float64)[:, None, :]
    hm = np.asarray(stencils["h_minus"], np.float64)[:, None, :]
    central = (plus - minus) / (hp + hm)  # (L, m, n)
    r1 = (4 * central[1] - central[0]) / 3
    r2 = (4 * central[2] - central[1]) / 3
    value = r2 + (r2 - r1) / 15
    eps = float(np.finfo(np.dtype(precision)).eps)
    magnitude = np.maximum(np.abs(f0), np.max(np.maximum(np.abs(plus), np.abs(minus)), axis=0))
    rounding = 4 * eps * magnitude / hm[-1]
    error = FD_ERROR_SAFETY * (np.abs(r2 - r1) + rounding)

    right = (plus - f0) / hp
    left = (f0 - minus) / hm
    gap = right - left  # (L, m, n)
    deviation = np.maximum(np.abs(gap[0] - 2 * gap[1]), np.abs(gap[1] - 2 * gap[2]))
    threshold = KINK_JUMP * scale + 10 * rounding
    kinky = deviation > threshold
    at_kink = kinky & (np.abs(gap[-1]) > threshold)
    return FiniteDifferences(value, error, at_kink, kinky & ~at_kink, left[-1], right[-1], precision)


def convention_values(left: np.ndarray, right: np.ndarray) -> dict[str, np.ndarray]:
    """What each convention of :data:`mcjax._conventions.KINK_CONVENTIONS` gives at a kink."""
    return {"left": left, "right": right, "zero": np.zeros_like(left),
            "average": (left + right) / 2}


def conventions_followed(got, left, right, allowed) -> list[list[str]]:
    """For each kink entry, the conventions ``got`` follows (possibly none)."""
    values = convention_values(left, right)
    slack = KINK_MATCH * np.abs(right - left) + allowed
    return [
        [name for name in KINK_CONVENTIONS if abs(got[i] - values[name][i]) <= slack[i]]
        for i in range(len(got))
    ]
