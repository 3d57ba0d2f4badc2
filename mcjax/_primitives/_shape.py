r"""Primitives that move, copy or pick entries: reshapes, transposes, broadcasts, slices,
concatenations, padding (Parr & Howard §4.3, §4.4).

Their Jacobians hold no numbers worth storing: a permutation for a transpose, a column of
ones for scalar expansion (§4.3), the rows of an identity for a slice, its transpose for a
concatenation or padding.  All are exact (no rounding of their own) and smooth.
"""

from __future__ import annotations

from mcjax._jacobian import _build as B
from mcjax._jacobian import _expr as E
from mcjax._jacobian._print import index_text
from mcjax._primitives._linear import linear
from mcjax._primitives._table import Eqn, register

FAMILY = "shape"


def on_operand(build, k: int = 0):
    """A rule for a primitive with one differentiable operand (``k``)."""
    def rule(e: Eqn) -> dict:
        x = e.ins[k]
        return {k: build(e, x.shape, x.dtype)} if k in e.active else {}

    return rule


def _same(a, shape, params):
    return E.reshaped(a[0], shape)


def exact(name: str, rule, expr=None, family: str = FAMILY, **knowledge):
    """Register a primitive whose result is exact (it only moves entries)."""
    register(name, family, jacobian=rule, expr=expr, rounding="exact", **knowledge)


exact("transpose", on_operand(lambda e, s, dt: B.permutation(e.params["permutation"], s, dt)),
      lambda a, shape, p: E.transpose(a[0], p["permutation"]))


def _reshape(e: Eqn, shape, dtype):
    """``reshape``; with ``dimensions`` the axes are first put in that order (a transposing
    reshape: a permutation, then the same entries in the new shape)."""
    dims = e.params.get("dimensions")
    if dims is None or tuple(dims) == tuple(range(len(shape))):
        return B.reshape(e.out.shape, shape, dtype)
    moved = tuple(shape[d] for d in dims)
    return B.compose(B.reshape(e.out.shape, moved, dtype), B.permutation(dims, shape, dtype))


def _reshape_expr(a, shape, params):
    dims = params.get("dimensions")
    if dims is not None and tuple(dims) != tuple(range(len(a[0].shape))):
        return E.reshaped(E.transpose(a[0], tuple(dims)), shape)
    return E.reshaped(a[0], shape)


exact("reshape", on_operand(_reshape), _reshape_expr)
for _name in ("squeeze", "expand_dims"):
    exact(_name, on_operand(lambda e, s, dt: B.reshape(e.out.shape, s, dt)), _same)
def _broadcast_expr(a, shape, params):
    """The operand's axes set where ``broadcast_dimensions`` puts them (size 1 elsewhere),
    then broadcast: ``x[:, None] * ones((1, n))`` keeps its rows."""
    kept = [1] * len(shape)
    for axis, d in enumerate(params["broadcast_dimensions"]):
        kept[d] = a[0].shape[axis]
    return E.reshaped(E.reshaped(a[0], tuple(kept)), shape)


exact("broadcast_in_dim",
      on_operand(lambda e, s, dt: B.expand(e.out.shape, e.params["broadcast_dimensions"], s, dt)),
      _broadcast_expr)


def _concatenate(e: Eqn) -> dict:
    axis, out = e.params["dimension"], e.out.shape
    offsets, at = [], 0
    for x in e.ins:
        offsets.append(at)
        at += x.shape[axis]
    out_j = {}
    for k in e.active:
        start = tuple(offsets[k] if a == axis else 0 for a in range(len(out)))
        out_j[k] = B.embed(start, None, out, e.ins[k].shape, e.ins[k].dtype)
    return out_j


exact("concatenate", _concatenate,
      lambda a, shape, p: E.concat(tuple(a), p["dimension"], shape))


def _slice_expr(a, shape, p):
    text, latex = index_text(p["start_indices"], p["limit_indices"], p["strides"], a[0].shape)
    return E.part(a[0], text, latex, shape)


exact("slice",
      on_operand(lambda e, s, dt: B.slice_(e.params["start_indices"], e.params["limit_indices"],
                                           e.params["strides"], s, dt)),
      _slice_expr)


def _pad(e: Eqn):
    """Padding puts the operand in place ($S^\\top$); cropping (negative padding) or the
    padding value's entries are the pad itself, applied to the tangent."""
    config = e.params["padding_config"]
    if 1 in e.active or any(lo < 0 or hi < 0 for lo, hi, _ in config):
        return linear("pad", affine=(0, 1), shown=())(e)
    x = e.ins[0]
    start = tuple(lo for lo, _, _ in config)
    strides = tuple(interior + 1 for _, _, interior in config)
    return {0: B.embed(start, strides, e.out.shape, x.shape, x.dtype)}


exact("pad", _pad, lambda a, shape, p: E.call("pad", a[0], shape=shape))
exact("rev", linear("rev"), lambda a, shape, p: E.call("rev", a[0], shape=shape))
exact("tile", linear("tile"), lambda a, shape, p: E.call("tile", a[0], shape=shape))
exact("stack", linear("stack", affine="all"), lambda a, shape, p: E.call("stack", *a, shape=shape))


def _split(e: Eqn) -> list:
    """Each part of ``split`` is a slice of the operand."""
    axis, at, parts = e.params["axis"], 0, []
    x = e.ins[0]
    for out in e.outs:
        n = out.shape[axis]
        start = tuple(at if a == axis else 0 for a in range(len(x.shape)))
        limit = tuple(at + n if a == axis else d for a, d in enumerate(x.shape))
        parts.append({0: B.slice_(start, limit, None, x.shape, x.dtype)} if 0 in e.active else {})
        at += n
    return parts


exact("split", _split)
exact("unstack", linear("unstack"))
