"""The derivative under test: whatever the user's derivative returns, seen as a matrix.

``DerivativeUnderTest`` turns the derivative's value at one point (a dense array or
pytree in either layout, a structured ``mcjax.Jacobian``, or a VJP function
``u -> u^T J``) into the two things the checks need: the ``(m, n)`` matrix (full mode) and
``u^T J`` (fast mode).  ``terms_of`` counts the longest sum in ``f`` and the derivative,
which sets the comparison's threshold.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check._case import Prepared, Static
from mcjax._check._flat import FlatSpec
from mcjax._core._errors import DerivativeShapeError, shape_str
from mcjax._core._pytrees import structure_name
from mcjax._jacobian import Jacobian
from mcjax._program._inspect import max_terms
from mcjax._program._trace import fresh_jaxpr


class DerivativeUnderTest:
    """The derivative under test at one point, as a matrix or as ``u -> u^T J``."""

    def __init__(self, static: Static, args: tuple, x_spec: FlatSpec, out_spec: FlatSpec):
        self.x_spec, self.out_spec = x_spec, out_spec
        if static.pullback:  # evaluated from the derivative's trace, at each cotangent
            def pullback(u):
                return static.derivative_of(args, jax.tree_util.tree_leaves(u))

            self.kind, self._pullback, self._blocks = "vjp", pullback, {}
            return
        value = static.derivative_of(args, [jnp.zeros(s, d) for s, d in
                                            zip(out_spec.shapes, out_spec.dtypes)])
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
        raise DerivativeShapeError(
            f"mcjax.check: the VJP function returned {got.describe()} but the differentiated "
            f"argument has {x_spec.describe()}; expected u^T J of the argument's shape"
        )
    return result


def validate(value, x_spec: FlatSpec, out_spec: FlatSpec, layout: str, pullback: bool) -> None:
    """Check the derivative's traced value (``jax.ShapeDtypeStruct`` leaves) before any program
    runs, so that a wrong shape is one clear ``mcjax.ShapeError``.  ``pullback``: the
    value is a VJP function's result ``u^T J``."""
    if pullback:
        _check_vjp_result(value, x_spec)
    else:
        _blocks(value, x_spec, out_spec, layout, abstract=True)


def _blocks(value, x_spec: FlatSpec, out_spec: FlatSpec, layout: str,
            abstract: bool = False) -> dict:
    """The derivative's blocks ``(out leaf k, in leaf j) -> array or Jacobian``, numerator layout.

    The expected structure is ``jax.jacfwd``'s: f's output tree with every leaf replaced by the
    argument's tree of arrays ``out_leaf.shape + arg_leaf.shape`` (a gradient for scalar f).
    ``abstract``: only check the shapes (of ``jax.ShapeDtypeStruct`` leaves).
    """
    is_jac = lambda leaf: isinstance(leaf, Jacobian)  # noqa: E731
    leaves, treedef = jax.tree_util.tree_flatten(value, is_leaf=is_jac)
    x_tree = x_spec.treedef.unflatten([0] * len(x_spec.shapes))
    expected = out_spec.treedef.unflatten([x_tree] * len(out_spec.shapes))
    expected_def = jax.tree_util.tree_structure(expected)
    pairs = [(k, j) for k in range(len(out_spec.shapes)) for j in range(len(x_spec.shapes))]
    if treedef != expected_def:
        raise DerivativeShapeError(_layout_message(value, leaves, x_spec, out_spec, pairs, layout))
    blocks = {}
    for (k, j), leaf in zip(pairs, leaves):
        o, i = out_spec.shapes[k], x_spec.shapes[j]
        shape = tuple(leaf.shape) if is_jac(leaf) else tuple(np.shape(leaf))
        if is_jac(leaf) or layout == "numerator":
            if shape != o + i:
                raise DerivativeShapeError(_layout_message(value, leaves, x_spec, out_spec, pairs, layout))
            if not abstract:
                blocks[k, j] = leaf if is_jac(leaf) else jnp.asarray(leaf)
        else:
            if shape != i + o:
                raise DerivativeShapeError(_layout_message(value, leaves, x_spec, out_spec, pairs, layout))
            if not abstract:
                blocks[k, j] = jnp.moveaxis(jnp.asarray(leaf), tuple(range(len(i))),
                                            tuple(range(len(o), len(o) + len(i))))
    return blocks


