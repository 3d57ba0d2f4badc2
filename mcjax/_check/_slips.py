r"""Slips of hand derivations, as variants of ``f`` whose Jacobian the slip would give.

Each variant evaluates ``f``'s jaxpr with one place rewritten so that its *value* is unchanged
and its *derivative* is what a slip produces.  When the derivative under test matches a
variant's Jacobian (and the true one does not), the diagnosis names the slip and the line of
``f`` it is about:

- **ungated**: every gate (``max(z, 0)``, ``where(mask, z, 0)``) straight-through: the
  ``1[z > 0]`` of a ReLU forgotten;
- **a term dropped**: one operand of a sum, product, quotient or matrix product that
  depends on the argument is put behind ``stop_gradient``: one term of a product rule, the
  mean's dependence in a layer norm, the :math:`-s s^\top` of the softmax Jacobian;
- **a term negated**: the same operand's term with its sign flipped;
- **value for derivative**: an element-wise function's derivative replaced by its value
  (:math:`\sigma` for :math:`\sigma(1 - \sigma)`, ``tanh`` for :math:`1 - \tanh^2`).

Places are numbered in the order the jaxpr is walked (nested ``jit`` calls included, the
insides of ``custom_jvp``/``custom_vjp`` functions not: their derivative is their rule).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core

from mcjax._program._walk import Interpreter, bind, user_place
from mcjax._program.primitives import Slips, lookup

MAX_SITES = 48
"""At most this many rewritten variants are tried (the first places of ``f``)."""


class Site(NamedTuple):
    """One place of ``f`` where a slip can be planted."""

    index: int  # the equation's number in the walk
    how: str  # "drop", "negate" or "value"
    operand: int
    primitive: str
    where: str  # the user's code and line, for the sentence

    def describe(self) -> str:
        """The slip in words."""
        entry = lookup(self.primitive)
        assert entry is not None  # a site is planted only where the table has one
        slips = entry.slips
        if self.how == "value":
            name = slips.value
            where = f" in {self.where}" if self.where else ""
            return (f"{name}'s derivative replaced by {name} itself{where}: the "
                    "function's value where its derivative was due (sigma for sigma (1 - sigma), "
                    "tanh for 1 - tanh^2?)")
        assert slips.terms is not None
        what, operands = slips.terms
        term = f"the term through {operands[self.operand]} of the {what}" + (
            f" {self.where}" if self.where else f" ({self.primitive})")
        if self.how == "drop":
            return f"a missing term: matches the derivative with {term} left out"
        return f"a sign error in one term: matches the derivative with {term} negated"


def _where(eqn) -> str:
    """The user's code of ``eqn`` and its line: ``e / jnp.sum(e)`` (model.py:5); "" when
    ``f`` has no line of the user's (a library's function checked as it is)."""
    place = user_place(eqn)
    return "" if place is None else str(place)


class _Numbered(Interpreter):
    """A walk that numbers the equations it meets, calls and their bodies alike, in order:
    a site's number is the same in ``sites`` and in ``variant``."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def equation(self, eqn, ins):
        self.index = self.count
        self.count += 1
        return super().equation(eqn, ins)

    def custom(self, eqn, ins):  # a custom rule's derivative is its rule: no sites inside
        return self.primitive(eqn, ins)


class _Sites(_Numbered):
    """Which values depend on the argument (booleans), and the sites met on the way."""

    def __init__(self):
        super().__init__()
        self.found: list[Site] = []

    def literal(self, value) -> bool:
        return False

    def primitive(self, eqn, deps: list[bool]) -> list[bool]:
        name = eqn.primitive.name
        floating = all(_floating_var(v) for v in eqn.outvars)
        entry = lookup(name)
        slips = entry.slips if entry is not None else Slips()
        if slips.terms is not None and sum(deps) == 2 and floating:
            where = _where(eqn)
            for operand in (0, 1):
                self.found.append(Site(self.index, "drop", operand, name, where))
                self.found.append(Site(self.index, "negate", operand, name, where))
        elif slips.value and deps == [True] and floating:
            self.found.append(Site(self.index, "value", 0, name, _where(eqn)))
        return [any(deps)] * len(eqn.outvars)


def sites(jaxpr: core.Jaxpr) -> list[Site]:
    """The places of ``jaxpr`` (a function of one array) where a slip can be planted."""
    walk = _Sites()
    walk.run(jaxpr, [False] * len(jaxpr.constvars), [True] * len(jaxpr.invars))
    return walk.found[:MAX_SITES]


def _floating_var(var) -> bool:
    dtype = getattr(var.aval, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.floating)


def _rewrite(eqn, invals, deps, target):
    """The equation's outputs with ``target`` planted (a ``Site``, or ``"ungated"``)."""
    sg = lax.stop_gradient
    if target == "ungated":
        name = eqn.primitive.name
        entry = lookup(name)
        gate = entry.slips.gate if entry is not None else None
        ungated = gate(lambda values: bind(eqn, values), invals, deps) if gate else None
        return ungated if ungated is not None else bind(eqn, invals)
    if target.how == "value":
        (a,) = invals
        y = sg(bind(eqn, [a])[0])
        return [y + y * (a - sg(a))]  # value g(a), derivative g(a) a'
    args = list(invals)
    v = args[target.operand]
    args[target.operand] = sg(v) if target.how == "drop" else 2 * sg(v) - v
    return bind(eqn, args)


class _Planted(_Numbered):
    """``f`` evaluated with ``target`` planted; a value is ``(array, depends on the argument)``."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def literal(self, value):
        return value, False

    def custom(self, eqn, ins):
        if self.target == "ungated" and eqn.primitive.name == "custom_jvp_call":
            return self.inline(eqn, ins)  # jax.nn.relu's own max(x, 0): its gate
        return self.primitive(eqn, ins)

    def primitive(self, eqn, ins):
        invals, deps = [v for v, _ in ins], [d for _, d in ins]
        if self.target == "ungated" or (isinstance(self.target, Site)
                                        and self.target.index == self.index):
            out = _rewrite(eqn, invals, deps, self.target)
        else:
            out = bind(eqn, invals)
        return [(o, any(deps)) for o in out]


def variant(fn: Callable, target) -> Callable:
    """``fn`` (of one array) with ``target`` planted: a ``Site`` or ``"ungated"``.
    Same values, the slip's derivative."""

    def planted(x):
        closed = jax.make_jaxpr(fn)(x)
        (out,) = _Planted(target).run(closed.jaxpr, closed.consts, [(x, True)])
        return out[0]

    return planted
