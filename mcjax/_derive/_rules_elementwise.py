r"""Element-wise primitives: their Jacobians are diagonal (Parr & Howard §4.2, §8.2).

Each rule is one line: the scalar derivative, written on :class:`~mcjax._jacobian._sym.Sym`
values ``x`` (the operand) and ``y`` (the output), as in a table of derivatives.  An operand
that is broadcast (a scalar, or an axis of length 1) gets the diagonal times the expansion:
$\partial(\mathbf{x} + z)/\partial z = \mathbf{1}$ (§4.3).

Kinks follow JAX's own derivative (:mod:`mcjax._core._conventions`): ``max`` and ``min`` give 1/2
to each side of a tie, ``abs'(0) = 1``, ``sign``, ``floor`` and comparisons have derivative 0.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from mcjax._core._conventions import ABS_GRAD_AT_ZERO, MAX_TIE_SHARE
from mcjax._derive._rules import Eqn, register
from mcjax._jacobian import _build as B
from mcjax._jacobian import _expr as E
from mcjax._jacobian import _sym as S
from mcjax._jacobian._algebra import compose
from mcjax._jacobian._sym import Sym, lift


def local(e: Eqn, k: int, d) -> object:
    """$\\partial y / \\partial x_k$ of an element-wise operation with partial derivative ``d``,
    times the expansion of ``x_k`` to the output's shape when it is broadcast."""
    shape, dtype = e.out.shape, e.out.dtype
    J = B.diagonal(lift(d), shape, dtype)
    x_shape = e.ins[k].shape
    if x_shape != shape:
        lead = len(shape) - len(x_shape)
        J = compose(J, B.expand(shape, tuple(range(lead, len(shape))), x_shape, dtype))
    return J


def unary(name: str, derivative, expr=None, hint: str = "") -> None:
    """Register an element-wise function of one operand with derivative ``derivative(x, y)``."""

    def rule(e: Eqn) -> dict:
        return {0: local(e, 0, derivative(e.ins[0].sym, e.out.sym))}

    build = expr or (lambda a, shape, params: E.call(name, *a))
    register(name, rule, build, hint)


def binary(name: str, dx, dy, expr, hint: str = "") -> None:
    """Register an element-wise function of two operands with partials ``dx(x, y, out)`` and
    ``dy(x, y, out)``."""

    def rule(e: Eqn) -> dict:
        x, y, out = e.ins[0].sym, e.ins[1].sym, e.out.sym
        return {k: local(e, k, (dx, dy)[k](x, y, out)) for k in e.active}

    register(name, rule, expr, hint)


def constant(name: str, expr=None) -> None:
    """A piecewise-constant primitive (``sign``, ``floor``): derivative 0, as JAX's."""
    register(name, lambda e: {}, expr)


def ind(condition: Sym, like: Sym) -> Sym:
    """$\\mathbb{1}[c]$ in ``like``'s dtype."""
    return S.indicator(condition, jnp.result_type(like.value))


# -- one operand ---------------------------------------------------------------------------------
unary("neg", lambda x, y: -1, lambda a, s, p: E.neg(a[0]))
unary("exp", lambda x, y: y)
unary("exp2", lambda x, y: y * math.log(2.0))
unary("log", lambda x, y: 1 / x)
unary("log1p", lambda x, y: 1 / (1 + x))
unary("expm1", lambda x, y: S.labelled(y.value + 1, E.call("exp", x.expr)))
unary("sin", lambda x, y: S.cos(x))
unary("cos", lambda x, y: -S.sin(x))
unary("tan", lambda x, y: 1 + y**2)
unary("sinh", lambda x, y: S.cosh(x))
unary("cosh", lambda x, y: S.sinh(x))
unary("tanh", lambda x, y: 1 - y**2, hint="a")
unary("atan", lambda x, y: 1 / (1 + x**2))
unary("asin", lambda x, y: 1 / S.sqrt(1 - x**2))
unary("acos", lambda x, y: -1 / S.sqrt(1 - x**2))
unary("asinh", lambda x, y: 1 / S.sqrt(x**2 + 1))
unary("erf", lambda x, y: (2 / math.sqrt(math.pi)) * S.exp(-(x**2)))
unary("logistic", lambda x, y: y * (1 - y), lambda a, s, p: E.call("sigmoid", a[0]), hint="a")
unary("sqrt", lambda x, y: 1 / (2 * y))
unary("rsqrt", lambda x, y: S.labelled(-0.5 * y.value / x.value, E.mul(E.num(-0.5),
                                                                         E.power(x.expr, -1.5))),
      lambda a, s, p: E.power(a[0], -0.5))
unary("cbrt", lambda x, y: S.labelled(y.value / (3 * x.value), E.mul(E.num(1 / 3),
                                                                       E.power(x.expr, -2 / 3))),
      lambda a, s, p: E.power(a[0], 1 / 3))
unary("square", lambda x, y: 2 * x, lambda a, s, p: E.power(a[0], 2))
register("integer_pow",
         lambda e: {0: local(e, 0, _integer_pow(e.ins[0].sym, e.params["y"]))},
         lambda a, s, p: E.power(a[0], p["y"]))


def _integer_pow(x: Sym, n: int):
    if n == 0:
        return 0
    return n * x ** (n - 1) if n != 1 else 1


unary("abs", lambda x, y: S.labelled(jnp.where(x.value == 0, ABS_GRAD_AT_ZERO, jnp.sign(
    x.value)).astype(x.value.dtype),
                                     E.call("sign", x.expr)))
