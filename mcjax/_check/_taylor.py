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

import numpy as np

from mcjax._conventions import TAYLOR_MIN_ORDER, TAYLOR_MIN_RUNGS


@dataclass(frozen=True)
class Taylor:
    """The Taylor test along one direction."""

    steps: tuple[float, ...]
    residuals: tuple[float, ...]
    order: float | None  # None: every remainder at rounding level (f linear along t)
    linear_error: float  # the remainder's h-term relative to |J t|
    ok: bool
    note: str


def verdict(steps, differences, Jt, f0, precision: str, rtol: float, kinks: bool) -> Taylor:
    """Judge the remainders ``differences[k] - steps[k] J t`` (all NumPy float64).

    The largest steps may leave ``f``'s domain (``log`` of a small ``x``): their remainders are
    NaN and the ladder is judged from the smallest steps up to the first such one, when at
    least :data:`TAYLOR_MIN_RUNGS` of them are left.
    """
    steps = np.asarray(steps, np.float64)
    differences = np.asarray(differences, np.float64)
    residuals = np.linalg.norm(differences - steps[:, None] * Jt[None, :], axis=1)
    outside = np.nonzero(~np.isfinite(residuals))[0]
    if len(outside) and len(steps) - 1 - outside[-1] >= TAYLOR_MIN_RUNGS:
        inside = slice(outside[-1] + 1, None)
        taylor = verdict(steps[inside], differences[inside], Jt, f0, precision, rtol, kinks)
        return replace(taylor, note=f"{taylor.note}; judged on the {len(steps) - inside.start} "
                                    "smallest steps, as a larger one gives NaN or Inf (it leaves "
                                    "f's domain)")
    eps = float(np.finfo(np.dtype(precision)).eps)
    noise = 100 * eps * (np.linalg.norm(f0) + np.linalg.norm(differences + f0, axis=1))
    valid = residuals > 10 * noise
    slopes = [np.log2(residuals[k] / residuals[k + 1])
              for k in range(len(steps) - 1) if valid[k] and valid[k + 1]]
    size = max(np.linalg.norm(Jt), np.finfo(np.float64).tiny)
    last = np.nonzero(valid)[0]
    linear_error = float(residuals[last[-1]] / (steps[last[-1]] * size)) if len(last) else 0.0
    as_tuple = lambda a: tuple(float(v) for v in a)  # noqa: E731
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
    if kinks:
        return Taylor(as_tuple(steps), as_tuple(residuals), order, linear_error, True,
                      f"inconclusive: the remainder shrinks like h^{order:.2f} but the steps "
                      "cross kinks")
    return Taylor(as_tuple(steps), as_tuple(residuals), order, linear_error, False,
                  f"remainder shrinks like h^{order:.2f}, not h^2: J t is off by "
                  f"{linear_error:.1e} relative")
