r"""Structured Jacobians as `lineax <https://docs.kidger.site/lineax/>`_ operators.

``J.to_lineax()`` is a ``lineax.AbstractLinearOperator`` from arrays of ``J.in_shape`` to
arrays of ``J.out_shape`` (``jax.ShapeDtypeStruct`` structures of those shapes, numerator
layout: ``op.as_matrix()`` is ``J.dense()`` reshaped to ``(out size, in size)``), built from
lineax's own structured operators where one is the structure (a diagonal is
``DiagonalLinearOperator``, $cI$ an identity times $c$, a dense array a
``PyTreeLinearOperator``, a product ``@``, a sum ``+``) and otherwise a
``FunctionLinearOperator`` on the structure's own ``jvp``.

Each structure registers here, beside its class, how it converts (:func:`as_operator`) and
which of lineax's tags it has been *established* to carry (:func:`established`): a diagonal is
diagonal and symmetric; it is positive (negative) semidefinite only where its formula shows
every entry to be $\ge 0$ ($\le 0$): ``diag(exp(x))``, ``diag(1[z > 0])``, never a diagonal
whose numbers happen to be positive at this point.  lineax trusts its tags without checking
them (a solver picked for a positive definite operator gives wrong answers on another), so
none is assumed.

lineax is an optional dependency (``pip install 'mcjax[lineax]'``), imported only here and
only when a conversion is asked for.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from mcjax._jacobian import _expr as E

TAGS = ("symmetric", "diagonal", "positive_semidefinite", "negative_semidefinite")
"""The tags mcjax may establish, by their lineax names without ``_tag``."""

_SIGN_TAGS = {1: frozenset({"positive_semidefinite"}),
              -1: frozenset({"negative_semidefinite"}), 0: frozenset()}


def lineax_module():
    """``lineax``, or an ImportError that says how to install it."""
    try:
        import lineax
    except ImportError:
        raise ImportError("mcjax.Jacobian.to_lineax needs lineax, which is not installed; "
                          "install it with pip install 'mcjax[lineax]'") from None
    return lineax


def structure(shape, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype))


@functools.singledispatch
def as_operator(J, lx) -> Any:
    """``J`` as a lineax operator without tags: by default a ``FunctionLinearOperator``
    applying ``J.jvp`` (its transpose is JAX's transpose of that linear map)."""
    return lx.FunctionLinearOperator(J.jvp, structure(J.in_shape, J.dtype))


@functools.singledispatch
def established(J) -> frozenset[str]:
    """The tags (names from :data:`TAGS`) that ``J``'s structure and formula establish."""
    return frozenset()


def sign_tags(J, index: int = 0) -> frozenset[str]:
    """Positive or negative semidefiniteness of a diagonal-like ``J`` whose entries are its
    ``index``-th symbol: known only from a formula that :func:`mcjax.derive` attached (and
    that is the array's value), never from the numbers."""
    if J.symbols is None or not J.symbols_are_values:
        return frozenset()
    return _SIGN_TAGS[E.sign(J.symbols[index])]


def tags_of(J) -> frozenset[str]:
    """The tags ``J`` carries as a lineax operator: :func:`established`, kept only where lineax
    can hold them (input and output of one shape, a real dtype for all but ``diagonal``), and
    ``diagonal`` and ``symmetric`` for a map of one number to one number."""
    if tuple(J.in_shape) != tuple(J.out_shape):
        return frozenset()
    tags = set(established(J))
    if math.prod(J.in_shape) == 1:
        tags |= {"diagonal", "symmetric"}
    if not jnp.issubdtype(J.dtype, jnp.floating):
        tags &= {"diagonal"}
    return frozenset(tags)


def _reports(lx, op, name: str) -> bool:
    return bool(getattr(lx, f"is_{name}")(op))


def to_lineax(J) -> Any:
    """``J`` as a ``lineax.AbstractLinearOperator``, with the tags mcjax established."""
    lx = lineax_module()
    op = as_operator(J, lx)
    tags = tags_of(J)
    if tags - {"diagonal"} and op.in_structure() != op.out_structure():
        tags &= {"diagonal"}  # lineax holds a symmetric operator to one structure, dtype too
    reported = {name for name in TAGS if _reports(lx, op, name)}
    if tags <= reported:
        return op
    return lx.TaggedLinearOperator(op, [getattr(lx, f"{name}_tag")
                                        for name in sorted(tags | reported)])
