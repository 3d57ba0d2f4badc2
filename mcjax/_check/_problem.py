"""What the checker checks: ``f``, the derivative under test, the arguments, as flat vectors.

:func:`prepare` validates a call of :func:`mcjax.check` from static shapes and dtypes (before
any computation) and splits the arguments into arrays, which are traced, and everything
else (integer flags, strings, ``None``), which is static: the jitted checks are cached by
JAX on ``(f, derivative, static parts)`` and compile once per shape.

:class:`Got` turns whatever the derivative returned (a dense array or pytree in either
layout, a structured :class:`~mcjax.Jacobian`, or a VJP function ``u -> u^T J``) into the two
things the checks need: the ``(m, n)`` matrix (full mode) and ``u^T J`` (fast mode).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check._flat import FlatSpec
from mcjax._conventions import is_floating
from mcjax._errors import DtypeError, ShapeError, require_floating, shape_str
from mcjax._jacobian import Jacobian

LAYOUTS = ("numerator", "denominator")


class _ByIdentity:
    """Wraps an unhashable static value so that jit can key on it (by identity: no reuse)."""

    def __init__(self, value):
        self.value = value


class Static(NamedTuple):
    """The hashable part of a check: what jit compiles for."""

    f: Callable
    derivative: Callable | None
    argnums: int
    layout: str
    treedef: Any
    static_leaves: tuple  # None where a leaf is dynamic
    dynamic_positions: tuple[int, ...]

    def args(self, dynamic) -> tuple:
        """The arguments rebuilt from the traced leaves."""
        leaves = [v.value if isinstance(v, _ByIdentity) else v for v in self.static_leaves]
        for pos, value in zip(self.dynamic_positions, dynamic):
            leaves[pos] = value
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def _is_array(leaf) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


def _hashable(leaf):
    try:
        hash(leaf)
        return leaf
    except TypeError:
        return _ByIdentity(leaf)


def name_of(fn) -> str:
    if isinstance(getattr(fn, "name", None), str):  # a registry Rule
        return fn.name
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


class Prepared(NamedTuple):
    static: Static
    dynamic: tuple
    x_spec: FlatSpec
    out_spec: FlatSpec
    dtype: str  # the dtype the derivative is judged in: the least precise of x and f(x)


@functools.lru_cache(maxsize=64)
def _output_shape(static: Static, structs: tuple):
    """``f``'s output shapes and dtypes, traced once per ``f`` and argument shapes: a repeated
    check (of a 1M-parameter MLP, say) would otherwise trace ``f`` again on every call."""
    return jax.eval_shape(lambda *d: static.f(*static.args(d)), *structs)


def prepare(f, derivative, args: tuple, argnums: int, layout: str) -> Prepared:
    """Validate one call of :func:`mcjax.check` and split its arguments.

    Raises:
      ValueError: ``argnums`` or ``layout`` is out of range.
      DtypeError: the differentiated argument or ``f``'s output is not floating point.
      ShapeError: either is empty.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"mcjax.check: layout={layout!r}; expected one of {', '.join(LAYOUTS)}")
    if not isinstance(argnums, int) or not -len(args) <= argnums < len(args):
        raise ValueError(
            f"mcjax.check: argnums={argnums!r} but f gets {len(args)} argument(s); expected an "
            f"int in [0, {len(args)})"
        )
    argnums %= len(args)
    where = f"args[{argnums}]"
    x = jax.tree_util.tree_map(lambda a: a if _is_array(a) else jnp.asarray(a), args[argnums])
    for leaf in jax.tree_util.tree_leaves(x):
        require_floating("check", where, leaf)
    x_spec = FlatSpec.of(x)
    if x_spec.size == 0:
        raise ShapeError(
            f"mcjax.check: {where} is empty ({x_spec.describe()}); expected at least one "
            "entry to differentiate with respect to"
        )
    args = args[:argnums] + (x,) + args[argnums + 1 :]
    leaves, treedef = jax.tree_util.tree_flatten(args)
    dynamic_positions = tuple(i for i, leaf in enumerate(leaves) if _is_array(leaf))
    static_leaves = tuple(None if _is_array(leaf) else _hashable(leaf) for leaf in leaves)
    dynamic = tuple(leaves[i] for i in dynamic_positions)
    static = Static(f, derivative, argnums, layout, treedef, static_leaves, dynamic_positions)
    out = _output_shape(static, tuple(jax.ShapeDtypeStruct(jnp.shape(d), jnp.result_type(d))
                                      for d in dynamic))
    for leaf in jax.tree_util.tree_leaves(out):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise DtypeError(
                f"mcjax.check: f returns dtype {np.dtype(leaf.dtype).name}; expected a "
                "floating output (an integer output has no derivative)"
            )
    out_spec = FlatSpec.of(out)
    if out_spec.size == 0:
        raise ShapeError(
            f"mcjax.check: f returns an empty output ({out_spec.describe()}); expected at "
            "least one entry"
        )
    eps = [np.finfo(np.dtype(d)).eps for d in x_spec.dtypes + out_spec.dtypes]
    dtype = (x_spec.dtypes + out_spec.dtypes)[int(np.argmax(eps))]
    return Prepared(static, dynamic, x_spec, out_spec, dtype)


