r"""What the switch rules of the table share: reading a branch and a direction.

A switch rule (``SwitchRule``) gets its operands as
``V`` values: primal ``p``, a bound ``e`` on the
rounding error it carries, the tangent ``t`` along the direction being read, and for booleans
and integers the value ``d`` just after moving along it.  A switch is *at its switch* when
its switching quantity (``a - b`` of ``max(a, b)``, ``x`` of ``abs(x)``) is within the
rounding it carries (``SWITCH_ROUNDING``): there the direction,
not the primal, says which branch is taken.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mcjax._core._tolerance import SWITCH_ROUNDING
from mcjax._primitives._table import V
from mcjax._program._walk import bind


def bind_values(eqn, *values) -> list:
    """``eqn``'s primitive on ``values``, a list of outputs."""
    return bind(eqn, list(values))


def floating(x) -> bool:
    return bool(jnp.issubdtype(jnp.result_type(x), jnp.inexact))


def zero_if_none(a, like):
    return jnp.zeros_like(like) if a is None else a


def broadcast(v: V, shape) -> V:
    """``v`` with every part broadcast to ``shape`` (lax ops allow scalar operands; jnp under
    strict rank promotion does not)."""
    grow = lambda a: None if a is None else jnp.broadcast_to(a, shape)  # noqa: E731
    return V(jnp.broadcast_to(v.p, shape), grow(v.e), grow(v.t), grow(v.d))


def at_switch(a: V, b: V | None = None):
    """Where ``a - b`` (or ``a``) is at its switch: within the rounding both carry."""
    diff = a.p if b is None else a.p - b.p
    slack = zero_if_none(a.e, a.p) + (0 if b is None or b.e is None else b.e)
    return jnp.abs(diff) <= SWITCH_ROUNDING * slack


def jump(new, old, slack):
    """The directional derivative of a jump from ``old`` to ``new``: infinite, with its sign."""
    step = new - old
    return jnp.where(jnp.abs(step) <= SWITCH_ROUNDING * slack, 0.0, jnp.inf * jnp.sign(step))


def directional_bind(eqn, ins: list[V]):
    """The directional value of an equation on booleans and integers (None where no operand
    moves)."""
    if all(v.d is None for v in ins):
        return None
    return bind_values(eqn, *[v.p if v.d is None else v.d for v in ins])[0]


def jvp_of(eqn, primals, tangents):
    """``(outs, output tangents)`` of one equation by JAX's own rule; None tangents are zero
    (an integer operand, or one that does not depend on the argument)."""
    if all(t is None for t in tangents):
        return bind_values(eqn, *primals), None

    # every floating operand moves (by zero where its tangent is None): JAX's rule for
    # custom_linear_solve passes symbolic zeros of the operands held to its bind, which fails
    moving = [i for i, p in enumerate(primals) if tangents[i] is not None or floating(p)]

    def of(*xs):
        args = list(primals)
        for i, x in zip(moving, xs):
            args[i] = x
        return bind_values(eqn, *args)

    outs, tans = jax.jvp(of, [primals[i] for i in moving],
                         [jnp.zeros_like(primals[i]) if tangents[i] is None else tangents[i]
                          for i in moving])
    return outs, [t if floating(o) else None for o, t in zip(outs, tans)]


class Stand(NamedTuple):
    """A stand-in equation for composing rules (``clamp`` as ``min(max(x, lo), hi)``)."""

    primitive: object
    params: dict = {}
    ctx: object = SimpleNamespace(manager=contextlib.nullcontext())
