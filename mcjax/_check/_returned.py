"""What the derivative under test returned: a derivative value, or a VJP function.

A gradient may come in the model's own type: an Equinox module (callable, as the model is)
from ``jax.grad``, ``eqx.filter_grad`` or a hand gradient built with ``eqx.tree_at``, an nnx
``State`` from ``nnx.grad``, a linen ``FrozenDict``.  So a value is never taken for a VJP
function because it is callable (:func:`is_pullback`): one marked with :class:`vjp` is, and
so are JAX's own pullback (``jax.vjp``'s) and a callable that is no pytree of arrays (a Python
function, a lambda); a callable pytree of arrays (an Equinox module) is a derivative value.

:func:`as_derivative` brings a derivative value to the argument's structure: the leaves that
are not differentiated (``None`` from ``eqx.filter_grad``, the model's own ``activation``
kept by ``eqx.tree_at``, an integer array) are dropped, and a gradient whose differentiated
leaves match the argument's one to one by path (``['params']['W']`` of a ``FrozenDict`` and
of a ``dict``; ``['layers'][0]['kernel'].value`` of an nnx ``State`` and
``.layers[0].kernel.value`` of the Module) is the same gradient, rebuilt in the argument's
own structure.  A gradient over the whole model (``jax.grad`` of an nnx ``State`` with its
``nnx.BatchStat``, of linen variables with ``batch_stats``) may also hold entries at the
argument's state, which is not differentiated: those are dropped *and named* (``held``,
``dropped``), for the report to say they were not compared.  Anything else is left as it came,
for the shape checks to name.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mcjax._check._flat import FlatSpec
from mcjax._core._arguments import require_callable
from mcjax._core._pytrees import is_inexact_array, plain_path
from mcjax._jacobian import Jacobian


class vjp:  # noqa: N801 - named as users call it, mcjax.vjp(fn), like jax.vjp
    r"""Marks a function as a VJP function ``u -> u^T J``: what a derivative returns for
    ``mcjax.check`` to call it with cotangents.

    A derivative's callable result is a VJP function already when it is a plain Python
    function (a lambda, ``functools.partial``) or the pullback of ``jax.vjp`` or
    ``eqx.filter_vjp``; a callable pytree of arrays (an Equinox module) is taken for a
    gradient in the model's own type.  Wrap a VJP function that is itself a pytree of
    arrays (an ``eqx.Module`` with a ``__call__``, say) to say which it is.

    Args:
      fn: the VJP function: ``fn(u)`` with ``u`` shaped like ``f``'s output (its pytree)
        returns ``u^T J`` shaped like the differentiated argument (for a tuple of
        ``argnums``, a tuple with one entry per argument).

    Example:

        >>> def f(x):
        ...     return jnp.sin(x)
        >>> def pullback_of_f(x):
        ...     return mcjax.vjp(lambda u: u * jnp.cos(x))  # u^T diag(cos x)
        >>> mcjax.check(f, pullback_of_f, jnp.arange(3.0)).ok
        True
    """

    def __init__(self, fn):
        require_callable("vjp", "fn", fn, "a function u -> u^T J")
        self.fn = fn

    def __call__(self, u):
        return self.fn(u)

    def __repr__(self) -> str:
        return f"mcjax.vjp({getattr(self.fn, '__name__', None) or repr(self.fn)})"


@functools.cache
def _jax_pullbacks() -> tuple[type, ...]:
    """The types of JAX's own pullbacks (``jax.vjp``'s: a ``Partial`` in older JAX)."""
    return (jax.tree_util.Partial, type(jax.vjp(jnp.sin, 1.0)[1]))


def _is_jacobian(leaf) -> bool:
    return isinstance(leaf, Jacobian)


def is_pullback(value) -> bool:
    """Whether the derivative's ``value`` is a VJP function: one marked with :class:`vjp`,
    JAX's own pullback (``jax.vjp``'s, ``eqx.filter_vjp``'s), or a callable that is no
    pytree of arrays (a Python function, a lambda, ``functools.partial``, a jitted function).
    A callable pytree of arrays (an Equinox module) is a gradient in the model's own type."""
    if isinstance(value, vjp):
        return True
    if not callable(value) or isinstance(value, Jacobian):
        return False
    if isinstance(value, _jax_pullbacks()):
        return True
    leaves = jax.tree_util.tree_leaves(value)
    return len(leaves) == 1 and leaves[0] is value


def pullback_of(value):
    """The function to call for a VJP function ``value`` (unwrapping :class:`vjp`)."""
    return value.fn if isinstance(value, vjp) else value


def as_derivative(value, x_spec: FlatSpec, out_spec: FlatSpec, held=(), dropped=None):
    """``value`` (in ``jax.jacfwd``'s structure: ``f``'s output tree of argument trees, for a
    scalar ``f`` the gradient) with each argument tree brought to the argument's own
    structure where it can be (see :func:`as_argument`)."""
    try:
        parts = out_spec.treedef.flatten_up_to(value)
    except (ValueError, TypeError):
        return value  # not f's output tree: the shape checks say so
    return out_spec.treedef.unflatten([as_argument(part, x_spec, held, dropped)
                                       for part in parts])


def as_argument(tree, x_spec: FlatSpec, held=(), dropped: list | None = None):
    """``tree`` in the structure of the differentiated argument ``x_spec``: as it is when it
    has it; rebuilt there when its differentiated leaves (arrays of a floating dtype, or
    ``mcjax.Jacobian``s) match the argument's one to one by path, the rest (``None``,
    functions, integer arrays: the model's untouched part) dropped, and so are entries at
    the paths ``held`` (the argument's state, not differentiated: ``_pytrees.held_state``),
    their paths appended to ``dropped``; else with every leaf that is no array and no
    Jacobian made ``None`` (the shape checks then name both trees)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_jacobian)
    if treedef == x_spec.treedef:
        return tree
    kept = {}
    for path, leaf in flat:
        if _is_jacobian(leaf) or is_inexact_array(leaf):
            kept.setdefault(plain_path(path), []).append(leaf)
    wanted = x_spec.plain_paths
    extra = sorted(set(kept) - set(wanted))
    if (set(wanted) <= set(kept) and all(p in held for p in extra)
            and all(len(kept[p]) == 1 for p in wanted)):
        if dropped is not None:
            dropped.extend(p for p in extra if p not in dropped)
        return x_spec.treedef.unflatten([kept[p][0] for p in wanted])
    return jax.tree_util.tree_map(
        lambda a: a if _is_jacobian(a) or isinstance(a, (jax.Array, jax.ShapeDtypeStruct))
        or hasattr(a, "shape") else None, tree, is_leaf=_is_jacobian)


def as_vjp_result(result, x_spec: FlatSpec, held=(), dropped: list | None = None):
    """A VJP function's ``u^T J`` in the argument's structure: ``jax.vjp``'s 1-tuple
    unpacked, then as :func:`as_argument`."""
    if (isinstance(result, tuple) and len(result) == 1
            and jax.tree_util.tree_structure(result) != x_spec.treedef):
        result = result[0]  # a pullback from jax.vjp or eqx.filter_vjp
    return as_argument(result, x_spec, held, dropped)
