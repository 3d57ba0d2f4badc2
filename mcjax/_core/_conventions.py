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

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

LAYOUT = "numerator"
"""mcjax's Jacobian layout: ``J.shape == out.shape + in.shape``, as ``jax.jacfwd`` (§4.1)."""

RELU_GRAD_AT_ZERO = 0.0
"""``relu'(0)``, as ``jax.grad(jax.nn.relu)(0.)`` (``jnp.maximum(x, 0)`` gives 1/2 there)."""

LEAKY_RELU_GRAD_AT_ZERO = 1.0
"""``leaky_relu'(0)``: the ``x >= 0`` branch, as ``jax.nn.leaky_relu``."""

ABS_GRAD_AT_ZERO = 1.0
"""``abs'(0)``: the ``x >= 0`` branch, as ``jax.grad(jnp.abs)`` (although ``sign(0) = 0``)."""

MAX_TIE_SHARE = 0.5
"""Each argument's share of ``d max(x, y)`` at a tie ``x == y``, as ``jnp.maximum``: the two
partials still sum to 1."""


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


def tolerance(dtype: DTypeLike) -> Tolerance:
    """The tolerance for comparing derivatives computed in ``dtype``.

    Args:
      dtype: a floating dtype (anything ``numpy.dtype`` accepts).

    Returns:
      A ``mcjax.conventions.Tolerance`` ``(rtol, atol)``.

    Raises:
      TypeError: if ``dtype`` is not a floating dtype mcjax knows.
    """
    name = np.dtype(dtype).name
    try:
        return _TOLERANCES[name]
    except KeyError:
        raise TypeError(
            f"mcjax.conventions.tolerance: no tolerance for dtype {name}; expected one of "
            f"{', '.join(_TOLERANCES)}"
        ) from None


DATA_PARALLEL_ULPS_PER_STEP = 4
"""How far a data-parallel run may drift from the one-device run, per optimizer step, in
units of the dtype's machine epsilon times the parameters' scale.  See
``mcjax.conventions.data_parallel_tolerance``."""


def data_parallel_tolerance(dtype: DTypeLike, steps: int) -> Tolerance:
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


def wider(*values):
    """The dtype ``values`` (arrays or dtypes) promote to by JAX's standard rules, whatever
    ``jax_numpy_dtype_promotion`` a user has set: mcjax's own bookkeeping (the dtype a
    Jacobian computes in, a derivative's against its function's) never fails under a strict
    setting, which governs the user's code."""
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(*values)


def standard_promotion():
    """A context in which JAX promotes dtypes by its standard rules: for a library written
    for them (optax's updates), run from code that a user may run under strict promotion."""
    return jax.numpy_dtype_promotion("standard")


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