for _name in ("sign", "floor", "ceil", "round", "is_finite", "stop_gradient"):
    constant(_name)
for _name in ("copy", "copy_p", "reduce_precision"):
    unary(_name, lambda x, y: 1, lambda a, s, p: a[0])


def _convert_expr(a, shape, params):
    if a[0].op in ("cmp", "not"):  # a boolean made a number: an indicator
        return E.indicator(a[0])
    return a[0]


def _convert(e: Eqn) -> dict:
    if not jnp.issubdtype(e.out.dtype, jnp.inexact):
        return {}  # to an integer or a boolean: no derivative
    return {0: B.identity(e.out.shape, e.out.dtype)}


register("convert_element_type", _convert, _convert_expr)


# -- two operands ------------------------------------------------------------------------------
def _affine_hint(expr: E.Expr) -> E.Expr:
    """``W x + b`` (a matrix product plus something) is named ``z``, as in the paper."""
    if any(a.op in ("matmul", "dot") for a in expr.args):
        return E.Expr(expr.op, expr.args, expr.param, expr.shape, expr.var, "z")
    return expr


binary("add", lambda x, y, o: 1, lambda x, y, o: 1,
       lambda a, s, p: _affine_hint(E.add(*a)))
binary("sub", lambda x, y, o: 1, lambda x, y, o: -1,
       lambda a, s, p: _affine_hint(E.sub(*a)))
binary("mul", lambda x, y, o: y, lambda x, y, o: x, lambda a, s, p: E.mul(*a))
binary("div", lambda x, y, o: 1 / y, lambda x, y, o: -x / y**2, lambda a, s, p: E.div(*a))


def _wins(a: Sym, b: Sym, tie: Sym) -> Sym:
    """$\\mathbb{1}[a > b] + \\frac12 \\mathbb{1}[x = y]$: JAX's derivative of max at a tie."""
    return ind(a > b, a) + MAX_TIE_SHARE * ind(tie, a)


def _max_expr(name):
    bound = float("-inf") if name == "max" else float("inf")

    def build(a, shape, params):
        kept = [x for x in a if not (x.op == "num" and x.param == bound)]
        if len(kept) == 1:  # max(-inf, m), as jax.nn.softmax writes it, is m
            return E.reshaped(kept[0], shape)
        expr = E.call(name, *a)
        if any(x.op == "num" for x in a):  # max(x, 0): an activation
            return E.Expr(expr.op, expr.args, expr.param, expr.shape, False, "a")
        return expr

    return build


binary("max", lambda x, y, o: _wins(x, y, x.equals(y)), lambda x, y, o: _wins(y, x, x.equals(y)),
       _max_expr("max"))
def _loses(a: Sym, b: Sym, tie: Sym) -> Sym:
    r"""$\mathbb{1}[a < b] + \frac12 \mathbb{1}[x = y]$: JAX's derivative of min at a tie."""
    return ind(a < b, a) + MAX_TIE_SHARE * ind(tie, a)


binary("min", lambda x, y, o: _loses(x, y, x.equals(y)), lambda x, y, o: _loses(y, x, x.equals(y)),
       _max_expr("min"))


def _pow_x(x: Sym, y: Sym, out: Sym) -> Sym:
    """JAX's: $y x^{y-1}$, and 0 where $y = 0$."""
    value = jnp.where(y.value == 0, 0, y.value * x.value ** (y.value - 1))
    return S.labelled(value.astype(jnp.result_type(out.value)),
                      E.mul(y.expr, E.pow_expr(x.expr, E.sub(y.expr, E.ONE))))


def _pow_y(x: Sym, y: Sym, out: Sym) -> Sym:
    """JAX's: $\\ln(x)\\,x^y$, with $\\ln$ of 0 read as 0."""
    safe = jnp.where(x.value == 0, 1, x.value)
    return S.labelled(jnp.log(safe) * out.value, E.mul(E.call("log", x.expr), out.expr))


binary("pow", _pow_x, _pow_y, lambda a, s, p: E.pow_expr(*a))


# -- comparisons and selection ------------------------------------------------------------------
_COMPARE = {"gt": ">", "lt": "<", "ge": ">=", "le": "<=", "eq": "==", "ne": "!="}
for _name, _op in _COMPARE.items():
    constant(_name, lambda a, s, p, op=_op: E.compare(op, *a))
constant("not", lambda a, s, p: E.logical_not(a[0]))


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


register("select_n", _select_n, _select_expr)


# -- custom_jvp functions known by name: JAX's own derivative, structured --------------------------
register("custom_jvp_call:relu",  # jax.nn.relu: relu'(0) = 0, unlike max(x, 0)
         lambda e: {0: local(e, 0, ind(e.ins[0].sym > 0, e.out.sym))},
         lambda a, s, p: E.call("relu", a[0]), hint="a")


def _logaddexp_partial(x: Sym, y: Sym, out: Sym) -> Sym:
    """JAX's $e^{x - \\operatorname{logaddexp}(x, y)}$, which is $\\sigma(x - y)$."""
    return S.labelled(jnp.exp(x.value - out.value), E.call("sigmoid", E.sub(x.expr, y.expr)))


def _logaddexp_expr(a, shape, params):
    if a[1].op == "num" and a[1].param == 0:  # jax.nn.softplus
        return E.Expr("call", (a[0],), "softplus", shape, False, "a")
    return E.call("logaddexp", *a)


binary("custom_jvp_call:logaddexp", _logaddexp_partial,
       lambda x, y, o: _logaddexp_partial(y, x, o), _logaddexp_expr)
