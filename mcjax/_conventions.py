"""The conventions of mcjax, stated once and imported everywhere.

**Layout.** mcjax uses *numerator layout* (Parr & Howard, §4.1 "Generalization of the
Jacobian"): the Jacobian of $f: \\mathbb{R}^{\\text{in.shape}} \\to \\mathbb{R}^{\\text{out.shape}}$
has shape ``out.shape + in.shape``; entry ``J[i..., j...]`` is
$\\partial f_{i...} / \\partial x_{j...}$.  For a scalar ``f`` that is the gradient, with the
argument's shape.  This is also the layout of ``jax.jacfwd`` and ``jax.jacrev``.

**Kinks.** Where a function is not differentiable, mcjax returns one fixed element of the
sub-differential, chosen to agree with the JAX function a user would reach for:

- ``relu'(0) = 0`` (as ``jax.grad(jax.nn.relu)(0.)``; ``jnp.maximum(x, 0)`` gives ``1/2`` there);
- ``leaky_relu'(0) = 1`` (as ``jax.nn.leaky_relu``, which takes the ``x >= 0`` branch);
- ``abs'(0) = 1`` (as ``jax.grad(jnp.abs)``, which takes the ``x >= 0`` branch, although
  ``jnp.sign(0) = 0``);
- for ``max(x, y)`` at a tie ``x == y`` each argument gets ``1/2`` (as ``jnp.maximum``), so that
  the two partials still sum to 1 and ``d max(x, x) / dx = 1``.

**Tolerances.** How far a hand-derived derivative may sit from a reference computed in the
same dtype, as ``|got - ref| <= atol + rtol * scale`` with ``scale`` the largest magnitude of the
reference.  One table, per dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

LAYOUT = "numerator"
"""mcjax's Jacobian layout: ``J.shape == out.shape + in.shape``, as ``jax.jacfwd`` (§4.1)."""

RELU_GRAD_AT_ZERO = 0.0
LEAKY_RELU_GRAD_AT_ZERO = 1.0  # times 1: the x >= 0 branch, as jax.nn.leaky_relu
ABS_GRAD_AT_ZERO = 1.0  # the x >= 0 branch, as jax.grad(jnp.abs)
MAX_TIE_SHARE = 0.5


class Tolerance(NamedTuple):
    """Absolute and relative tolerance for comparing two derivatives of one dtype."""

    rtol: float
    atol: float


_TOLERANCES: dict[str, Tolerance] = {
    # Sums of a few hundred products in float32 stay well inside 1e-4 relative error;
    # a 0.1% slip (1e-3) is still caught.
    "float16": Tolerance(rtol=1e-2, atol=1e-3),
    "bfloat16": Tolerance(rtol=3e-2, atol=1e-2),
    "float32": Tolerance(rtol=1e-4, atol=1e-6),
    "float64": Tolerance(rtol=1e-9, atol=1e-12),
}


def tolerance(dtype) -> Tolerance:
    """The tolerance for comparing derivatives computed in ``dtype``.

    Args:
      dtype: a floating dtype (anything ``numpy.dtype`` accepts).

    Returns:
      A :class:`Tolerance` ``(rtol, atol)``.

    Raises:
      TypeError: if ``dtype`` is not a floating dtype mcjax knows.
    """
    name = np.dtype(dtype).name
    try:
        return _TOLERANCES[name]
    except KeyError:
        raise TypeError(
            f"mcjax.tolerance: no tolerance for dtype {name}; expected one of "
            f"{', '.join(_TOLERANCES)}"
        ) from None


DATA_PARALLEL_ULPS_PER_STEP = 4
"""How far a data-parallel run may drift from the one-device run, per optimizer step, in
units of the dtype's machine epsilon times the parameters' scale.  See
:func:`data_parallel_tolerance`."""


def data_parallel_tolerance(dtype, steps: int) -> Tolerance:
    r"""The bound a run on D devices is held to against the same run on one device.

    Both runs do the same arithmetic except one sum: the gradient's mean over the batch,
    which D devices add up as D partial sums and an all-reduce, in another order than one
    device's single pass.  That changes the gradient by a few units in the last place (ulp);
    the optimizer turns it into parameters that differ by about an ulp of their own scale
    per step (Adam's update $\eta\,\hat m / (\sqrt{\hat v} + \epsilon)$ is insensitive to a
    relative change of the gradient, SGD scales it by $\eta$).  Over ``steps`` steps:

    $$\max|\theta_D - \theta_1| \le 4\,\text{steps}\;\varepsilon\,(1 + \max|\theta_1|)$$

    with $\varepsilon$ the machine epsilon (float32 $1.2 \times 10^{-7}$, float64
    $2.2 \times 10^{-16}$), as ``|got - ref| <= atol + rtol * scale``.  It holds for a few
    hundred steps; long runs of a chaotic optimisation drift further, and Adam can amplify
    the noise of a gradient entry that cancels to within $\epsilon_{\text{Adam}}$ of zero.

    Args:
      dtype: the parameters' floating dtype.
      steps: the optimizer steps both runs took.
    """
    eps = float(np.finfo(np.dtype(dtype)).eps)
    bound = DATA_PARALLEL_ULPS_PER_STEP * max(int(steps), 1) * eps
    return Tolerance(rtol=bound, atol=bound)


