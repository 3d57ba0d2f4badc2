"""Numerator and denominator layout, and the conversion between them.

mcjax's layout is *numerator* (``mcjax.conventions.LAYOUT``): the Jacobian of ``f`` at an argument of
shape ``in`` with output shape ``out`` has shape ``out + in``.  Many texts (and many hand
derivations) use *denominator* layout, ``in + out``: the transpose.  For a scalar ``f`` the
two agree (the gradient has the argument's shape).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from mcjax._core._errors import ShapeError, shape_str
from mcjax._jacobian import Jacobian


def _move_front_to_back(J, count: int, name: str, what: str):
    J = J.dense() if isinstance(J, Jacobian) else jnp.asarray(J)
    if not 0 <= count <= J.ndim:
        raise ShapeError(f"mcjax.{name}: {what}={count} does not fit an array of shape "
                         f"{shape_str(J.shape)}; expected 0 <= {what} <= {J.ndim}")
    return jnp.moveaxis(J, tuple(range(count)), tuple(range(J.ndim - count, J.ndim)))


def to_denominator(J: ArrayLike | Jacobian, out_ndim: int | None = None) -> jax.Array:
    """A numerator-layout Jacobian (shape ``out + in``) in denominator layout (``in + out``).

    Args:
      J: an array of shape ``out + in``, or a ``mcjax.Jacobian`` (then ``out_ndim`` is
        its own).
      out_ndim: how many leading axes of ``J`` belong to the output.

    Returns:
      An array of shape ``in + out``.
    """
    if isinstance(J, Jacobian):
        out_ndim = len(J.out_shape)
    if out_ndim is None:
        raise TypeError("mcjax.conventions.to_denominator: out_ndim is required for an array; expected the "
                        "number of output axes")
    return _move_front_to_back(J, out_ndim, "to_denominator", "out_ndim")


def to_numerator(J: ArrayLike, in_ndim: int) -> jax.Array:
    """A denominator-layout Jacobian (shape ``in + out``) in numerator layout (``out + in``).

    Args:
      J: an array of shape ``in + out``.
      in_ndim: how many leading axes of ``J`` belong to the argument.

    Returns:
      An array of shape ``out + in``.
    """
    return _move_front_to_back(J, in_ndim, "to_numerator", "in_ndim")
