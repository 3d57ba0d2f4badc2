"""Models as researchers hold them: which leaves of a pytree are differentiated.

A differentiated argument may be a dict of arrays, an Equinox module (callable, with
function-valued and static fields: ``eqx.nn.MLP``'s ``activation``), a ``flax.nnx`` Module or
``State``, linen variables (a ``dict`` or ``FrozenDict``).  mcjax follows Equinox's rule
(``eqx.filter(tree, eqx.is_inexact_array)``): the inexact array leaves are differentiated and
trained, everything else -- functions, strings, ``None``, integer and key arrays, Python
objects -- is static and passes through untouched.  ``partition`` splits a tree into the two
parts (``None`` holes where the other part has the leaf), ``combine`` puts them back together,
as ``eqx.partition`` and ``eqx.combine`` do.

A gradient is compared leaf by leaf with its argument; ``plain_path`` spells a leaf's path
without the container kinds (``.layers[0].kernel.value`` and ``['layers'][0]['kernel'].value``
are both ``layers/0/kernel/value``), so that a gradient in another container (``nnx.grad``'s
``State`` for an nnx Module, a ``FrozenDict`` for a ``dict``) is recognised as the same one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_inexact_array(leaf) -> bool:
    """An array (JAX, NumPy, a tracer, or a ``jax.ShapeDtypeStruct``) of a floating or complex
    dtype: what is differentiated (``eqx.is_inexact_array``)."""
    if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct)):
        return False
    return bool(jnp.issubdtype(leaf.dtype, jnp.inexact))  # key<fry> too


def floats_as_arrays(tree):
    """Every Python ``float`` of ``tree`` held in plain containers (the root, dicts, lists,
    tuples) as a JAX array: differentiated, as ``jax.grad`` differentiates ``{"w": 1.0}``.
    A float that is a field of an object (``eqx.nn.Dropout``'s ``p``, a module's temperature)
    stays a static hyper-parameter, as ``eqx.filter_grad`` keeps it."""
    plain = (jax.tree_util.DictKey, jax.tree_util.SequenceKey)

    def convert(path, a):
        if type(a) is float and all(isinstance(k, plain) for k in path):
            return jnp.asarray(a)
        return a

    return jax.tree_util.tree_map_with_path(convert, tree)


def partition(tree) -> tuple[Any, Any]:
    """``(dynamic, static)``: ``tree`` with ``None`` where a leaf is not an inexact array, and
    with ``None`` where one is; both keep ``tree``'s own containers."""
    dynamic = jax.tree_util.tree_map(lambda a: a if is_inexact_array(a) else None, tree)
    static = jax.tree_util.tree_map(lambda a: None if is_inexact_array(a) else a, tree)
    return dynamic, static


def combine(dynamic, static):
    """The inverse of :func:`partition`: each leaf from ``dynamic`` where it has one, else from
    ``static``."""
    return jax.tree_util.tree_map(lambda a, b: b if a is None else a, dynamic, static,
                                  is_leaf=lambda a: a is None)


def has_static(tree) -> bool:
    """Whether ``tree`` has a leaf that is not an inexact array."""
    return not all(is_inexact_array(a) for a in jax.tree_util.tree_leaves(tree))


def _key_name(key) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def plain_path(path) -> str:
    """A leaf's path without its containers' kinds: ``layers/0/kernel/value``."""
    return "/".join(_key_name(k) for k in path)


def structure_name(tree) -> str:
    """A tree's outer container in words: ``an MLP``, ``a State``, ``a dict``, ``an array``."""
    if isinstance(tree, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct)):
        return "an array"
    name = type(tree).__name__
    acronym = name[:2].isupper()  # an MLP, an LSTM: said letter by letter
    return f"{'an' if name[:1] in ('AEFHILMNORSX' if acronym else 'aeiouAEIOU') else 'a'} {name}"
