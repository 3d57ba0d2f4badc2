r"""The chain rule and the total-derivative rule on structured Jacobians, simplifying.

- :func:`compose` is the vector chain rule (§4.5.3), ``outer @ inner``: identities vanish,
  zeros absorb, a scalar factor scales the other one, a diagonal times a diagonal is a
  diagonal; a row $\mathbf{v}^\top$ (the derivative of a scalar) is pulled through whatever
  follows, one vector-Jacobian product each, so the derivative of a loss ends as its gradient;
  a column (the derivative with respect to a scalar) is pushed the same way.  Everything else
  stays factored (``Composed``): a Kronecker block times a diagonal is never multiplied out.
- :func:`add` is the total-derivative rule (§4.5.2): diagonals add into a diagonal, rows into
  a row, and two paths that end in the same Jacobian are factored, $(A + B) J$.
- :func:`scale` multiplies by a scalar, keeping the structure.

Pairwise simplifications are registered one per line in :data:`SIMPLIFY`, keyed on the two
classes.  Every result carries its formula (see :mod:`mcjax._jacobian._build`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp

from mcjax._core._errors import ShapeError, shape_str
from mcjax._jacobian import (
    Broadcast,
    Composed,
    Dense,
    Diagonal,
    Embed,
    Expand,
    Fill,
    Jacobian,
    Permutation,
    Reshape,
    ScaledIdentity,
    Slice,
    Sum,
    SumAlong,
    Zero,
)
from mcjax._jacobian import _build as B
from mcjax._jacobian import _expr as E
from mcjax._jacobian._pull import pull, push
from mcjax._jacobian._sym import Sym

SIMPLIFY: dict[tuple[type, type], Callable[[Jacobian, Jacobian], Jacobian | None]] = {}
"""``(type(outer), type(inner)) -> rule(outer, inner)``: the product in a simpler structure,
or ``None`` to keep the two factored."""


def simplifies(outer: type, inner: type):
    def register(rule):
        SIMPLIFY[outer, inner] = rule
        return rule

    return register


def dtype_of(*Js: Jacobian):
    return jnp.result_type(*(J.dtype for J in Js))


# -- scalars -------------------------------------------------------------------------------
def as_scalar(J: Jacobian) -> Sym | None:
    """The number a Jacobian multiplies by, if it is one ($cI$, or any map from () to ())."""
    if isinstance(J, ScaledIdentity):
        return B.sym(J, "scale", placeholder="c")
    if J.out_shape == () and J.in_shape == ():
        field = {Diagonal: "diagonal", Dense: "array", Fill: "value"}.get(type(J))
        if field is not None:
            return B.sym(J, field, placeholder="c")
    if isinstance(J, Diagonal) and J.diagonal.size == 1:  # diag of one entry: c I_1
        d = B.sym(J, "diagonal", placeholder="d")
        return Sym(d.value.reshape(()), E.reshaped(d.expr, ()))
    return None


def scale(J: Jacobian, c: Sym) -> Jacobian:
    """$c J$ for a scalar ``c``, keeping the structure where it holds a number to scale."""
    if c.is_constant(1.0) or isinstance(J, Zero):
        return J
    if isinstance(J, Sum):
        return Sum(tuple(scale(t, c) for t in J.terms))
    rule = _SCALE.get(type(J))
    if rule is None:  # nothing to scale inside: a factor c I in front
        return compose(B.scaled_identity(c, J.out_shape, J.dtype), J)
    return rule(J, c)


_SCALE = {
    ScaledIdentity: lambda J, c: B.scaled_identity(c * B.sym(J, "scale"), J.in_shape, J.dtype),
    Diagonal: lambda J, c: B.diagonal(c * B.sym(J, "diagonal", placeholder="d"), J.out_shape,
                                      J.dtype),
    Fill: lambda J, c: B.fill(c * B.sym(J, "value", placeholder="c"), J.out_shape, J.in_shape,
                              J.dtype),
    Dense: lambda J, c: B.dense(c * B.sym(J, "array"), J.in_ndim, J.dtype),
}
"""The structures that hold a number to scale, and how."""


# -- the vector chain rule -----------------------------------------------------------------------
def compose(outer: Jacobian, inner: Jacobian) -> Jacobian:
    """``outer @ inner``, simplified.

    Both sides are read as chains of factors; adjacent factors are multiplied out wherever
    the product is one structure (:func:`_pair`), from the inside out, and what is left is
    kept factored.
    """
    if tuple(outer.in_shape) != tuple(inner.out_shape):
        raise ShapeError(f"mcjax.derive: cannot compose a {outer.kind} Jacobian taking "
                         f"{shape_str(outer.in_shape)} with a {inner.kind} Jacobian giving "
                         f"{shape_str(inner.out_shape)}")
    factors = factors_of(outer) + factors_of(inner)
    if any(isinstance(f, Zero) for f in factors):
        return B.zero(outer.out_shape, inner.in_shape, dtype_of(outer, inner))
    reduced: list[Jacobian] = []
    for f in factors:
        if B.is_identity(f):
            continue
        reduced.append(f)
        while len(reduced) >= 2:
            product = _pair(reduced[-2], reduced[-1])
            if product is None:
                break
            reduced[-2:] = [] if B.is_identity(product) else [product]
    if not reduced:
        return B.identity(inner.in_shape, dtype_of(outer, inner))
    return product_of(reduced)


def factors_of(J: Jacobian) -> list[Jacobian]:
    """The chain ``[A, B, C]`` of ``A @ B @ C`` (a single factor for anything else)."""
    if isinstance(J, Composed):
        return factors_of(J.outer) + factors_of(J.inner)
    return [J]


def product_of(factors: list[Jacobian]) -> Jacobian:
    J = factors[-1]
    for f in reversed(factors[:-1]):
        J = Composed(f, J)
    return J


_ABSORBS = tuple(_SCALE)


def _pair(outer: Jacobian, inner: Jacobian) -> Jacobian | None:
    """The product of two adjacent factors as one structure, or None."""
    if isinstance(outer, Zero) or isinstance(inner, Zero):
        return B.zero(outer.out_shape, inner.in_shape, dtype_of(outer, inner))
    for a, b in ((outer, inner), (inner, outer)):
        c = as_scalar(a)
        if c is not None and isinstance(b, _ABSORBS):
            return scale(b, c)
    return _simplify(outer, inner)


def _simplify(outer: Jacobian, inner: Jacobian) -> Jacobian | None:
    row = _row(outer)
    if row is not None:  # the derivative of a scalar: pull the row through, backprop
        return B.dense(pull(row, inner), len(inner.in_shape), dtype_of(outer, inner))
    column = _column(inner)
    if column is not None:  # the derivative with respect to a scalar: push it forward
        return B.dense(push(outer, column), 0, dtype_of(outer, inner))
    rule = SIMPLIFY.get((type(outer), type(inner)))
    return None if rule is None else rule(outer, inner)


def _row(J: Jacobian) -> Sym | None:
    """$\\mathbf{v}$ if ``J`` is a row $\\mathbf{v}^\\top$ (its output a scalar)."""
    if J.out_shape != ():
        return None
    if isinstance(J, Dense):
        return B.sym(J, "array", placeholder="v")
    if isinstance(J, Fill):
        c = B.sym(J, "value", placeholder="c")
        return Sym(jnp.broadcast_to(c.value, J.in_shape), E.reshaped(c.expr, J.in_shape))
    return None


def _column(J: Jacobian) -> Sym | None:
    """$\\mathbf{v}$ if ``J`` is a column (its input a scalar)."""
    if J.in_shape != () or J.out_shape == ():
        return None
    if isinstance(J, Dense):
        return B.sym(J, "array", placeholder="v")
    if isinstance(J, Fill):
        c = B.sym(J, "value", placeholder="c")
        return Sym(jnp.broadcast_to(c.value, J.out_shape), E.reshaped(c.expr, J.out_shape))
    return None


@simplifies(Diagonal, Diagonal)
def _diag_diag(outer, inner):
    d = B.sym(outer, "diagonal", placeholder="d") * B.sym(inner, "diagonal", placeholder="d")
    return B.diagonal(d, outer.out_shape, dtype_of(outer, inner))


@simplifies(Fill, Fill)
def _fill_fill(outer, inner):
    count = math.prod(outer.in_shape)
    c = B.sym(outer, "value", placeholder="c") * B.sym(inner, "value", placeholder="c") * count
    return B.fill(c, outer.out_shape, inner.in_shape, dtype_of(outer, inner))


def _fill(J: Fill, factor, out_shape, in_shape, outer, inner) -> Jacobian:
    c = B.sym(J, "value", placeholder="c")
    return B.fill(c * factor if factor != 1 else c, out_shape, in_shape, dtype_of(outer, inner))


# Every entry of 1 1^T is the same number: moving entries around changes no entry, copying
# (an expansion) or summing entries into one multiplies it by how many there were.
for _cls in (Reshape, Permutation, Expand, Broadcast):
    simplifies(_cls, Fill)(lambda o, i: _fill(i, 1, o.out_shape, i.in_shape, o, i))
for _cls in (Reshape, Permutation):
    simplifies(Fill, _cls)(lambda o, i: _fill(o, 1, o.out_shape, i.in_shape, o, i))
for _cls in (Expand, Broadcast):
    simplifies(Fill, _cls)(lambda o, i: _fill(
        o, math.prod(i.out_shape) // max(math.prod(i.in_shape), 1), o.out_shape, i.in_shape, o, i))
simplifies(Fill, SumAlong)(lambda o, i: _fill(o, 1, o.out_shape, i.in_shape, o, i))
simplifies(SumAlong, Fill)(lambda o, i: _fill(
    i, math.prod(o.in_shape) // max(math.prod(o.out_shape), 1), o.out_shape, i.in_shape, o, i))


@simplifies(Permutation, Permutation)
def _perm_perm(outer, inner):
    return B.permutation(tuple(inner.perm[p] for p in outer.perm), inner.in_shape, inner.dtype)


@simplifies(Reshape, Reshape)
def _reshape_reshape(outer, inner):
    return B.reshape(outer.out_shape, inner.in_shape, dtype_of(outer, inner))


@simplifies(Expand, Expand)
def _expand_expand(outer, inner):
    dims = tuple(outer.dims[d] for d in inner.dims)
    return B.expand(outer.out_shape, dims, inner.in_shape, dtype_of(outer, inner))


@simplifies(Slice, Embed)
def _slice_embed(outer, inner):
    """Picking out of a concatenation: the part itself, or nothing of it."""
    if outer.strides != (1,) * len(outer.strides) or inner.strides != outer.strides:
        return None
    lo, hi = inner.start, tuple(s + n for s, n in zip(inner.start, inner.in_shape))
    if outer.start == lo and outer.limit == hi:
        return B.identity(inner.in_shape, dtype_of(outer, inner))
    if any(a >= d or b <= c for a, b, c, d in zip(outer.start, outer.limit, lo, hi)):
        return B.zero(outer.out_shape, inner.in_shape, dtype_of(outer, inner))
    return None


# -- the total-derivative rule ------------------------------------------------------------------
def add(a: Jacobian, b: Jacobian) -> Jacobian:
    """``a + b`` (same shapes), merging terms of one structure."""
    if a.shape != b.shape:
        raise ShapeError(f"mcjax.derive: cannot add a {a.kind} Jacobian of shape "
                         f"{shape_str(a.shape)} to a {b.kind} Jacobian of shape "
                         f"{shape_str(b.shape)}")
    terms = list(a.terms) if isinstance(a, Sum) else [a]
    for new in b.terms if isinstance(b, Sum) else (b,):
        for i, old in enumerate(terms):
            merged = _merge(old, new)
            if merged is not None:
                terms[i] = merged
                break
        else:
            terms.append(new)
    terms = [t for t in terms if not isinstance(t, Zero)]
    if not terms:
        return B.zero(a.out_shape, a.in_shape, dtype_of(a, b))
    return terms[0] if len(terms) == 1 else Sum(terms)


_DIAGONAL_FIELD = {Diagonal: "diagonal", ScaledIdentity: "scale"}


def _merge(a: Jacobian, b: Jacobian) -> Jacobian | None:
    """``a + b`` as one term, or None."""
    if isinstance(a, Zero):
        return b
    if isinstance(b, Zero):
        return a
    dtype = dtype_of(a, b)
    if type(a) in _DIAGONAL_FIELD and type(b) in _DIAGONAL_FIELD:
        d = B.sym(a, _DIAGONAL_FIELD[type(a)], placeholder="d") + \
            B.sym(b, _DIAGONAL_FIELD[type(b)], placeholder="d")
        return B.diagonal(d, a.out_shape, dtype)
    if isinstance(a, Dense) and isinstance(b, Dense) and a.in_ndim == b.in_ndim:
        return B.dense(B.sym(a, "array") + B.sym(b, "array"), a.in_ndim, dtype)
    for x, y in ((a, b), (b, a)):
        if isinstance(x, Dense) and isinstance(y, Fill) and x.in_shape == ():  # two columns
            c = B.sym(y, "value", placeholder="c")
            return B.dense(B.sym(x, "array") + c, 0, dtype)
    if isinstance(a, Fill) and isinstance(b, Fill):
        return B.fill(B.sym(a, "value", placeholder="c") + B.sym(b, "value", placeholder="c"),
                      a.out_shape, a.in_shape, dtype)
    return _common_factor(a, b)


def _common_factor(a: Jacobian, b: Jacobian) -> Jacobian | None:
    """Two paths that end in the same factors: $A J + B J = (A + B) J$."""
    fa, fb = factors_of(a), factors_of(b)
    k = 0
    while k < min(len(fa), len(fb)) and fa[-1 - k] is fb[-1 - k]:
        k += 1
    if k == 0 or (k == len(fa) and k == len(fb)):
        return None
    common = fa[len(fa) - k:]
    head = [product_of(f[: len(f) - k]) if len(f) > k else
            B.identity(common[0].out_shape, dtype_of(a, b)) for f in (fa, fb)]
    return compose(add(head[0], head[1]), product_of(common))
