r"""Jacobians that are operations: a linear operation applied to the tangent, a selection of
entries, a matrix product on both sides.

- ``mcjax.Applied``: the Jacobian of an operation that is linear in one operand is the
  operation itself, applied to the tangent in that operand's place with the others held
  (``rev(·)``, ``pad(·)``, ``W ⋆ ·`` for a convolution, ``(·)[i]`` for a gather, ``L`` for a
  cumulative sum).  It holds the other operands, never the $mn$ numbers of the matrix;
- ``mcjax.Take``: each output entry is one input entry, or none: ``out.flat[i] =
  v.flat[index[i]]`` (a max pool's winners, a sort's order, a scatter's surviving updates);
- ``mcjax.Sandwich``: $V \mapsto L V R$, the Jacobian of ``inv(A)`` ($-A^{-1} (\cdot) A^{-1}$)
  or of ``solve(A, b)`` with respect to ``A`` ($-A^{-1} (\cdot) \mathbf{x}$).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mcjax._jacobian import _expr as E
from mcjax._jacobian import _formula as F
from mcjax._jacobian._algebra import Jacobian, Shape, pulls, transpose_apply
from mcjax._jacobian._print import ATOM, PRODUCT, operator
from mcjax._jacobian._sym import Sym


class Operation(NamedTuple):
    """A JAX primitive with its parameters: hashable (it rides in a Jacobian's static data).

    With ``derivative=True`` the operation is the primitive's own derivative at a point:
    called with the primal operands and, last, the tangent of operand ``wrt``, it is JAX's
    JVP there (linear in the tangent): a cumulative product's, whose closed form divides by
    the entries.
    """

    primitive: Any
    params: tuple  # (name, value) pairs, sorted
    written: str = ""  # how the operation is written: "conv", "cumsum", ... (default: its name)
    derivative: bool = False
    wrt: int = 0
    latex: str = ""  # how LaTeX writes it, where ``written`` is a formula rather than a name

    @staticmethod
    def of(primitive, params: dict, written: str = "", derivative: bool = False,
           wrt: int = 0, latex: str = "") -> Operation:
        return Operation(primitive, tuple(sorted(params.items())), written, derivative, wrt,
                         latex)

    @property
    def name(self) -> str:
        return self.written or self.primitive.name

    def __call__(self, *operands):
        params = dict(self.params)
        if not self.derivative:
            return self.primitive.bind(*operands, **params)
        *primals, tangent = operands

        def along(x):
            values = list(primals)
            values[self.wrt] = x
            return self.primitive.bind(*values, **params)

        return jax.jvp(along, (primals[self.wrt],), (tangent,))[1]


class Applied(Jacobian):
    """The operation ``operation`` with the tangent in operand ``slot`` and the other operands
    ``held``: the Jacobian of an operation linear in that operand.

    Args:
      operation: the primitive and its parameters.
      held: the operands (arrays; ``None`` in ``slot``), held fixed.  An operand the output
        depends on affinely is held at zero (``dynamic_update_slice(v, 0)``).
      slot: which operand the tangent takes.
      in_shape: the argument's shape.
      out_shape: the output's shape.
      dtype: the dtype the operation computes in.
      out_index: which output, for an operation with several (``None`` for one).
    """

    operation: Operation
    held: tuple
    slot: int
    in_shape: Shape
    out_shape: Shape
    dtype_name: str
    out_index: int | None
    in_dtype_name: str | None

    kind = "linear operation"
    _arrays = ("held",)
    _static = ("operation", "slot", "in_shape", "out_shape", "dtype_name", "out_index",
               "in_dtype_name")

    def __init__(self, operation: Operation, held, slot: int, in_shape, out_shape, dtype,
                 out_index: int | None = None, *, in_dtype=None, symbols=None):
        self._init(symbols, operation=operation, held=tuple(held), slot=int(slot),
                   in_shape=tuple(in_shape), out_shape=tuple(out_shape),
                   dtype_name=jnp.dtype(dtype).name, out_index=out_index,
                   in_dtype_name=None if in_dtype is None else jnp.dtype(in_dtype).name)

    @property
    def in_dtype(self):
        """The operand's dtype where it differs from the output's (``real`` takes complex)."""
        return self.dtype if self.in_dtype_name is None else jnp.dtype(self.in_dtype_name)

    @classmethod
    def of(cls, fn, *operands, slot: int = 0) -> Applied:
        """The Jacobian of ``fn`` — one ``lax`` operation, linear in operand ``slot`` — with
        respect to that operand, the others held at ``operands`` (arrays; the one in ``slot``
        gives the shape and dtype).

        Example:

            >>> J = mcjax.Applied.of(lambda v: jax.lax.cumsum(v, 0), jnp.zeros(3))
            >>> J.dense()  # the lower-triangular ones
            Array([[1., 0., 0.],
                   [1., 1., 0.],
                   [1., 1., 1.]], dtype=float32)
        """
        closed, out = jax.make_jaxpr(fn, return_shape=True)(*operands)
        (eqn,) = closed.jaxpr.eqns
        held = [None if k == slot else op for k, op in enumerate(operands)]
        x = jnp.asarray(operands[slot])
        return cls(Operation.of(eqn.primitive, eqn.params), held, slot, x.shape, out.shape,
                   x.dtype)

    def label(self) -> str:
        return f"Applied[{self.operation.name}]"

    def jvp(self, v):
        operands = list(self.held)
        # the precision is the Jacobian's; real or complex is the operand's own (``real``
        # takes a complex operand to a real output, a cast to complex the reverse)
        same_kind = (jnp.issubdtype(v.dtype, jnp.complexfloating)
                     == jnp.issubdtype(self.dtype, jnp.complexfloating))
        operands[self.slot] = v.astype(self.dtype) if same_kind else v
        out = self.operation(*operands)
        return out if self.out_index is None else out[self.out_index]

    def vjp(self, u):
        return transpose_apply(self, u)


@F.roots.register
def _(J: Applied) -> list:
    return list(J.symbols or ())


def _held_text(J: Applied, p) -> list[str]:
    symbols = list(J.symbols or ())
    return [p(s) for s in symbols]


@F.write.register
def _(J: Applied, p):
    dot = r"\cdot" if p.latex else "·"
    name = J.operation.name
    held = _held_text(J, p)
    if name == "conv":  # a convolution with the other operand
        star = r" \star " if p.latex else " ⋆ "
        other = held[0] if held else "W"
        return (f"({other}{star}{dot})" if J.slot == 0 else f"({dot}{star}{other})"), ATOM
    if name == "gather" and held:
        return f"({dot})[{held[0]}]", ATOM
    head = (J.operation.latex or operator(name)) if p.latex else name
    return f"{head}({', '.join([dot, *held])})", ATOM


class Take(Jacobian):
    """Each output entry is one entry of the input, or zero: ``out.flat[i] =
    v.flat[index.flat[i]]`` where ``index >= 0``.  A 0/1 matrix with at most one 1 per row,
    held as the ``index`` (one integer per output entry).

    Args:
      index: integer array of shape ``out_shape``: flat positions in the input, -1 for none.
      in_shape: the argument's shape.
    """

    index: jax.Array
    in_shape: Shape
    dtype_name: str

    kind = "selection"
    symbols_are_values = False  # S[k]: the index operand the program gathers with
    _arrays = ("index",)
    _static = ("in_shape", "dtype_name")

    def __init__(self, index, in_shape, dtype, *, symbols=None):
        self._init(symbols, index=jnp.asarray(index), in_shape=tuple(in_shape),
                   dtype_name=jnp.dtype(dtype).name)

    @property
    def out_shape(self) -> Shape:
        return tuple(self.index.shape)

    def jvp(self, v):
        flat = jnp.reshape(v, (-1,))
        picked = flat[jnp.clip(self.index, 0, max(flat.shape[0] - 1, 0))]
        return jnp.where(self.index >= 0, picked, jnp.zeros((), flat.dtype))

    def vjp(self, u):
        size = math.prod(self.in_shape)
        target = jnp.where(self.index >= 0, self.index, size).reshape(-1)
        out = jnp.zeros((size,), jnp.result_type(u)).at[target].add(jnp.reshape(u, (-1,)),
                                                                     mode="drop")
        return out.reshape(self.in_shape)


@pulls(Take)
def _(J: Take, v):
    return Sym(J.vjp(v.value), E.Expr("scatter", (v.expr,), None, tuple(J.in_shape)))


@F.roots.register
def _(J: Take) -> list:
    return list(J.symbols or ())


@F.write.register
def _(J: Take, p):
    if J.symbols:
        return ("S_{" + p(J.symbols[0]) + "}" if p.latex else f"S[{p(J.symbols[0])}]"), ATOM
    return "S", ATOM


class Sandwich(Jacobian):
    """$V \\mapsto L V R$ (batched over leading axes): the Jacobian of ``inv(A)`` is
    ``Sandwich(-inv(A), inv(A))``, that of ``solve(A, b)`` with respect to ``A`` is
    ``Sandwich(-inv(A), x)`` (``R`` a vector: $-A^{-1} V \\mathbf{x}$).

    Args:
      left: shape ``batch + (m, n)``.
      right: shape ``batch + (p, q)``, or ``batch + (p,)``.
    """

    left: jax.Array
    right: jax.Array
    vector: bool

    kind = "sandwich"
    _arrays = ("left", "right")
    _static = ("vector",)

    def __init__(self, left, right, *, symbols=None):
        left, right = jnp.asarray(left), jnp.asarray(right)
        self._init(symbols, left=left, right=right, vector=bool(right.ndim == left.ndim - 1))

    @property
    def in_shape(self) -> Shape:
        p = self.right.shape[-1] if self.vector else self.right.shape[-2]
        return tuple(self.left.shape[:-2]) + (self.left.shape[-1], p)

    @property
    def out_shape(self) -> Shape:
        batch = tuple(self.left.shape[:-2])
        if self.vector:
            return batch + (self.left.shape[-2],)
        return batch + (self.left.shape[-2], self.right.shape[-1])

    def jvp(self, v):
        inner = v @ self.right[..., None] if self.vector else v @ self.right
        out = self.left @ inner
        return out[..., 0] if self.vector else out

    def vjp(self, u):
        lu = jnp.swapaxes(self.left, -1, -2) @ (u[..., None] if self.vector else u)
        right = self.right[..., None, :] if self.vector else jnp.swapaxes(self.right, -1, -2)
        return lu @ right


@F.write.register
def _(J: Sandwich, p):
    left, right = (F.symbols_of(J) if J.symbols else (E.arg("L", "L", ()), E.arg("R", "R", ())))
    dot = r"\cdot" if p.latex else "·"
    return f"{p(left, PRODUCT)}{p._space()}({dot}){p._space()}{p(right, PRODUCT + 1)}", PRODUCT


def applied(operation: Operation, held, slot: int, in_shape, out_shape, dtype,
            held_exprs=(), out_index=None, in_dtype=None) -> Jacobian:
    """``mcjax.Applied``, with the held operands' expressions for its formula; ``in_dtype``
    where the operand is complex and the output real, or the reverse."""
    if in_dtype is not None and (jnp.issubdtype(in_dtype, jnp.complexfloating)
                                 == jnp.issubdtype(dtype, jnp.complexfloating)):
        in_dtype = None  # the same kind: the Jacobian's one dtype
    return Applied(operation, held, slot, in_shape, out_shape, dtype, out_index,
                   in_dtype=in_dtype, symbols=tuple(held_exprs))


def take(index, in_shape, dtype, index_expr: E.Expr | None = None) -> Jacobian:
    return Take(index, in_shape, dtype, symbols=None if index_expr is None else (index_expr,))


def sandwich(left: Sym, right: Sym) -> Jacobian:
    return Sandwich(left.value, right.value, symbols=(left.expr, right.expr))
