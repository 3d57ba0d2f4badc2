r"""Special functions (``jax.scipy.special``'s primitives): diagonal Jacobians too.

Their derivatives are written as a table of derivatives writes them
($\operatorname{erf}'(x) = \frac{2}{\sqrt\pi} e^{-x^2}$, $\ln\Gamma'(x) = \psi(x)$, ...); the
numbers are JAX's own (``jax_partial``), whose edge
cases (``bessel_i1e`` near 0, the incomplete gamma function's series) a closed form would miss.
A partial JAX does not define (``polygamma`` with respect to its order, the incomplete beta
function with respect to ``a`` and ``b``) is JAX's error, as in ``jax.jacfwd``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from mcjax._jacobian import _expr as E
from mcjax._jacobian import _sym as S
from mcjax._primitives._elementwise import jax_partial, local, unary
from mcjax._primitives._table import Eqn, Slips, register

FAMILY = "special functions"


def _call(name, *args):
    return E.call(name, *args)


unary("erf", lambda x, y: (2 / math.sqrt(math.pi)) * S.exp(-(x**2)), family=FAMILY,
      slips=Slips(value="erf", neighbour=("exp(-z^2) for 2/sqrt(pi) exp(-z^2): the 2/sqrt(pi) "
                                          "left out", lambda x, y, p: jnp.exp(-(x * x)))))
unary("erfc", lambda x, y: (-2 / math.sqrt(math.pi)) * S.exp(-(x**2)), family=FAMILY)
unary("erf_inv", lambda x, y, e: jax_partial(e, 0, E.mul(E.num(math.sqrt(math.pi) / 2), _call(
    "exp", E.power(y.expr, 2)))), family=FAMILY)
unary("lgamma", lambda x, y, e: jax_partial(e, 0, _call("digamma", x.expr)), family=FAMILY)
unary("digamma", lambda x, y, e: jax_partial(e, 0, _call("polygamma", E.ONE, x.expr)),
      family=FAMILY)
unary("bessel_i0e", lambda x, y, e: jax_partial(e, 0, E.sub(_call("i1e", x.expr), E.mul(
    _call("sign", x.expr), y.expr))), family=FAMILY, expr=lambda a, s, p: _call("i0e", *a))
unary("bessel_i1e", lambda x, y, e: jax_partial(e, 0, _call("i1e'", x.expr)), family=FAMILY,
      expr=lambda a, s, p: _call("i1e", *a))


def _partials(name: str, written) -> object:
    """A rule for an element-wise special function of several operands: JAX's partials,
    ``written[k](operand expressions, output expression)`` for operand ``k``."""

    def rule(e: Eqn) -> dict:
        exprs = tuple(op.expr for op in e.ins)
        return {k: local(e, k, jax_partial(e, k, written[k](exprs, e.out.expr)))
                for k in e.active}

    return rule


def _d(name: str, wrt: str):
    """``∂name/∂wrt(args)``: a partial with no shorter name."""
    return lambda a, out: _call(f"∂{name}/∂{wrt}", *a)


register("polygamma", FAMILY, jacobian=_partials("polygamma", {
    0: _d("polygamma", "m"), 1: lambda a, out: _call("polygamma", E.add(a[0], E.ONE), a[1])}),
    expr=lambda a, s, p: _call("polygamma", *a))
register("igamma", FAMILY, jacobian=_partials("igamma", {
    0: _d("igamma", "a"),
    1: lambda a, out: E.div(E.mul(_call("exp", E.neg(a[1])), E.pow_expr(a[1], E.sub(
        a[0], E.ONE))), _call("gamma", a[0]))}),
    expr=lambda a, s, p: _call("gammainc", *a))
register("igammac", FAMILY, jacobian=_partials("igammac", {
    0: _d("igammac", "a"),
    1: lambda a, out: E.neg(E.div(E.mul(_call("exp", E.neg(a[1])), E.pow_expr(a[1], E.sub(
        a[0], E.ONE))), _call("gamma", a[0])))}),
    expr=lambda a, s, p: _call("gammaincc", *a))
register("regularized_incomplete_beta", FAMILY, jacobian=_partials("betainc", {
    0: _d("betainc", "a"), 1: _d("betainc", "b"),
    2: lambda a, out: E.div(E.mul(E.pow_expr(a[2], E.sub(a[0], E.ONE)), E.pow_expr(
        E.sub(E.ONE, a[2]), E.sub(a[1], E.ONE))), _call("B", a[0], a[1]))}),
    expr=lambda a, s, p: _call("betainc", *a))
register("igamma_grad_a", FAMILY, jacobian=_partials("igamma_grad_a", {
    0: _d("igamma_grad_a", "a"), 1: _d("igamma_grad_a", "x")}))
register("random_gamma_grad", FAMILY, jacobian=_partials("random_gamma_grad", {
    0: _d("random_gamma_grad", "a"), 1: _d("random_gamma_grad", "x")}))
