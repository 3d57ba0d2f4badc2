r"""Comparisons, logic, selection and steps: where a program decides between branches.

- **Comparisons and logic** (``gt``, ``eq``, ``and``, ...) give booleans: no derivative, but
  the checker follows how a direction moves them (a comparison at a tie flips);
- **select_n** (``jnp.where``) picks a case per element: its Jacobian is
  $\operatorname{diag}(\mathbb{1}[p = k])$ for case ``k``; where the predicate flips along a
  direction the function jumps (or has a kink, where the cases agree there);
- **steps** (``sign``, ``floor``, ``ceil``, ``round``) are piecewise constant: derivative 0,
  a jump at each step's edge; ``rem(x, y)`` is smooth between its jumps.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from mcjax._core._tolerance import SWITCH_ROUNDING
from mcjax._jacobian import _expr as E
from mcjax._jacobian import _sym as S
from mcjax._primitives._elementwise import ind, jax_partial, local, through
from mcjax._primitives._switch import (
    at_switch,
    bind_values,
    broadcast,
    directional_bind,
    floating,
    jump,
    zero_if_none,
)
from mcjax._primitives._table import Eqn, Slips, V, register

COMPARE = {"gt": ">", "lt": "<", "ge": ">=", "le": "<=", "eq": "==", "ne": "!=",
           "eq_to": "==", "lt_to": "<", "le_to": "<="}
_MOVING = {"gt": 1, "ge": 1, "lt": -1, "le": -1, "lt_to": -1, "le_to": -1}


def _compare_switch(eqn, ins, directional):
    """A comparison at a tie (within rounding) takes the side the direction moves it to."""
    p = bind_values(eqn, ins[0].p, ins[1].p)[0]
    a, b = (broadcast(v, p.shape) for v in ins)
    if not (floating(a.p) and floating(b.p)):
        return [V(p, d=directional_bind(eqn, ins))], [p]
    if not directional or (a.t is None and b.t is None):
        return [V(p)], [p]
    delta = zero_if_none(a.t, a.p) - zero_if_none(b.t, b.p)
    name = eqn.primitive.name
    if name in _MOVING:
        moving = delta * _MOVING[name] > 0
    else:  # equality breaks, inequality holds, as soon as the two move apart
        moving = jnp.zeros_like(p) if name in ("eq", "eq_to") else jnp.ones_like(p)
    d = jnp.where(at_switch(a, b) & (delta != 0), moving, p)
    return [V(p, d=d)], [p]


for _name, _op in COMPARE.items():
    register(_name, "comparison and logic", expr=lambda a, s, p, op=_op: E.compare(op, *a),
             behaviour="integer", switch=_compare_switch, rounding="exact")
register("not", "comparison and logic", expr=lambda a, s, p: E.logical_not(a[0]),
         behaviour="integer", rounding="exact")
for _name in ("and", "or", "xor", "shift_left", "shift_right_arithmetic", "shift_right_logical",
              "mulhi", "population_count", "clz"):
    register(_name, "comparison and logic", behaviour="integer", rounding="exact")
register("is_finite", "comparison and logic", behaviour="integer", rounding="exact")


# -- selection --------------------------------------------------------------------------------
def _select_n(e: Eqn) -> dict:
    """$\\partial\\,\\text{select}(p, x_0, x_1)/\\partial x_k = \\operatorname{diag}(\\mathbb{1}[p = k])$."""
    which = e.ins[0].sym
    out = {}
    for k in e.active:
        if k == 0:
            continue  # the predicate is not differentiable
        case = k - 1
        if jnp.result_type(which.value) == jnp.bool_:
            chosen = which if case == 1 else S.logical_not(which)
        else:
            chosen = which.equals(case)
        out[k] = local(e, k, ind(chosen, e.out.sym))
    return out


def _select_expr(a, shape, params):
    if len(a) == 3:
        expr = E.where(a[0], a[2], a[1])
        if any(x.op == "num" and x.param == 0 for x in a[1:]):  # where(x > 0, x, 0)
            return E.Expr(expr.op, expr.args, expr.param, expr.shape, False, "a")
        return expr
    return E.call("select", *a)


def _select_switch(eqn, ins, directional):
    """The case the predicate picks; where the direction flips the predicate, the new case's
    tangent, or an infinite one where the cases' values differ (a jump)."""
    p = lax.select_n(ins[0].p, *[c.p for c in ins[1:]])
    which, *cases = (broadcast(v, p.shape) for v in ins)
    if not floating(p):
        d = None if which.d is None and all(c.d is None for c in cases) else lax.select_n(
            which.p if which.d is None else which.d, *[c.p if c.d is None else c.d for c in cases])
        return [V(p, d=d)], [which.p]
    e = None
    if any(c.e is not None for c in cases):
        e = lax.select_n(which.p, *[zero_if_none(c.e, p) for c in cases])
    if not directional or all(c.t is None for c in cases):
        return [V(p, e)], [which.p]
    tangents = [zero_if_none(c.t, p) for c in cases]
    if which.d is None:
        return [V(p, e, lax.select_n(which.p, *tangents))], [which.p]
    new_value = lax.select_n(which.d, *[c.p for c in cases])
    slack = lax.select_n(which.d, *[zero_if_none(c.e, p) for c in cases]) + zero_if_none(e, p)
    step = jump(new_value, p, slack)
    t = jnp.where(step == 0, lax.select_n(which.d, *tangents), step)
    return [V(p, e, t)], [which.p]


