r"""Kinks read from ``f`` itself: where it switches, and its one-sided derivatives there.

A function built from JAX primitives is non-smooth only where a *switch* changes branch:
``max``/``min`` (so ``jax.nn.relu``, ``clip``), ``abs``, ``sign``, ``floor``/``ceil``/``round``,
``rem``, ``select_n`` fed by a comparison (``jnp.where(x > 0, ...)``), ``reduce_max``/``argmax``
and ``sort`` at ties.  Which primitives switch, and how, is the primitive table's knowledge
(each entry's ``switch`` rule, ``mcjax._primitives``).  This module walks ``f``'s
jaxpr with the one walker, equation by equation, and at each switch asks whether the *switching quantity* (``a - b`` of ``max(a, b)`` or of the comparison,
``x`` of ``abs(x)``) is at the switch: exactly, or within the rounding error it carries (a
bound propagated through the jaxpr, zero for ``f``'s own arguments; see
``SWITCH_ROUNDING``).

Two things come out:

- **one-sided derivatives**: ``f``'s directional derivative ``f'(x; v)`` is evaluated in
  forward mode with each switch at its switch taking the branch the direction moves it into
  (``max(a, b)`` at a tie has derivative ``max(a', b')`` along ``v``; ``abs`` at 0 ``|x'|``; a
  ``where`` whose predicate flips takes the new branch's tangent, or an infinite one where
  the branches disagree: a jump).  Directional derivatives compose by the chain rule, so
  ``right_j = f'(x; e_j)`` and ``left_j = -f'(x; -e_j)`` are exact.  An entry is *at a kink*
  when the two differ; everywhere else ``f`` is differentiable and the exact references
  (``jax.jacfwd``, ``jax.jacrev``) judge it;
- **switch sides**: the branch every switch takes, so that a finite-difference stencil or a
  Taylor step that lands on another branch (it *crosses* a kink) is recognised and left out.

Inside ``custom_jvp``/``custom_vjp`` functions (``jax.nn.relu``) the function's own
computation is read (JAX's value at the kink, from the custom rule, is always accepted by the
checker).  Inside ``lax.cond``, ``scan`` and ``while`` loops switches are not read: JAX's
derivative is taken there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core

from mcjax._primitives import TABLE, V, lookup
from mcjax._primitives._switch import (
    bind_values,
    directional_bind,
    floating,
    jump,
    jvp_of,
    zero_if_none,
)
from mcjax._program._inspect import equation_terms
from mcjax._program._walk import (
    CALLS,
    CUSTOM_RULES,
    Interpreter,
    bind,
    equations,
    needed,
    sub_jaxprs,
)


def switches() -> frozenset[str]:
    """The primitives the table knows a switch rule for."""
    return frozenset(name for name, entry in TABLE.items() if entry.switch is not None)


def has_switches(jaxpr: core.Jaxpr) -> bool:
    """Whether ``jaxpr`` (or a sub-jaxpr) holds a switch primitive."""
    known = switches()
    return any(eqn.primitive.name in known for eqn in equations(jaxpr))


def _eps(x):
    return jnp.asarray(jnp.finfo(jnp.result_type(x)).eps, jnp.result_type(x))


def _rounding(eqn, ins: list[V], outs) -> list:
    """A bound on each output's rounding error: the inputs' bounds carried through (each input
    on its own, so that signs cannot cancel) plus the equation's own rounding, which for a
    sum of ``T`` terms is ``sqrt(T) eps`` times the sum of their magnitudes (the checker's
    own model of rounding, see ``check_rtol``)."""
    if not any(floating(o) for o in outs):  # integers and booleans carry no rounding
        return [None] * len(outs)
    if any(jnp.iscomplexobj(v) for v in [i.p for i in ins] + list(outs)):
        # complex values (an FFT's) carry no bound; a real output of them (|z|, real z)
        # starts afresh with an elementary function's own rounding
        return [4 * _eps(o) * jnp.abs(o) if floating(o) and not jnp.iscomplexobj(o) else None
                for o in outs]
    entry = lookup(eqn.primitive.name)
    model = entry.rounding if entry is not None else "elementary"
    if model == "bilinear" and len(ins) == 2:  # |a| e_b + e_a |b|
        a, b = ins
        magnitude = bind_values(eqn, jnp.abs(a.p), jnp.abs(b.p))[0]
        carried = 0.0
        if a.e is not None:
            carried = carried + bind_values(eqn, a.e, jnp.abs(b.p))[0]
        if b.e is not None:
            carried = carried + bind_values(eqn, jnp.abs(a.p), b.e)[0]
        own = np.sqrt(equation_terms(eqn)) * _eps(outs[0]) * magnitude
        return [(carried + own).astype(outs[0].dtype)]
    carried = [0.0] * len(outs)
    primals = [v.p for v in ins]
    for i, v in enumerate(ins):
        if v.e is None or not floating(v.p):
            continue
        tangents: list = [None] * len(ins)
        tangents[i] = v.e
        _, tans = jvp_of(eqn, primals, tangents)
        carried = [c + (0.0 if t is None else jnp.abs(t)) for c, t in zip(carried, tans or [])]
    if model == "exact":
        own = [0.0] * len(outs)
    elif model == "sum" and len(ins) == 1:
        own = [np.sqrt(equation_terms(eqn)) * _eps(outs[0]) * bind_values(
            eqn, jnp.abs(primals[0]))[0]]
    else:  # an elementary function: a few units in the last place
        own = [4 * _eps(o) * jnp.abs(o) if floating(o) else 0.0 for o in outs]
    return [None if not floating(o) or (isinstance(c, float) and isinstance(r, float))
            else jnp.broadcast_to(c + r, o.shape).astype(o.dtype)
            for c, r, o in zip(carried, own, outs)]


# -- the interpreter ---------------------------------------------------------------------------
def _reads_a_switch(eqn) -> bool:
    """Whether ``eqn`` is a switch, or a call whose body holds one."""
    return eqn.primitive.name in switches() or (
        eqn.primitive.name in CALLS | CUSTOM_RULES and any(has_switches(j) for j in sub_jaxprs(eqn)))


class _KinkReader(Interpreter[V]):
    """``f``'s jaxpr evaluated on ``V`` values; every switch's side appended to ``sides``.

    Only the variables whose rounding bound a switch (or a wanted output) reads carry one:
    each jaxpr's scope annotation is that set (a backward pass, ``needed``).
    """

    def __init__(self, directional: bool, sides: list | None):
        super().__init__()
        self.directional, self.sides = directional, sides

    def literal(self, value) -> V:
        return V(value)

    def scope(self, jaxpr, outputs):
        if not self.directional:
            return frozenset()
        return needed(jaxpr, outputs or (False,) * len(jaxpr.outvars), _reads_a_switch)

    def wanted(self, eqn, annotation):
        return tuple(v in annotation for v in eqn.outvars)

    def store(self, var, value: V, annotation) -> V:
        return value if var in annotation or value.e is None else value._replace(e=None)

    def primitive(self, eqn, ins: list[V]) -> list[V]:
        name = eqn.primitive.name
        entry = lookup(name)
        if entry is not None and entry.switch is not None and not any(
                jnp.iscomplexobj(v.p) for v in ins):  # |z| of a complex z: JAX's own rule
            outs, switch_sides = entry.switch(eqn, ins, self.directional)
            if self.sides is not None:
                self.sides.extend(switch_sides)
            return outs
        want = self.wanted(eqn, self.annotation)
        primals = [v.p for v in ins]
        if self.directional:
            outs, tans = jvp_of(eqn, primals, [v.t if floating(v.p) else None for v in ins])
            errors = _rounding(eqn, ins, outs) if any(want) else [None] * len(outs)
        else:
            outs, tans, errors = bind(eqn, primals), None, [None] * len(eqn.outvars)
        directions = directional_bind(eqn, ins)
        result = []
        for k, o in enumerate(outs):
            t = None if tans is None else tans[k]
            if directions is not None and name == "convert_element_type" and floating(o):
                t = jump(bind(eqn, [directions])[0], o, jnp.zeros_like(o))  # a boolean made a number
            d = directions if len(outs) == 1 and not floating(o) else None
            result.append(V(o, errors[k], t, d))
        return result


def interpret(jaxpr: core.Jaxpr, consts, args: list[V], directional: bool,
              sides: list | None = None, outputs_need_error: tuple[bool, ...] | None = None
              ) -> list[V]:
    """Evaluate ``jaxpr`` on ``V`` values; append every switch's side to ``sides``."""
    return _KinkReader(directional, sides).run(jaxpr, consts, args, outputs_need_error)


