"""Small pieces the rule families share: argument checks and derivative builders."""

from __future__ import annotations

from collections.abc import Callable

import jax

from mcjax._core._errors import Problems
from mcjax._jacobian import Diagonal
from mcjax._registry import Derivative


def check_same_shape(function: str, names: tuple[str, ...], *arrays) -> None:
    """Element-wise binary operators take arguments of one shape and one floating dtype.

    Broadcasting a scalar is scalar expansion (§4.3), a rule of its own; anything else is
    refused rather than silently broadcast.
    """
    problems = Problems(function)
    problems.expect_same_shape(names, arrays)
    problems.expect_same_float_dtype(names, arrays)
    problems.raise_if_any()


def diagonal(derivative: Callable[..., jax.Array], text: str, latex: str) -> dict:
    """``wrt`` for an element-wise unary function with derivative ``derivative(x, **hyper)``:
    the Jacobian is ``diag(derivative(x))`` (§4.2)."""
    return {"x": Derivative(lambda x, **hyper: Diagonal(derivative(x, **hyper)), text, latex)}