def is_floating(x) -> bool:
    """Whether ``x`` (an array, a dtype-carrying object or a Python number) is floating point."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return isinstance(x, float)
    return bool(jnp.issubdtype(dtype, jnp.floating))


DTYPES = ("float32", "float64")
"""The dtypes that every rule is verified in."""

SHAPE_CASES: tuple[dict[str, int], ...] = (
    # size 1 everywhere, then two non-square cases with every dimension different
    {"n": 1, "m": 1, "B": 1, "k": 2},
    {"n": 3, "m": 4, "B": 2, "k": 3},
    {"n": 5, "m": 2, "B": 6, "k": 4},
)
"""Dimension sizes a rule's symbolic shapes (``"m n"``) are instantiated with when verified.
``k`` (the number of classes) starts at 2: a one-class softmax is constant."""

KINK_MARGIN = 0.05
"""Random verification points keep at least this distance from a rule's kinks."""


# -- the derivative checker (mcjax.check) ---------------------------------------------------
# Every threshold of the checker is here; the report prints the ones it used.

CHECK_RTOL_FACTOR = 32.0
"""A derivative computed in dtype ``d`` may differ from the reference by
``CHECK_RTOL_FACTOR * eps(d) * sqrt(terms)`` relative to the largest reference entry of its
leaf (see :func:`check_rtol`): rounding in a sum of ``terms`` products grows like
``sqrt(terms) * eps`` for random signs; the factor covers both sides' rounding and a margin.
Zero false alarms over the registry at many random points in float32 and float64 fixed it."""

ROUNDING_SAFETY = 16.0
"""Full mode measures ``f``'s own rounding (``jax.jacfwd`` in ``f``'s dtype against float64) and
widens each block's threshold by this many times its worst loss."""

CHECK_ATOL_FACTOR = 1e3
"""Absolute floor of the threshold, in units of the dtype's smallest normal number: only an
all-zero reference needs it."""


def check_rtol(dtype, terms: int) -> float:
    """The relative threshold of :func:`mcjax.check` for a derivative computed in ``dtype``
    whose entries are built from up to ``terms`` products: ``32 eps(dtype) sqrt(terms)``."""
    return float(CHECK_RTOL_FACTOR * np.finfo(np.dtype(dtype)).eps * np.sqrt(max(int(terms), 1)))


def check_atol(dtype) -> float:
    """The absolute floor of :func:`mcjax.check`'s threshold for ``dtype``."""
    return float(CHECK_ATOL_FACTOR * np.finfo(np.dtype(dtype)).tiny)


FULL_MODE_MAX_ENTRIES = 1 << 16
"""``mode="auto"`` materialises the Jacobian (full mode) when it has at most this many
entries and the argument at most :data:`FULL_MODE_MAX_INPUTS` coordinates; above either it
checks random projections (fast mode)."""

FULL_MODE_MAX_INPUTS = 2048
"""Finite differences cost six evaluations of ``f`` per coordinate; above this many
coordinates ``mode="auto"`` chooses fast mode."""

FD_STEP = {"float64": 1e-3, "float32": 3e-2, "float16": 0.2, "bfloat16": 0.3}
"""Base finite-difference step per reference precision, times each coordinate's scale
``max(|x_j|, rms of its leaf)``.  Richardson extrapolation of central differences has error
``O(h^4)`` and rounding ``eps/h``: the best ``h`` is near ``eps^(1/5)``."""

FD_LEVELS = 3
"""Central differences at steps ``h, h/2, h/4``, extrapolated twice (Richardson)."""

FD_ERROR_SAFETY = 8.0
"""A finite-difference entry is trusted to ``FD_ERROR_SAFETY`` times its own error estimate
(the spread of the extrapolations plus rounding ``eps f / h``)."""

KINK_JUMP = 1e-2
"""A stencil crosses a kink when its one-sided differences disagree in a way a smooth function
cannot (they must shrink like ``h``) by more than this fraction of the leaf's scale."""

KINK_CONVENTIONS = ("left", "right", "zero", "average")
"""What a derivative may return at a kink: the left or right one-sided derivative, 0, or the
average of the two (``jnp.maximum``'s 1/2 at a tie)."""

KINK_MATCH = 0.05
"""A derivative follows a kink convention when it is within this fraction of the jump
``|right - left|`` of the convention's value."""

TAYLOR_H0 = 0.1
"""The Taylor test's largest step, relative to each coordinate's scale."""

TAYLOR_RUNGS = 12
"""Steps ``h0, h0/2, ..., h0/2^11`` of the Taylor test."""

TAYLOR_MIN_ORDER = 1.5
"""The remainder ``|f(x + h v) - f(x) - h J v|`` of a right ``J`` shrinks like ``h^2``, of a
wrong one like ``h``: an observed order below 1.5 is a wrong ``J`` (unless the linear part
of the remainder is within the comparison threshold)."""

TAYLOR_MIN_RUNGS = 6
"""When the largest steps of the Taylor ladder leave ``f``'s domain (NaN), the test is judged
on the smallest steps up to the first NaN, if at least this many are left."""

FAST_POINTS = 2
"""Fast mode checks at ``x`` and at ``FAST_POINTS - 1`` random points near it."""

FAST_DIRECTIONS = 4
"""Fast mode's random unit directions ``v`` for the projections ``u^T J v`` per point."""

FAST_PERTURBATION = 0.05
"""Fast mode's extra points are ``x`` moved by this fraction of each coordinate's scale."""

WORST_ENTRIES = 5
"""How many of the worst entries a failing report lists."""
