"""A function without its custom rules: what autodiff of ``f``'s own computation gives.

``jax.custom_jvp`` and ``jax.custom_vjp`` functions carry two things: a primal computation (the
body, which is what evaluating them runs) and a derivative rule that JAX's autodiff uses in
place of differentiating the body.  ``rule_free`` returns ``f`` with every custom call of
the user's replaced by its body, by evaluating ``f``'s jaxpr with the one walker
(``mcjax._program._walk.Interpreter``, whose default for a custom call is to walk its
body): ``jax.jacfwd`` and ``jax.jacrev`` of the result differentiate the body and never see
a rule.  JAX's own custom rules (``jax.nn.relu``, ``jnp.logaddexp``, ...) are kept: they
exist because autodiff of their bodies rounds badly or divides by zero, and they are not
under test.  Custom calls inside ``lax.cond`` branches or ``lax.scan``/``while_loop`` bodies
are replaced too (the branch or body is rebuilt without them).
"""

from __future__ import annotations

import contextlib
import os
from typing import NamedTuple

import jax
import numpy as np
from jax.extend import core

from mcjax._program._walk import (
    CUSTOM_RULES,
    Interpreter,
    bind,
    callee_name,
    equations,
    from_jax,
    user_place,
)


class CustomRule(NamedTuple):
    """A user's custom-rule call: the function's name, ``"custom_jvp"`` or ``"custom_vjp"``,
    and where the rule's own functions are written (``softplus_jvp (losses.py:12)``)."""

    name: str
    kind: str
    functions: tuple[str, ...]
    where: str = ""  # the user's call of it: `mysin(x)` (model.py:8)

    def words(self) -> str:
        return f"the {self.kind} rule of {self.name}"


def _written(fun) -> str | None:
    """``bwd (losses.py:17)`` from a rule function's debug info, if JAX recorded it."""
    info = getattr(getattr(fun, "debug_info", None), "func_src_info", None)
    if not info or " at " not in info:
        return None
    name, _, place = info.partition(" at ")
    return f"{name} ({os.path.basename(place)})"


def user_rules(jaxpr: core.Jaxpr) -> list[CustomRule]:
    """The user's custom-rule calls in ``jaxpr`` (and its sub-jaxprs), outermost first, each
    once."""
    found = []
    for eqn in equations(jaxpr):
        if eqn.primitive.name in CUSTOM_RULES and not from_jax(eqn):
            kind = "custom_jvp" if eqn.primitive.name == "custom_jvp_call" else "custom_vjp"
            functions = tuple(filter(None, (_written(eqn.params.get(k)) for k in (
                "jvp_jaxpr_fun", "fwd_jaxpr_thunk", "bwd"))))
            place = user_place(eqn)
            found.append(CustomRule(callee_name(eqn), kind, functions,
                                    "" if place is None else str(place)))
    return list(dict.fromkeys(found))


def _holds_user_rules(jaxpr: core.Jaxpr) -> bool:
    return bool(user_rules(jaxpr))


class _RuleFree(Interpreter):
    """Evaluates a jaxpr with the user's custom calls replaced by their bodies."""

    def primitive(self, eqn, ins: list) -> list:
        params = _rule_free_params(eqn.params)
        with _users_line(eqn):
            return bind(eqn if params is None else eqn.replace(params=params), ins)

    def custom(self, eqn, ins: list) -> list:
        if from_jax(eqn):  # JAX's own rule: trusted, and its body may not differentiate well
            with _users_line(eqn):
                return bind(eqn, ins)
        return self.inline(eqn, ins)


def _users_line(eqn):
    """The equation re-traced with the user's line it was first traced from (as JAX's own
    ``eval_jaxpr`` does), so that a diagnosis names the user's code, not this walker."""
    try:
        from jax._src import source_info_util  # the one place JAX exposes it

        return source_info_util.user_context(eqn.source_info.traceback,
                                             name_stack=eqn.source_info.name_stack)
    except Exception:  # noqa: BLE001 - a private API: without it, lines point here
        return contextlib.nullcontext()


def _struct(var) -> jax.ShapeDtypeStruct:
    aval = var.aval
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=getattr(aval, "weak_type", False))


def _rule_free_closed(closed: core.ClosedJaxpr) -> core.ClosedJaxpr:
    """``closed`` rebuilt without the user's custom calls (same inputs and outputs)."""
    def run(*args):
        return _RuleFree().run(closed.jaxpr, closed.consts, list(args))

    return jax.make_jaxpr(run)(*[_struct(v) for v in closed.jaxpr.invars])


def _rule_free_params(params: dict) -> dict | None:
    """``params`` with every sub-jaxpr that calls a user's rule rebuilt without it, or None
    when there is none (a loop's body, a branch of a ``cond``)."""
    changed = {}
    for key, value in params.items():
        items = value if isinstance(value, (tuple, list)) else (value,)
        if not any(isinstance(v, core.ClosedJaxpr) and _holds_user_rules(v.jaxpr) for v in items):
            continue
        new = [_rule_free_closed(v) if isinstance(v, core.ClosedJaxpr) else v for v in items]
        changed[key] = type(value)(new) if isinstance(value, (tuple, list)) else new[0]
    return {**params, **changed} if changed else None


def _traced_leaf(leaf) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


def rule_free(f, name: str | None = None):
    """``f`` with the user's custom rules taken out: the same values, and the derivatives of its
    own computation.  Arguments that are not arrays (flags, strings, Python numbers) are
    closed over, as ``mcjax.check`` does with them."""

    def free(*args):
        leaves, treedef = jax.tree_util.tree_flatten(args)
        dynamic = [i for i, leaf in enumerate(leaves) if _traced_leaf(leaf)]

        def flat(*values):
            rebuilt = list(leaves)
            for i, v in zip(dynamic, values):
                rebuilt[i] = v
            return f(*jax.tree_util.tree_unflatten(treedef, rebuilt))

        values = [leaves[i] for i in dynamic]
        closed, shape = jax.make_jaxpr(flat, return_shape=True)(*values)
        out = _RuleFree().run(closed.jaxpr, closed.consts, values)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), out)

    free.__name__ = free.__qualname__ = name or f"{getattr(f, '__name__', 'f')} without its rules"
    return free
