r"""Windows and running reductions: pooling (``reduce_window``), cumulative sums, products and
maxima.

- a sum over windows (average pooling) and a cumulative sum are linear: their Jacobian is
  the operation itself (``reduce_window_sum(·)``, the lower-triangular ones $L$ of ``cumsum``);
- a max (min) over windows takes each window's winner, JAX's choice at a tie: a selection
  (``mcjax.Take``); for the checker a tie in a window is a kink;
- ``cummax``/``cummin`` take the running winner (a selection; at a tie JAX shares the
  derivative, which is its own JVP there); ``cumprod`` is $\operatorname{diag}(\mathbf{y})\,L\,
  \operatorname{diag}(1/\mathbf{x})$ and ``cumlogsumexp`` $\operatorname{diag}(e^{-\mathbf{y}})
  \,L\,\operatorname{diag}(e^{\mathbf{x}})$, applied as JAX's own JVP (no division by an entry
  that is zero, no overflow).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mcjax._core._tolerance import SWITCH_ROUNDING
from mcjax._jacobian import _build as B
from mcjax._primitives._linear import linear, operation, picked
from mcjax._primitives._switch import bind_values, zero_if_none
from mcjax._primitives._table import Eqn, V, register

FAMILY = "windows"

register("reduce_window_sum", FAMILY, jacobian=linear("window_sum"), rounding="sum")
register("cumsum", FAMILY, jacobian=linear("cumsum"), rounding="sum")
register("select_and_scatter_add", FAMILY,
         jacobian=linear("select_and_scatter_add", shown=(), slots=(0,)), rounding="sum")
register("select_and_gather_add", FAMILY,
         jacobian=linear("select_and_gather_add", shown=(), slots=(0,)), rounding="exact")


def _select(check: bool):
    """A rule for a primitive whose derivative picks one input entry per output: the entries
    JAX's JVP picks (``check``: where it may share one at a tie, the JVP itself there)."""

    def rule(e: Eqn):
        if 0 not in e.active:
            return {}
        index = picked(e, 0, check=check)
        if index is None:
            return {0: _own_derivative(e, 0)}
        return {0: B.take(index, e.ins[0].shape, e.out.dtype)}

    return rule


def _own_derivative(e: Eqn, k: int, written: str = "", latex: str = ""):
    """JAX's own derivative of the primitive at this point, applied to the tangent of
    operand ``k``: linear in it, held as the point (no residuals, no dense matrix)."""
    held = [op.value for op in e.ins] + [None]
    return B.applied(operation(e, written or f"∂{e.name}", derivative=True, wrt=k,
                               latex=latex), held,
                     len(e.ins), e.ins[k].shape, e.out.shape, e.out.dtype,
                     [op.expr for op in e.ins])


def window_index(shape, dims, strides, padding, base=None, dilation=None) -> np.ndarray:
    """The flat position in an array of ``shape`` of every entry of every window of
    ``lax.reduce_window`` (``-1`` where the window covers padding or a hole of the base
    dilation): an integer array ``(windows, window size)``, windows in the output's order."""
    base = base or (1,) * len(shape)
    dilation = dilation or (1,) * len(shape)
    per_axis = []
    for n, k, st, (lo, hi), b, d in zip(shape, dims, strides, padding, base, dilation):
        size = (n - 1) * b + 1 + lo + hi  # the padded, dilated axis
        out = (size - ((k - 1) * d + 1)) // st + 1
        at = np.arange(out)[:, None] * st + np.arange(k)[None, :] * d - lo  # (out, k)
        inside = (at >= 0) & (at < (n - 1) * b + 1) & (at % b == 0)
        per_axis.append(np.where(inside, at // b, -1))
    index = np.zeros((1, 1), np.int64)
    valid = np.ones((1, 1), bool)
    for n, axis in zip(shape, per_axis):  # row-major: the last axis varies fastest
        o, k = axis.shape
        index = (index[:, None, :, None] * n + axis[None, :, None, :]).reshape(-1, index.shape[1] * k)
        valid = (valid[:, None, :, None] & (axis >= 0)[None, :, None, :]).reshape(index.shape)
    return np.where(valid, index, -1)


def _window_switch(eqn, ins, directional):
    """Max (min) over windows: the side is each window's winner; at a tie the tangent of the
    tied entry that moves up most (the directional derivative of a maximum)."""
    x = ins[0]
    bigger = eqn.primitive.name == "reduce_window_max"
    p = bind_values(eqn, *[v.p for v in ins])[0]
    params = eqn.params
    index = jnp.asarray(window_index(x.p.shape, params["window_dimensions"],
                                     params["window_strides"], params["padding"],
                                     params.get("base_dilation"), params.get("window_dilation")))
    fill = -jnp.inf if bigger else jnp.inf
    inside = index >= 0

    def patches(a, empty):
        return jnp.where(inside, jnp.reshape(a, (-1,))[jnp.maximum(index, 0)], empty)

    values = patches(x.p, fill)
    side = jnp.argmax(values, axis=1) if bigger else jnp.argmin(values, axis=1)
    e = None if x.e is None else jnp.max(patches(x.e, 0.0), axis=1).reshape(p.shape)
    if not directional or x.t is None:
        return [V(p, e)], [side]
    best = jnp.reshape(p, (-1, 1))
    tied = inside & (jnp.abs(values - best) <= SWITCH_ROUNDING * 2 * patches(
        zero_if_none(x.e, x.p), 0.0))
    pick = jnp.max if bigger else jnp.min
    t = pick(jnp.where(tied, patches(x.t, 0.0), fill), axis=1)
    return [V(p, e, jnp.where(jnp.isfinite(t), t, 0.0).reshape(p.shape))], [side]


for _name in ("reduce_window_max", "reduce_window_min"):
    register(_name, FAMILY, jacobian=_select(check=False), behaviour="kink",
             switch=_window_switch, rounding="exact")
def _reduce_window(e: Eqn):
    """A window reduction by a computation of its own: a sum (``add``) is linear, the
    reduction itself applied with its initial value held at 0; a max or min picks each
    window's winner; anything else is JAX's map of it."""
    jaxpr = e.params["jaxpr"]
    ops = [q.primitive.name for q in getattr(jaxpr, "jaxpr", jaxpr).eqns]
    count = len(e.ins) // 2
    if ops == ["add"] and count == 1:
        return linear("window_sum", affine=(1,), shown=(), slots=(0,))(e)
    if ops in (["max"], ["min"]) and count == 1 and 0 in e.active:
        index = picked(e, 0, check=True)
        return None if index is None else {0: B.take(index, e.ins[0].shape, e.out.dtype)}
    return None


register("reduce_window", FAMILY, jacobian=_reduce_window,
         fallback="a window reduction by a computation other than a sum, max or min (JAX's "
         "map of it)")
for _name in ("cummax", "cummin"):
    register(_name, FAMILY, jacobian=_select(check=True), behaviour="kink", rounding="exact")


def _cumulative(written: str, latex: str):
    def rule(e: Eqn):
        return {0: _own_derivative(e, 0, written, latex)} if 0 in e.active else {}

    return rule


register("cumprod", FAMILY, jacobian=_cumulative(
    "diag(y) L diag(1/x)", r"\operatorname{diag}(\mathbf{y})\,L\,\operatorname{diag}(1/\mathbf{x})"))
register("cumlogsumexp", FAMILY, jacobian=_cumulative(
    "diag(exp(-y)) L diag(exp(x))",
    r"\operatorname{diag}(e^{-\mathbf{y}})\,L\,\operatorname{diag}(e^{\mathbf{x}})"))