def _leaves_off(value, leaves, x_spec, out_spec, pairs, shape_of) -> str:
    """A scalar f's gradient in the argument's structure: the leaves whose shapes are off, by
    f's name of them, and a transposed matrix named as one (``; params[1]['W'] is (448, 10)
    where (10, 448) was due: its gradient transposed? expected (10, 448), got (448, 10)``).
    Empty otherwise."""
    if out_spec.size != 1 or len(leaves) != len(pairs) or (
            jax.tree_util.tree_structure(value) != x_spec.treedef):
        return ""  # a scalar f's gradient in the argument's own structure only
    off = []
    for (k, j), leaf in zip(pairs, leaves):
        due, got = out_spec.shapes[k] + x_spec.shapes[j], shape_of(leaf)
        if got == due:
            continue
        name = x_spec.leaf_name(j) or "the argument"
        said = f"{name} is {shape_str(got)} where {shape_str(due)} was due"
        if len(due) >= 2 and got == due[:-2] + due[-1:] + due[-2:-1]:
            said += (f": its gradient transposed? expected {shape_str(due)}, got {shape_str(got)} "
                     "(x h^T where h x^T was due?)")
        off.append(said)
    return "; " + "; ".join(off[:3]) if off else ""


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
        elif len(i) == 2 and got == o + i[::-1]:
            message += (
                f"; {shape_str(got)} is the argument's shape transposed: the gradient of a matrix "
                "transposed (x h^T where h x^T was due?)"
            )
        return message
    return _layout_message_tree(value, leaves, x_spec, out_spec, pairs, shape_of)


def _layout_message_tree(value, leaves, x_spec, out_spec, pairs, shape_of) -> str:
    kind = ("an array" if isinstance(value, (jax.ShapeDtypeStruct, jax.Array, np.ndarray))
            else structure_name(value))  # traced abstractly: an array arrives as its shape
    due = ", ".join(shape_str(out_spec.shapes[k] + x_spec.shapes[j]) for k, j in pairs)
    hint = ("; if it is a VJP function u -> u^T J, wrap it: mcjax.vjp(fn)" if callable(value)
            else _leaves_off(value, leaves, x_spec, out_spec, pairs, shape_of))
    if out_spec.size == 1 and sorted(shape_of(leaf) for leaf in leaves) == sorted(
            out_spec.shapes[0] + s for s in x_spec.shapes):
        x_tree = x_spec.treedef.unflatten([0] * len(x_spec.shapes))
        return (
            f"mcjax.check: derivative returned {kind} with leaves {_with_paths(value)} but the "
            f"differentiated argument is {structure_name(x_tree)} with leaves "
            f"{_with_paths(x_spec)}: the same shapes in another structure; expected the "
            "gradient in the argument's own structure, or its leaves at the same paths (a "
            f"FrozenDict for a dict, nnx.grad's State for its Module){hint}")
    if x_spec.root == "args":  # argnums a tuple
        return (
            f"mcjax.check: derivative returned {kind} with leaves {_with_paths(value)} "
            f"but f maps {x_spec.describe()} to {out_spec.describe()}; expected "
            "jax.jacfwd's structure for a tuple of argnums: a tuple with one derivative per "
            f"argument (as jax.jacrev(f, argnums) returns), leaves of shapes {due}{hint}"
        )
    return (
        f"mcjax.check: derivative returned {kind} with leaves {_with_paths(value)} "
        f"but f maps args with {x_spec.describe()} to {out_spec.describe()}; expected "
        f"jax.jacfwd's structure: f's output tree of argument trees, leaves of shapes {due} "
        f"(for a scalar f, the gradient: the argument's own tree){hint}"
    )


def _with_paths(tree) -> str:
    """Each leaf of ``tree`` (or of a ``FlatSpec``) as its path and shape: ``['W'] (3, 4)``."""
    if isinstance(tree, FlatSpec):
        return ", ".join(f"{p or '(the root)'} {shape_str(s)}"
                         for p, s in zip(tree.paths, tree.shapes))
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda a: isinstance(a, Jacobian))[0]
    return ", ".join(
        f"{jax.tree_util.keystr(p) or '(the root)'} "
        f"{shape_str(tuple(a.shape) if isinstance(a, Jacobian) else tuple(np.shape(a)))}"
        for p, a in flat) or "none"


def terms_of(p: Prepared, contraction: bool = False) -> int:
    """The longest sum in ``f`` and in the derivative under test: the threshold's ``T``.

    With ``contraction`` (fast mode, which compares ``u^T J``), the sums that contract the
    derivative with a cotangent count too.
    """
    terms = max(max_terms(p.f_jaxpr.jaxpr), max_terms(p.derivative_jaxpr.jaxpr))
    if not contraction:
        return terms
    static, x_spec, out_spec = p.static, p.x_spec, p.out_spec

    def contracted(*dynamic):
        under = DerivativeUnderTest(static, static.args(dynamic), x_spec, out_spec)
        return under.vjp_leaves([jnp.ones(s, d) for s, d in zip(out_spec.shapes,
                                                                  out_spec.dtypes)])

    structs = [jax.ShapeDtypeStruct(jnp.shape(d), jnp.result_type(d)) for d in p.dynamic]
    return max(terms, max_terms(fresh_jaxpr(contracted, *structs).jaxpr))
