"""Every setting of the derivative checker, in one place; the report prints the ones it used.

**The tolerance policy** (one for ``mcjax.check``, ``mcjax.assert_derivative`` and
``mcjax verify``).  An entry ``(i, j)`` of the derivative under test passes against a
reference when

$$|\\text{got}_{ij} - \\text{ref}_{ij}| \\le 32\\,\\varepsilon\\sqrt{T}\\cdot s_{ij}
+ 16\\,\\rho_{ij} + \\text{atol}$$

- $\\varepsilon$ is the machine epsilon of the dtype the derivative is judged in (the least
  precise of the argument and ``f``'s output), $T$ the longest sum (contraction, reduction)
  in ``f`` or the derivative: rounding in a sum of $T$ products grows like
  $\\sqrt{T}\\,\\varepsilon$ for random signs; the factor 32 covers both sides and a margin;
- $s_{ij}$ the largest reference magnitude of the entry's block (one leaf of the output
  against one leaf of the argument), so an entry is judged relative to its block's values;
- $\\rho_{ij}$ the rounding ``f`` itself shows at that block, measured: ``jax.jacfwd`` in
  float32 against float64, scaled to the dtype (formulas that cancel lose more than
  $\\varepsilon$; a derivative computed in ``f``'s dtype may lose as much);
- ``atol`` a floor of 1000 times the dtype's smallest normal number, for all-zero blocks.

Against finite differences the reference's own error estimate is added.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

CHECK_RTOL_FACTOR = 32.0
"""The ``32`` of ``32 eps sqrt(T)`` (see the module docstring)."""

HALF_RTOL_FACTOR = 4.0
"""For 16-bit derivatives (bfloat16, float16) the references are computed in float32, so
only the derivative's own rounding counts: ``4 eps sqrt(T)`` (3% in bfloat16, 0.4% in
float16 for a one-term formula), and an absolute floor of 4 smallest normals."""

ROUNDING_SAFETY = 16.0
"""Each block's threshold is widened by this many times the rounding loss ``f`` shows there."""

CHECK_ATOL_FACTOR = 1e3
"""Absolute floor of the threshold, in units of the dtype's smallest normal number: only an
all-zero reference needs it."""


def is_half(dtype) -> bool:
    """Whether ``dtype`` is a 16-bit float (judged against float32 references)."""
    return jnp.finfo(dtype).bits <= 16


def check_rtol(dtype: DTypeLike, terms: int) -> float:
    """The relative threshold for a derivative computed in ``dtype`` whose entries are built
    from up to ``terms`` products: ``32 eps(dtype) sqrt(terms)`` (``4 eps sqrt(terms)`` for a
    16-bit dtype, see ``HALF_RTOL_FACTOR``)."""
    factor = HALF_RTOL_FACTOR if is_half(dtype) else CHECK_RTOL_FACTOR
    return float(factor * jnp.finfo(dtype).eps * np.sqrt(max(int(terms), 1)))


def check_atol(dtype: DTypeLike) -> float:
    """The absolute floor of the threshold for ``dtype``."""
    factor = HALF_RTOL_FACTOR if is_half(dtype) else CHECK_ATOL_FACTOR
    return float(factor * jnp.finfo(dtype).tiny)


# -- modes ----------------------------------------------------------------------------------
FULL_MODE_MAX_ENTRIES = 1 << 16
"""``mode="auto"`` materialises the Jacobian (full mode) when it has at most this many
entries and the argument at most ``FULL_MODE_MAX_INPUTS`` coordinates; above either it
checks random projections (fast mode)."""

FULL_MODE_MAX_INPUTS = 2048
"""Finite differences cost ``4 FD_LEVELS`` evaluations of ``f`` per coordinate; above this many
coordinates ``mode="auto"`` chooses fast mode."""

# -- finite differences -----------------------------------------------------------------------
FD_STEP = 0.1
"""The largest finite-difference step, relative to each coordinate's scale
``max(|x_j|, rms of its leaf)``."""

