"""Pytrees as flat vectors: the checker sees every derivative as an ``(m, n)`` matrix.

``jax.flatten_util.ravel_pytree`` casts back to the leaves' original dtypes when it
unravels; the checker needs the opposite (evaluate a float32 function's arguments in
float64), so ``FlatSpec`` unflattens in the dtype of the vector it is given.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._core._conventions import wider
from mcjax._core._pytrees import plain_path


def _path_str(path) -> str:
    return "".join(str(k) for k in path)


@dataclass(frozen=True)
class FlatSpec:
    """The leaves of one pytree, laid end to end.

    Attributes:
      treedef: the tree's structure.
      shapes: each leaf's shape.
      dtypes: each leaf's dtype name.
      paths: each leaf's path as Python writes it (``"[0]['W']"``; ``""`` for a bare array).
      root: ``x`` for one argument, or ``args`` for the tuple of several arguments (whose
        paths start with the argument's position, ``[2]['W']``, see ``named_by``).
      names: the names ``f`` gives its arguments ``0 ..`` the last differentiated one
        (``_problem.argument_names``: ``params``, or ``args[k]`` where ``f`` does not say);
        the labels name each leaf by them (``params['W'][1, 2]``).  Words for people only:
        two specs that differ in names alone are equal (a compiled program's key comes from
        the program, not from names).
    """

    treedef: Any  # a jax.tree_util.PyTreeDef
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    paths: tuple[str, ...]
    root: str = "x"
    names: tuple[str, ...] = dataclasses.field(default=(), compare=False)

    @classmethod
    def of(cls, tree) -> "FlatSpec":
        with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
        return cls(
            treedef,
            tuple(tuple(int(d) for d in np.shape(leaf)) for _, leaf in with_paths),
            tuple(np.dtype(jnp.result_type(leaf)).name for _, leaf in with_paths),
            tuple(_path_str(p) for p, _ in with_paths),
        )

    def named_by(self, argnums: int | tuple[int, ...], names: tuple[str, ...] = ()
                 ) -> "FlatSpec":
        """The spec of argument ``argnums`` of ``f`` (an int), or of the tuple of arguments
        ``argnums``, with ``f``'s ``names`` of its arguments (``_problem.argument_names``).
        For a tuple each path starts with its argument's position: ``[1]['W']`` (the tuple's
        second entry) becomes ``[2]['W']`` for argnums (0, 2), labelled ``names[2]['W']``."""
        if isinstance(argnums, int):
            return dataclasses.replace(self, names=tuple(names))
        paths = []
        for path in self.paths:
            k, rest = path[1:].split("]", 1)
            paths.append(f"[{argnums[int(k)]}]{rest}")
        return dataclasses.replace(self, paths=tuple(paths), root="args", names=tuple(names))

    @functools.cached_property
    def plain_paths(self) -> tuple[str, ...]:
        """Each leaf's path without its containers' kinds (``layers/0/kernel/value``), from
        the tree itself (``named_by`` renames only the labels)."""
        tree = self.treedef.unflatten(list(range(len(self.shapes))))
        return tuple(plain_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0])

    @functools.cached_property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @functools.cached_property
    def offsets(self) -> tuple[int, ...]:
        return tuple(int(o) for o in np.cumsum((0,) + self.sizes[:-1]))

    @functools.cached_property
    def size(self) -> int:
        return sum(self.sizes)

    @property
    def is_array(self) -> bool:
        """A single leaf at the root (an array, not a container)."""
        return len(self.shapes) == 1 and self.paths == ("",)

    @property
    def is_scalar(self) -> bool:
        return self.is_array and self.shapes[0] == ()

    def describe(self) -> str:
        """``"shape (3, 4)"`` for an array, else each leaf's path and shape (for several
        arguments, each leaf's name: ``W (2, 3), x (3,)``)."""
        if self.is_array:
            return f"shape {self.shapes[0]}"
        if self.root == "args":
            return ", ".join(f"{n} {s}" for n, s in zip(self.leaf_names, self.shapes))
        return "a pytree with " + ", ".join(f"{p} {s}" for p, s in zip(self.paths, self.shapes))

    def leaf_name(self, k: int) -> str:
        """Leaf ``k`` as ``f`` names it: ``params['W2']``, ``X`` (from ``names``; ``x['W2']``,
        or ``args[2]['W']`` for a tuple of arguments, where there are none)."""
        path = self.paths[k]
        if self.root == "args" and path.startswith("["):
            i, rest = path[1:].split("]", 1)
            return (self.names[int(i)] if int(i) < len(self.names) else f"args[{i}]") + rest
        return (self.names[-1] if self.names else self.root) + path

    @functools.cached_property
    def leaf_names(self) -> tuple[str, ...]:
        """Every leaf as ``f`` names it (``leaf_name``), in flat order."""
        return tuple(self.leaf_name(k) for k in range(len(self.paths)))

    def leaves(self, name: str | None = None) -> tuple[tuple[str, tuple[int, ...], int], ...]:
        """Each leaf as ``(label, shape, size)``, in flat order; the labels ``f``'s names of
        the leaves (``leaf_names``), or ``name`` before each path (``out['loss']``)."""
        labels = self.leaf_names if name is None else tuple(name + p for p in self.paths)
        return tuple(zip(labels, self.shapes, self.sizes))

    def flatten(self, tree, dtype=None) -> jax.Array:
        """The leaves raveled and concatenated, shape ``(size,)``."""
        leaves = jax.tree_util.tree_leaves(tree)
        dtype = dtype or wider(*leaves)
        flat = [jnp.ravel(leaf).astype(dtype) for leaf in leaves]
        return flat[0] if len(flat) == 1 else jnp.concatenate(flat)

    def unflatten(self, vector) -> object:
        """The inverse of ``flatten``, keeping ``vector``'s dtype."""
        if len(self.shapes) == 1:  # one leaf: no slice to trace
            return jax.tree_util.tree_unflatten(self.treedef, [vector.reshape(self.shapes[0])])
        leaves = [
            vector[o : o + n].reshape(s) for o, n, s in zip(self.offsets, self.sizes, self.shapes)
        ]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def leaf_of(self, j: int) -> int:
        """Which leaf flat index ``j`` falls in."""
        return int(np.searchsorted(np.asarray(self.offsets), j, side="right") - 1)

    def label(self, j: int) -> str:
        """Flat index ``j`` as the leaf path and the index inside it: ``"['W'][1, 2]"``."""
        return self.paths[self.leaf_of(j)] + self._inside(j)

    def entry_name(self, j: int) -> str:
        """Flat index ``j`` as ``f`` names it: its leaf's name (``leaf_name``) and the index
        inside the leaf, ``"params['W'][1, 2]"``, ``"X[0, 1]"``."""
        return self.leaf_name(self.leaf_of(j)) + self._inside(j)

    def _inside(self, j: int) -> str:
        index = self.index(j)
        return "[" + ", ".join(map(str, index)) + "]" if index else ""

    def index(self, j: int) -> tuple[int, ...]:
        """Flat index ``j`` as the index inside its leaf."""
        k = self.leaf_of(j)
        if not self.shapes[k]:
            return ()
        return tuple(int(i) for i in np.unravel_index(j - self.offsets[k], self.shapes[k]))


def entry_label(out: FlatSpec, inp: FlatSpec, i: int, j: int) -> str:
    """Entry ``(i, j)`` of the ``(m, n)`` matrix as a numerator-layout index.

    For a scalar ``f``, the argument's entry as ``f`` names it (``params['W'][1, 2]``,
    ``X[0, 1]``); for one array in and one out, ``[1, 2, 0]`` (the Jacobian's index: out index
    then in index); for pytrees the leaf paths are spelled out: ``d out[0] / d
    params['W'][1, 2]``.
    """
    if out.is_scalar:
        return inp.entry_name(j)
    if out.is_array and inp.is_array:
        return "[" + ", ".join(str(k) for k in out.index(i) + inp.index(j)) + "]"
    return f"d out{out.label(i)} / d {inp.entry_name(j)}"
