"""The Taylor-remainder verdict: a test with no tuned epsilon.

For a right derivative ``J``, ``r(h) = |f(x + h t) - f(x) - h J t|`` shrinks like ``h^2``; for a
wrong one like ``h`` (the term ``h (J_true - J) t`` dominates once ``h`` is small).  The
observed order is the slope of ``log r`` against ``log h`` over the smallest steps whose
remainder stands clear of rounding.  An order below 1.5 fails, unless the linear part of the
remainder is within the comparison threshold (a float32 derivative of a linear function has
a rounding-sized ``h`` term and is right).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import jax.numpy as jnp
import numpy as np

from mcjax._core._tolerance import TAYLOR_MIN_ORDER, TAYLOR_MIN_RUNGS


@dataclass(frozen=True)
class Taylor:
    """The Taylor test along one direction."""

    steps: tuple[float, ...]
    residuals: tuple[float, ...]
    order: float | None  # None: every remainder at rounding level (f linear along t)
    linear_error: float  # the remainder's h-term relative to |J t|
    ok: bool
    note: str


def verdict(steps, differences, Jt, f0, precision: str, rtol: float, kinks: bool,
            crossed=None, rough: bool = False) -> Taylor:
    """Judge the remainders ``differences[k] - steps[k] J t`` (all NumPy float64).

    The largest steps may leave ``f``'s domain (``log`` of a small ``x``: NaN) or cross a kink
    of ``f`` (``crossed``): the ladder is then judged from the smallest steps up to the first
    such one, when at least ``TAYLOR_MIN_RUNGS`` of them are left; with fewer, a crossing
    makes the test inconclusive and a NaN fails it.  ``kinks``: ``x`` itself is at a kink.
    ``rough``: finite differences found ``f`` varying faster than their steps can follow; the
    Taylor steps are no finer, so a low order is inconclusive there.
    """
    steps = np.asarray(steps, np.float64)
    differences = np.asarray(differences, np.float64)
    crossed = np.zeros(len(steps), bool) if crossed is None else np.asarray(crossed, bool)
    f0 = np.asarray(f0, np.float64)
    if not np.isfinite(f0).all():  # outputs that are NaN or Inf at x say nothing about J
        finite = np.isfinite(f0)
        left_out = int((~finite).sum())
        if not finite.any():
            return Taylor(tuple(float(h) for h in steps), (), None, 0.0, True,
                          "inconclusive: every output of f is NaN or Inf at x")
        taylor = verdict(steps, differences[:, finite], np.asarray(Jt)[finite], f0[finite],
                         precision, rtol, kinks, crossed, rough)
        return replace(taylor, note=f"{taylor.note} (the {left_out} outputs where f is NaN or "
                                    "Inf at x left out)")
    residuals = np.linalg.norm(differences - steps[:, None] * Jt[None, :], axis=1)
    as_tuple = lambda a: tuple(float(v) for v in a)  # noqa: E731
    if kinks:
        return Taylor(as_tuple(steps), as_tuple(residuals), None, 0.0, True,
                      "inconclusive: x is at a kink of f, where f has no Taylor expansion")
    if rough:
        taylor = verdict(steps, differences, Jt, f0, precision, rtol, False, crossed)
        if not taylor.ok:
            return replace(taylor, ok=True, note=f"inconclusive: {taylor.note}, but f varies "
                           "faster than finite differences could resolve")
        return taylor
    outside = np.nonzero(~np.isfinite(residuals) | crossed)[0]
    if len(outside):
        left = len(steps) - 1 - outside[-1]
        why = ("crosses a kink of f" if crossed[outside[-1]] else
               "gives NaN or Inf (it leaves f's domain)")
        if left >= TAYLOR_MIN_RUNGS:
            inside = slice(outside[-1] + 1, None)
            taylor = verdict(steps[inside], differences[inside], Jt, f0, precision, rtol, False)
            return replace(taylor, note=f"{taylor.note}; judged on the {left} smallest steps, as "
                                        f"a larger one {why}")
        if crossed.any():
            return Taylor(as_tuple(steps), as_tuple(residuals), None, 0.0, True,
                          f"inconclusive: a step of {steps[outside[-1]]:.1e} (relative) already "
                          "crosses a kink of f")
    eps = float(jnp.finfo(precision).eps)
    noise = 100 * eps * (np.linalg.norm(f0) + np.linalg.norm(differences + f0, axis=1))
    valid = residuals > 10 * noise
    slopes = [np.log2(residuals[k] / residuals[k + 1])
              for k in range(len(steps) - 1) if valid[k] and valid[k + 1]]
    size = max(np.linalg.norm(Jt), np.finfo(np.float64).tiny)
    last = np.nonzero(valid)[0]
    linear_error = float(residuals[last[-1]] / (steps[last[-1]] * size)) if len(last) else 0.0
    if not np.all(np.isfinite(residuals)):
        return Taylor(as_tuple(steps), as_tuple(residuals), None, np.inf, False,
                      "the remainder is NaN or Inf")
    if not slopes:
        return Taylor(as_tuple(steps), as_tuple(residuals), None, linear_error, True,
                      "remainder at rounding level: f is linear along t and J t matches")
    order = float(np.median(slopes[-3:]))
    if order >= TAYLOR_MIN_ORDER:
        return Taylor(as_tuple(steps), as_tuple(residuals), order, linear_error, True,
                      f"remainder shrinks like h^{order:.2f}")
    if linear_error <= rtol:
        return Taylor(as_tuple(steps), as_tuple(residuals), order, linear_error, True,
                      f"remainder shrinks like h^{order:.2f} but its h-term is "
                      f"{linear_error:.1e} of |J t|, within rounding")
    return Taylor(as_tuple(steps), as_tuple(residuals), order, linear_error, False,
                  f"remainder shrinks like h^{order:.2f}, not h^2: J t is off by "
                  f"{linear_error:.1e} relative")