def _ungate_select(apply, operands, dependent):
    """``where(mask, z, 0)`` with one case depending on the argument: straight through to it."""
    if sum(dependent[1:]) != 1:
        return None
    gated = apply(operands)[0]
    return [through(gated, jnp.broadcast_to(operands[1 + dependent[1:].index(True)], gated.shape))]


register("select_n", "comparison and logic", jacobian=_select_n, expr=_select_expr,
         behaviour="jump", switch=_select_switch, rounding="exact",
         slips=Slips(gate=_ungate_select, branches=(1, 2, 3, 4)))


# -- steps --------------------------------------------------------------------------------------
def _steps_switch(eqn, ins, directional):
    """Step functions: derivative 0, but a jump where the argument sits on a step's edge."""
    (x,) = ins
    p = bind_values(eqn, x.p)[0]
    if not directional or x.t is None:
        return [V(p)], [p]
    name = eqn.primitive.name
    edge = (jnp.zeros_like(x.p) if name == "sign" else
            jnp.floor(x.p) + 0.5 if name == "round" else jnp.round(x.p))
    on_edge = jnp.abs(x.p - edge) <= SWITCH_ROUNDING * zero_if_none(x.e, x.p)
    moved = bind_values(eqn, edge + 0.25 * jnp.sign(x.t))[0]  # the value just past the edge
    t = jnp.where(on_edge & (x.t != 0), jump(moved, p, jnp.zeros_like(p)), 0.0)
    return [V(p, None, t)], [p]


for _name in ("sign", "floor", "ceil", "round"):
    register(_name, "comparison and logic", jacobian=lambda e: {}, behaviour="piecewise constant",
             switch=_steps_switch, rounding="exact")
register("stop_gradient", "comparison and logic", jacobian=lambda e: {},
         expr=lambda a, s, p: a[0],  # its value is its operand's
         behaviour="piecewise constant", rounding="exact")


def _rem_switch(eqn, ins, directional):
    """``rem(x, y) = x - y trunc(x / y)``: JAX's derivative between the jumps, which sit where
    ``x / y`` crosses an integer (the side is ``trunc(x / y)``)."""
    x, y = ins
    p = bind_values(eqn, x.p, y.p)[0]
    a, b = broadcast(x, p.shape), broadcast(y, p.shape)
    quotient = a.p / b.p
    side = jnp.trunc(quotient)
    e = None if a.e is None and b.e is None else zero_if_none(a.e, p) + jnp.abs(
        side) * zero_if_none(b.e, p)
    if not directional or (a.t is None and b.t is None):
        return [V(p, e)], [side]
    ta, tb = zero_if_none(a.t, p), zero_if_none(b.t, p)
    t = ta - side * tb
    # a jump sits where x is a multiple of y: rem is 0 just on the far side of it from zero
    # and +-|y| just on the near side; a direction that moves the quotient across it jumps
    slack = zero_if_none(a.e, p) + jnp.abs(quotient) * zero_if_none(b.e, p) + 4 * jnp.finfo(
        p.dtype).eps * jnp.abs(a.p)
    rate = (ta * b.p - a.p * tb) / b.p**2  # d(x / y) along the direction
    toward_zero = rate * jnp.sign(quotient) < 0
    after = (jnp.abs(p) <= SWITCH_ROUNDING * slack) & (jnp.abs(quotient) >= 0.5) & toward_zero
    before = (jnp.abs(jnp.abs(p) - jnp.abs(b.p)) <= SWITCH_ROUNDING * slack) & (rate != 0) & \
        ~toward_zero
    size = b.p * jnp.sign(quotient)  # the jump's height, moving towards zero
    t = jnp.where(after, jnp.inf * jnp.sign(size), jnp.where(before, -jnp.inf * jnp.sign(size), t))
    return [V(p, e, t)], [side]


register("rem", "element-wise",
         jacobian=lambda e: {k: local(e, k, jax_partial(
             e, k, E.ONE if k == 0 else E.neg(E.call("trunc", E.div(e.ins[0].expr,
                                                                     e.ins[1].expr)))))
             for k in e.active},
         expr=lambda a, s, p: E.call("rem", *a), behaviour="jump", switch=_rem_switch)
