"""Models as researchers hold them: which leaves of a pytree are differentiated.

A differentiated argument may be a dict of arrays, an Equinox module (callable, with
function-valued and static fields: ``eqx.nn.MLP``'s ``activation``), a ``flax.nnx`` Module or
``State``, linen variables (a ``dict`` or ``FrozenDict``).  Each leaf has one of three roles,
as the frameworks themselves assign them, and every engine (``mcjax.check``, ``derive``,
``hessian``, ``gauss_newton``, ``train``) reads them here:

- **trained** (:data:`TRAINED`): differentiated (and, in ``mcjax.train``, updated by the
  optimizer): the inexact array leaves (Equinox's ``eqx.filter(tree, eqx.is_inexact_array)``)
  except those of the kind below; in an nnx Module, those of ``nnx.Param`` variables (what
  ``nnx.grad`` and ``nnx.Optimizer(..., wrt=nnx.Param)`` take); in linen variables, the
  ``"params"`` collection;
- **state** (:data:`STATE`): what the model's forward pass updates and training carries from
  step to step, never differentiated: the arrays of an ``eqx.nn.State``, of linen's other
  collections (``batch_stats``), of nnx's other variables (``nnx.BatchStat``, an
  ``nnx.Rngs``'s counts);
- **untouched** (:data:`UNTOUCHED`): everything else -- functions, strings, ``None``, integer
  arrays outside a state, PRNG keys (an ``nnx.Rngs``'s keys too), Python objects -- passed
  through as it is.

``partition`` splits a tree into its trained part and the rest (``None`` holes where the other
part has the leaf), ``combine`` puts them back together, as ``eqx.partition`` and
``eqx.combine`` do; ``split`` separates all three roles.

A gradient is compared leaf by leaf with its argument; ``plain_path`` spells a leaf's path
without the container kinds (``.layers[0].kernel.value`` and ``['layers'][0]['kernel'].value``
are both ``layers/0/kernel/value``), so that a gradient in another container (``nnx.grad``'s
``State`` for an nnx Module, a ``FrozenDict`` for a ``dict``) is recognised as the same one.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

TRAINED, STATE, UNTOUCHED = "trained", "state", "untouched"
_ARRAYS = (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct)


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


def _is_key(leaf) -> bool:
    return isinstance(leaf, _ARRAYS) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _role(leaf, source: str | None) -> str:
    if _is_key(leaf):
        return UNTOUCHED
    if source is None:
        return TRAINED if is_inexact_array(leaf) else UNTOUCHED
    return STATE if isinstance(leaf, _ARRAYS) else UNTOUCHED


def _linen_collections(tree) -> bool:
    """Linen variables: a mapping of collections (each a mapping) with ``"params"`` and another
    (``batch_stats``).  A plain ``{"params": W, "b": b}`` of arrays is no such thing."""
    return (isinstance(tree, Mapping) and "params" in tree and len(tree) > 1
            and all(isinstance(v, Mapping) for v in tree.values()))


def leaf_roles(tree) -> list[tuple[str, str | None]]:
    """``(role, source)`` for each leaf of ``tree`` (``jax.tree.leaves``' order): the role is
    :data:`TRAINED`, :data:`STATE` or :data:`UNTOUCHED`; the source names a state's kind in
    words (``"nnx.BatchStat"``, ``"eqx.nn.State"``, ``"linen collection 'batch_stats'"``),
    None elsewhere."""
    # a framework that is not imported has made none of the objects in the tree
    nnx, eqx = sys.modules.get("flax.nnx"), sys.modules.get("equinox")

    def is_node(x) -> bool:
        return ((nnx is not None and isinstance(x, nnx.Variable))
                or (eqx is not None and isinstance(x, eqx.nn.State)))

    collections = _linen_collections(tree)
    roles = []
    for path, node in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_node)[0]:
        source = None
        if nnx is not None and isinstance(node, nnx.Variable):
            source = None if isinstance(node, nnx.Param) else f"nnx.{type(node).__name__}"
        elif eqx is not None and isinstance(node, eqx.nn.State):
            source = "eqx.nn.State"
        elif collections and getattr(path[0], "key", None) != "params":
            source = f"linen collection {getattr(path[0], 'key', path[0])!r}"
        roles += [(_role(leaf, source), source) for leaf in jax.tree.leaves(node)]
    return roles


def split(tree) -> tuple[Any, Any, Any]:
    """``(trained, state, untouched)``: ``tree`` three times, each with ``None`` where a leaf
    has another role (see the module's docstring); :func:`combine` puts them back together."""
    leaves, treedef = jax.tree.flatten(tree)
    roles = [role for role, _ in leaf_roles(tree)]
    return tuple(treedef.unflatten([leaf if role == want else None
                                    for leaf, role in zip(leaves, roles)])
                 for want in (TRAINED, STATE, UNTOUCHED))


def partition(tree) -> tuple[Any, Any]:
    """``(trained, rest)``: ``tree`` with ``None`` where a leaf is not trained (state and
    untouched leaves), and with ``None`` where one is; both keep ``tree``'s own containers.
    What every engine differentiates is the first."""
    leaves, treedef = jax.tree.flatten(tree)
    trained = [role == TRAINED for role, _ in leaf_roles(tree)]
    return (treedef.unflatten([a if t else None for a, t in zip(leaves, trained)]),
            treedef.unflatten([None if t else a for a, t in zip(leaves, trained)]))


def combine(dynamic, static):
    """The inverse of :func:`partition` and :func:`split`: each leaf from ``dynamic`` where it
    has one, else from ``static``."""
    return jax.tree_util.tree_map(lambda a, b: b if a is None else a, dynamic, static,
                                  is_leaf=lambda a: a is None)


@dataclasses.dataclass(frozen=True)
class OnTrained:
    """``f`` as a function of its argument ``position``'s trained part, the rest of that
    argument (its state and untouched leaves) passed last: ``OnTrained(f, 0)(trained, x,
    rest) == f(combine(trained, rest), x)``.  A value (equal and hashable by ``f`` and
    ``position``), so that the operators and jitted programs that hold it are too; its signature is ``f``'s with
    ``rest`` last, so that reports name the arguments as ``f`` does."""

    f: Callable[..., Any]
    position: int

    def __call__(self, *args):
        *args, rest = args
        args[self.position] = combine(args[self.position], rest)
        return self.f(*args)

    @property
    def __signature__(self) -> inspect.Signature:
        try:
            params = list(inspect.signature(self.f).parameters.values())
        except (TypeError, ValueError):
            params = []
        positional = [q for q in params if q.kind in (q.POSITIONAL_ONLY,
                                                      q.POSITIONAL_OR_KEYWORD)]
        return inspect.Signature([q.replace(kind=q.POSITIONAL_ONLY, default=q.empty)
                                  for q in positional]
                                 + [inspect.Parameter("rest", inspect.Parameter.VAR_POSITIONAL)])


def on_trained(f, position: int, args: tuple) -> tuple[Callable[..., Any], tuple]:
    """``(f, args)`` over the trained part of ``args[position]`` alone (:class:`OnTrained`),
    or as they are when every leaf of it is trained.  ``position`` is non-negative."""
    trained, rest = partition(args[position])
    if not jax.tree_util.tree_leaves(rest):
        return f, args
    return OnTrained(f, position), (*args[:position], trained, *args[position + 1:], rest)


def held_state(tree) -> dict[str, str]:
    """The array leaves of ``tree`` that are not trained, by :func:`plain_path`, each with
    what it is in words (``"nnx.BatchStat"``, ``"an integer array"``): where a derivative
    may legitimately hold entries that no engine compares (``jax.grad`` over a whole nnx
    ``State`` gives the running statistics theirs)."""
    held = {}
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    for (path, leaf), (role, source) in zip(flat, leaf_roles(tree)):
        if role != TRAINED and isinstance(leaf, _ARRAYS):
            held[plain_path(path)] = source or "an untouched array"
    return held


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