FD_RATIO = 4
"""Each step of the ladder is the previous one divided by this."""

FD_LEVELS = 10
"""Steps ``h, h/4, ..., h/4^9``: from 0.1 down to 4e-7 of the coordinate's scale.  Richardson
extrapolation runs on every three consecutive steps and the estimate with the smallest error
(truncation, measured as the spread of neighbouring extrapolations, plus rounding
``eps |f| / h``) is kept: the step adapts to the function, e.g. to ``sin`` at ``x = 1000``."""

FD_ERROR_SAFETY = 8.0
"""A finite-difference entry is trusted to ``FD_ERROR_SAFETY`` times its own error estimate,
and never to better than ``sqrt(eps)`` of its scale (1.5e-8 in float64): an estimate can be
lucky, and finite differences are there to catch gross errors of an autodiff rule (a 0.1%
slip is 1e-3), not to second-guess exact references at 1e-12."""

FD_UNRESOLVED = 1e-2
"""Where the best error estimate is above this fraction of the entry's scale (cancellation,
overflow, a function too rough for any step), finite differences cannot judge the entry: the
report says so and the exact references alone judge it."""

# -- kinks ------------------------------------------------------------------------------------
KINK_CONVENTIONS = ("jax", "left", "right", "average")
"""What a derivative may return at a kink: JAX's own value (``jax.jacfwd``/``jax.jacrev``), the
left or the right one-sided derivative, or their average (``jnp.maximum``'s 1/2 at a tie)."""

SWITCH_ROUNDING = 2.0
"""A switching quantity (``a - b`` of ``max(a, b)``, of a comparison feeding ``where``; ``x``
of ``abs(x)``) is at its switch when ``|a - b|`` is at most this many times the rounding
error bound of ``a`` and ``b`` (propagated through ``f``'s jaxpr; 0 for ``f``'s arguments):
then either branch is what exact arithmetic could have taken."""

HESSIAN_NEAR_KINK = 1e-3
"""``mcjax.check_hessian`` names the coordinates along which a step of this fraction of the
coordinate's scale moves ``f``'s gradient onto another branch (a ReLU's gate flips): the
point is at, or this near, a kink of the gradient, where the second derivative is undefined
or jumps."""

# -- the Taylor test --------------------------------------------------------------------------
TAYLOR_H0 = 0.1
"""The Taylor test's largest step, relative to each coordinate's scale."""

TAYLOR_RUNGS = 12
"""Steps ``h0, h0/2, ..., h0/2^11`` of the Taylor test."""

TAYLOR_MIN_ORDER = 1.5
"""The remainder ``|f(x + h v) - f(x) - h J v|`` of a right ``J`` shrinks like ``h^2``, of a
wrong one like ``h``: an observed order below 1.5 is a wrong ``J`` (unless the linear part
of the remainder is within the comparison threshold)."""

TAYLOR_MIN_RUNGS = 6
"""When the largest steps of the ladder leave ``f``'s domain (NaN) or cross a kink, the test
is judged on the smallest steps up to the first such one, if at least this many are left."""

# -- fast mode --------------------------------------------------------------------------------
FAST_POINTS = 2
"""Fast mode checks at ``x`` and at ``FAST_POINTS - 1`` random points near it (for a scalar
``f``, the points near ``x`` only when ``x`` is special or fails: ``mcjax._check._fast``)."""

FAST_DIRECTIONS = 4
"""Fast mode's random unit directions ``v`` for the projections ``u^T J v`` per point."""

FAST_PERTURBATION = 0.05
"""Fast mode's extra points (and full mode's, with ``points > 1``) are ``x`` moved by this
fraction of each coordinate's scale."""

# -- the report -------------------------------------------------------------------------------
WORST_ENTRIES = 5
"""How many of the worst entries a failing report lists."""