def cast_floating(tree, dtype):
    """Every floating array leaf of ``tree`` cast to ``dtype``; the rest untouched."""
    return jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if _is_array(a) and is_floating(a) else a, tree
    )


def flat_function(static: Static, args: tuple, x_spec: FlatSpec, out_spec: FlatSpec):
    """``f`` as a function of the flat argument vector, returning the flat output vector."""

    def f_flat(x_vec):
        new = args[: static.argnums] + (x_spec.unflatten(x_vec),) + args[static.argnums + 1 :]
        out = static.f(*new)
        return out_spec.flatten(out, jnp.result_type(*jax.tree_util.tree_leaves(out)))

    return f_flat


# -- the derivative under test ------------------------------------------------------------
class Got:
    """The derivative under test at one point, as a matrix or as ``u -> u^T J``."""

    def __init__(self, static: Static, args: tuple, x_spec: FlatSpec, out_spec: FlatSpec):
        self.x_spec, self.out_spec = x_spec, out_spec
        value = static.derivative(*args)
        if callable(value) and not isinstance(value, Jacobian):
            self.kind, self._pullback, self._blocks = "vjp", value, None
            return
        self.kind, self._pullback = "dense", None
        self._blocks = _blocks(value, x_spec, out_spec, static.layout)
        if any(isinstance(b, Jacobian) for b in self._blocks.values()):
            self.kind = "jacobian"

    def vjp(self, u):
        """``u^T J`` for a flat cotangent ``u`` of shape ``(m,)``: shape ``(n,)``, in ``u``'s dtype."""
        u_leaves = [u[o : o + n].reshape(s) for o, n, s in
                    zip(self.out_spec.offsets, self.out_spec.sizes, self.out_spec.shapes)]
        return jnp.concatenate([jnp.ravel(w).astype(u.dtype) for w in self.vjp_leaves(u_leaves)])

    def vjp_leaves(self, u_leaves: list) -> list:
        """``u^T J`` leaf by leaf: one cotangent per output leaf (its shape) in, one array per
        argument leaf (its shape) out.  Nothing is flattened or concatenated (fast mode)."""
        if self._pullback is not None:
            result = self._pullback(jax.tree_util.tree_unflatten(self.out_spec.treedef, u_leaves))
            return jax.tree_util.tree_leaves(_check_vjp_result(result, self.x_spec))
        out = []
        for j in range(len(self.x_spec.shapes)):
            total = 0
            for k, (u_k, s) in enumerate(zip(u_leaves, self.out_spec.shapes)):
                block = self._blocks[k, j]
                if isinstance(block, Jacobian):
                    total = total + block.vjp(u_k.astype(block.dtype))
                elif not s:  # a scalar output leaf: u_k times the block, no contraction
                    total = total + u_k.astype(block.dtype) * block
                else:
                    total = total + jnp.tensordot(u_k, block, axes=len(s))
            out.append(total)
        return out

    def matrix(self, dtype):
        """The dense derivative as an ``(m, n)`` matrix in ``dtype``."""
        m, n = self.out_spec.size, self.x_spec.size
        if self._pullback is not None:
            return jax.vmap(self.vjp)(jnp.eye(m, dtype=dtype))
        rows = []
        for k, mk in enumerate(self.out_spec.sizes):
            row = []
            for j, nj in enumerate(self.x_spec.sizes):
                block = self._blocks[k, j]
                dense = block.dense() if isinstance(block, Jacobian) else block
                row.append(jnp.reshape(dense, (mk, nj)).astype(dtype))
            rows.append(jnp.concatenate(row, axis=1))
        return jnp.concatenate(rows, axis=0).reshape(m, n)


