"""Walking a traced program (a jaxpr): the equations, the calls, binding one equation.

JAX programs nest: ``jit`` (``pjit``), ``closed_call``, ``remat`` and the custom-rule
primitives (``custom_jvp_call``, ``custom_vjp_call``) call jaxprs of their own, and ``cond``,
``while`` and ``scan`` hold branches and bodies.
"""

from __future__ import annotations

from collections.abc import Iterator

from jax.extend import core

CUSTOM_RULES = ("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr", "custom_lin")
"""The primitives that carry a custom derivative rule."""


def sub_jaxprs(eqn) -> Iterator[core.Jaxpr]:
    """The jaxprs an equation calls (pjit, cond branches, scan bodies, custom rules)."""
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, core.Jaxpr):
                yield item


def custom_rules(jaxpr: core.Jaxpr) -> set[str]:
    """The custom-derivative primitives (``custom_jvp_call``, ``custom_vjp_call``) that
    ``jaxpr`` or its sub-jaxprs call."""
    found = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in CUSTOM_RULES:
            found.add(eqn.primitive.name)
        for inner in sub_jaxprs(eqn):
            found |= custom_rules(inner)
    return found