def closed_flat(f_flat, x) -> core.ClosedJaxpr:
    """``f_flat``'s jaxpr at ``x`` (traced now, inside whatever program calls this)."""
    return jax.make_jaxpr(f_flat)(x)


def one_sided(f_flat, x) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(right, left, together, together_left)``: ``f``'s one-sided derivatives along each
    coordinate of the flat argument ``x`` (shape ``(n,)``), each ``(m, n)`` in ``x``'s dtype,
    and along all the coordinates at a kink at once (``v`` the indicator of the columns where
    right and left differ: ``f'(x; v)`` and ``-f'(x; -v)``, each ``(m,)``), which tells ties
    that move together (a maximum's) from kinks that do not."""
    closed = closed_flat(f_flat, x)

    def along(v):
        (out,) = interpret(closed.jaxpr, closed.consts, [V(x, None, v)], True)
        return zero_if_none(out.t, out.p)

    n = x.shape[0]
    eye = jnp.eye(n, dtype=x.dtype)
    both = jax.vmap(along)(jnp.concatenate([eye, -eye]))  # (2n, m): along +e_j, then -e_j
    right, left = both[:n].T, -both[n:].T
    kinked = jnp.any(right != left, axis=0).astype(x.dtype)
    together = jax.vmap(along)(jnp.stack([kinked, -kinked]))
    return right, left, together[0], -together[1]


def switch_sides(f_flat, x) -> tuple[jax.Array, list]:
    """``f_flat(x)`` and the side every switch takes there."""
    closed = closed_flat(f_flat, x)
    sides: list = []
    (out,) = interpret(closed.jaxpr, closed.consts, [V(x)], False, sides)
    return out.p, sides


def crosses(sides_here: list, sides_there: list):
    """Whether any switch takes another side (a scalar boolean)."""
    changed = [jnp.any(a != b) for a, b in zip(sides_here, sides_there)]
    return jnp.any(jnp.stack(changed)) if changed else jnp.asarray(False)