def _check_vjp_result(result, x_spec: FlatSpec):
    got = FlatSpec.of(result)
    if got.treedef != x_spec.treedef and isinstance(result, tuple) and len(result) == 1:
        result, got = result[0], FlatSpec.of(result[0])  # a pullback from jax.vjp
    if got.treedef != x_spec.treedef or got.shapes != x_spec.shapes:
        raise ShapeError(
            f"mcjax.check: the VJP function returned {got.describe()} but the differentiated "
            f"argument has {x_spec.describe()}; expected u^T J of the argument's shape"
        )
    return result


def _blocks(value, x_spec: FlatSpec, out_spec: FlatSpec, layout: str) -> dict:
    """The derivative's blocks ``(out leaf k, in leaf j) -> array or Jacobian``, numerator layout.

    The expected structure is ``jax.jacfwd``'s: f's output tree with every leaf replaced by the
    argument's tree of arrays ``out_leaf.shape + arg_leaf.shape`` (a gradient for scalar f).
    """
    is_jac = lambda leaf: isinstance(leaf, Jacobian)  # noqa: E731
    leaves, treedef = jax.tree_util.tree_flatten(value, is_leaf=is_jac)
    x_tree = x_spec.treedef.unflatten([0] * len(x_spec.shapes))
    expected = out_spec.treedef.unflatten([x_tree] * len(out_spec.shapes))
    expected_def = jax.tree_util.tree_structure(expected)
    pairs = [(k, j) for k in range(len(out_spec.shapes)) for j in range(len(x_spec.shapes))]
    if treedef != expected_def:
        raise ShapeError(_layout_message(value, leaves, x_spec, out_spec, pairs, layout))
    blocks = {}
    for (k, j), leaf in zip(pairs, leaves):
        o, i = out_spec.shapes[k], x_spec.shapes[j]
        shape = tuple(leaf.shape) if is_jac(leaf) else tuple(np.shape(leaf))
        if is_jac(leaf) or layout == "numerator":
            if shape != o + i:
                raise ShapeError(_layout_message(value, leaves, x_spec, out_spec, pairs, layout))
            blocks[k, j] = leaf if is_jac(leaf) else jnp.asarray(leaf)
        else:
            if shape != i + o:
                raise ShapeError(_layout_message(value, leaves, x_spec, out_spec, pairs, layout))
            blocks[k, j] = jnp.moveaxis(jnp.asarray(leaf), tuple(range(len(i))),
                                        tuple(range(len(o), len(o) + len(i))))
    return blocks


def _layout_message(value, leaves, x_spec, out_spec, pairs, layout) -> str:
    """Say what arrived, what was due, and which usual slip explains the difference."""
    def shape_of(leaf):
        return tuple(leaf.shape) if isinstance(leaf, Jacobian) else tuple(np.shape(leaf))

    if x_spec.is_array and out_spec.is_array and len(leaves) == 1:
        got, o, i = shape_of(leaves[0]), out_spec.shapes[0], x_spec.shapes[0]
        due = o + i if layout == "numerator" else i + o
        message = (
            f"mcjax.check: derivative returned shape {shape_str(got)} but f maps args of shape "
            f"{shape_str(i)} to shape {shape_str(o)}, so its derivative in {layout} layout has "
            f"shape {shape_str(due)} ({'out.shape + arg.shape' if layout == 'numerator' else 'arg.shape + out.shape'})"
        )
        other = i + o if layout == "numerator" else o + i
        if got == other and other != due:
            alt = "denominator" if layout == "numerator" else "numerator"
            message += f"; {shape_str(got)} is {alt} layout: pass layout={alt!r} or transpose it"
        elif got == i and o == i:
            message += (
                "; a vector of the argument's shape: the diagonal of an element-wise Jacobian? "
                "wrap it in mcjax.Diagonal(...) (or jnp.diag)"
            )
        return message
    got = ", ".join(shape_str(shape_of(leaf)) for leaf in leaves) or "nothing"
    due = ", ".join(shape_str(out_spec.shapes[k] + x_spec.shapes[j]) for k, j in pairs)
    return (
        f"mcjax.check: derivative returned {type(value).__name__} with leaves of shapes {got} "
        f"but f maps args with {x_spec.describe()} to {out_spec.describe()}; expected "
        f"jax.jacfwd's structure: f's output tree of argument trees, leaves of shapes {due} "
        "(for a scalar f, the gradient: the argument's own tree)"
    )
