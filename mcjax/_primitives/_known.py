r"""Functions known by name: ``custom_jvp`` functions whose rule a person writes directly.

``jax.nn.relu`` and ``jnp.logaddexp`` (so ``jax.nn.softplus``) are ``custom_jvp`` functions:
their derivative is their rule, not their body's.  Here their rule is written as a structured
Jacobian that follows JAX's own at the kink (``relu'(0) = 0``).  Any other custom rule is
JAX's (the derivation's fallback: ``jax.linearize`` of the call, which runs the rule).
"""

from __future__ import annotations

import jax.numpy as jnp

from mcjax._jacobian import _expr as E
from mcjax._jacobian import _sym as S
from mcjax._jacobian._sym import Sym
from mcjax._primitives._elementwise import ind, local
from mcjax._primitives._table import Eqn, register

FAMILY = "known functions"

register("custom_jvp_call:relu", FAMILY,  # jax.nn.relu: relu'(0) = 0, unlike max(x, 0)
         jacobian=lambda e: {0: local(e, 0, ind(e.ins[0].sym > 0, e.out.sym))},
         expr=lambda a, s, p: E.call("relu", a[0]), hint="a")  # its gate: max in its body


def _logaddexp_partial(x: Sym, y: Sym, out: Sym) -> Sym:
    """JAX's $e^{x - \\operatorname{logaddexp}(x, y)}$, which is $\\sigma(x - y)$."""
    return S.labelled(jnp.exp(x.value - out.value), E.call("sigmoid", E.sub(x.expr, y.expr)))


def _logaddexp_expr(a, shape, params):
    if a[1].op == "num" and a[1].param == 0:  # jax.nn.softplus
        return E.Expr("call", (a[0],), "softplus", shape, False, "a")
    return E.call("logaddexp", *a)


def _logaddexp(e: Eqn) -> dict:
    x, y, out = e.ins[0].sym, e.ins[1].sym, e.out.sym
    partial = {0: _logaddexp_partial(x, y, out), 1: _logaddexp_partial(y, x, out)}
    return {k: local(e, k, partial[k]) for k in e.active}


register("custom_jvp_call:logaddexp", FAMILY, jacobian=_logaddexp, expr=_logaddexp_expr)
