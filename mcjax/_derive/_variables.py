"""The arguments of ``mcjax.hessian`` and ``mcjax.gauss_newton``: variables, data, static rest.

``f``'s positional arguments are split three ways, as Equinox's ``filter_grad`` and
``filter_jit`` split a model:

- **variables**: the trained leaves of the arguments ``argnums`` names (``partition``'s
  first part: their floating arrays, a Python float in a plain container among them as
  ``jax.grad`` takes ``{"w": 1.0}``; an nnx Module's ``nnx.Param``, linen's ``"params"``).  A second
  derivative acts on them flattened in ``argnums``' order: ``ravel_pytree`` of the argument,
  or of the tuple of arguments where ``argnums`` is a tuple (as ``jax.hessian`` lays out its
  blocks);
- **data**: every other array leaf (an integer array, a model's state, a PRNG key, the other
  arguments' arrays and Python floats): traced, not differentiated;
- **static**: every leaf that is no array (a function, a string, a Python int or bool, a
  float field of an object, any other object): closed over, so ``f`` sees it as it is, never
  a tracer.  The compiled derivation is keyed by it where it can be hashed (``Split`` is then
  a static argument of ``jax.jit``); else the derivation runs uncompiled.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._core._pytrees import combine, partition

_ARRAYS = (jax.Array, np.ndarray, np.generic)


@dataclass(frozen=True, eq=False)
class Static:
    """``f``'s arguments with ``None`` at every traced leaf: the leaves closed over.  Equal
    and hashed by its tree structure and its leaves (their type too: ``1`` is not ``True``)."""

    tree: Any

    def key(self) -> tuple:
        leaves, treedef = jax.tree_util.tree_flatten(self.tree)
        return treedef, tuple((type(v), v) for v in leaves)

    def __hash__(self) -> int:
        return hash(self.key())

    def __eq__(self, other) -> bool:
        if not isinstance(other, Static):
            return NotImplemented
        try:
            return bool(self.key() == other.key())
        except Exception:  # noqa: BLE001 - a leaf whose == is no bool: never the same key
            return False

    def empty(self) -> bool:
        """Whether no leaf is closed over."""
        return not jax.tree_util.tree_leaves(self.tree)


@dataclass(frozen=True)
class Split:
    """The static half of a call of ``f`` (``f``, ``argnums`` and the static leaves); the
    traced half is ``f``'s arguments with ``None`` at the static leaves (``traced``).

    Args:
      f: the user's function.
      wrt: the positions of the differentiated arguments, in ``argnums``' order.
      single: ``argnums`` was an int (the variables are that argument's tree, not a tuple).
      static: the leaves closed over.
    """

    f: Callable[..., Any]
    wrt: tuple[int, ...]
    single: bool
    static: Static

    def variables(self, traced: tuple) -> Any:
        """The variables: each differentiated argument with ``None`` at every leaf that is
        not trained; the argument's tree, or a tuple of them."""
        x = tuple(partition(traced[i])[0] for i in self.wrt)
        return x[0] if self.single else x

    def call(self, x, traced: tuple):
        """``f`` with the variables ``x`` in place of the differentiated arguments' own."""
        args = list(traced)
        for i, xi in zip(self.wrt, (x,) if self.single else x):
            args[i] = combine(xi, partition(traced[i])[1])
        return self.f(*combine(tuple(args), self.static.tree))

    def of_traced(self, gradient: bool) -> Callable[..., Any]:
        """``f`` (``gradient=False``) or $\\nabla f$ with respect to the variables, as a
        function of the traced arguments, named as ``f`` names them (``mcjax.derive`` reads
        the names from its signature)."""
        @functools.wraps(self.f)
        def of(*traced):
            x = self.variables(traced)
            return jax.grad(self.call)(x, traced) if gradient else self.call(x, traced)
        return of

    def paths(self, traced: tuple) -> list[str]:
        """Each variable leaf's path: ``['W']`` within one argument, ``args[1]['W']``
        among several."""
        found = []
        for i in self.wrt:
            for path, _ in jax.tree_util.tree_leaves_with_path(partition(traced[i])[0]):
                text = jax.tree_util.keystr(path)
                found.append(text if self.single else f"args[{i}]{text}")
        return found


def is_traced(leaf, differentiated: bool) -> bool:
    """An array leaf, or (outside the differentiated arguments) a Python float or complex."""
    if isinstance(leaf, _ARRAYS):
        return True
    return not differentiated and type(leaf) in (float, complex)


def _separate(tree, differentiated: bool) -> tuple[Any, Any]:
    """``(traced, static)``: ``tree`` with ``None`` where a leaf is closed over, and with
    ``None`` where one is traced (:func:`is_traced`)."""
    keep = functools.partial(is_traced, differentiated=differentiated)
    return (jax.tree_util.tree_map(lambda a: a if keep(a) else None, tree),
            jax.tree_util.tree_map(lambda a: None if keep(a) else a, tree))


def split(f, args: tuple, wrt: tuple[int, ...], single: bool) -> tuple[Split, tuple]:
    """``(Split, traced)`` for ``f(*args)`` differentiated with respect to ``wrt``."""
    parts = [_separate(arg, i in wrt) for i, arg in enumerate(args)]
    traced, static = tuple(t for t, _ in parts), tuple(s for _, s in parts)
    return Split(f, wrt, single, Static(static)), traced


def split_data(args: tuple) -> tuple[tuple, Static]:
    """Arguments that are data only (``gauss_newton``'s ``loss_args``): ``(traced, static)``,
    the array leaves and Python floats traced, the rest closed over."""
    traced, static = _separate(args, differentiated=False)
    return traced, Static(static)


def size(x) -> int:
    """The number of variables: the size of the flattened ``x``."""
    return sum(int(jnp.size(leaf)) for leaf in jax.tree_util.tree_leaves(x))
