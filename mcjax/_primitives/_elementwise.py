r"""Element-wise primitives: their Jacobians are diagonal (Parr & Howard §4.2, §8.2).

Each rule is one line: the scalar derivative, written on ``Sym``
values ``x`` (the operand) and ``y`` (the output), as in a table of derivatives.  An operand
that is broadcast (a scalar, or an axis of length 1) gets the diagonal times the expansion:
$\partial(\mathbf{x} + z)/\partial z = \mathbf{1}$ (§4.3).  Where JAX's own derivative has
edge cases a closed form would miss, the diagonal is JAX's (``jax_partial``), written as
the closed form.

Kinks follow JAX's own derivative (``mcjax._core._conventions``): ``max`` and ``min`` give
1/2 to each side of a tie, ``abs'(0) = 1``.  For the checker, ``max``, ``min``, ``clamp`` and
``abs`` are kinks (their rules read which branch a direction takes); for the diagnosis, every
sum, product and quotient has two terms that can be dropped or negated, every function whose
derivative differs from its value can have the one written for the other, and ``max(z, 0)`` is
a gate that can be forgotten.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from mcjax._core._conventions import ABS_GRAD_AT_ZERO, MAX_TIE_SHARE
from mcjax._jacobian import _build as B
from mcjax._jacobian import _expr as E
from mcjax._jacobian import _sym as S
from mcjax._jacobian._algebra import compose
from mcjax._jacobian._sym import Sym, lift
from mcjax._primitives._switch import (
    Stand,
    at_switch,
    bind_values,
    broadcast,
    zero_if_none,
)
from mcjax._primitives._table import Eqn, Slips, V, register

FAMILY = "element-wise"


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


def jax_partial(e: Eqn, k: int, expr: E.Expr) -> Sym:
    """$\\partial y / \\partial x_k$ element by element as JAX's own JVP computes it (its edge
    cases included), written as ``expr``."""
    from mcjax._primitives._linear import jvp_along

    return S.labelled(jvp_along(e, k, jnp.ones_like(e.ins[k].value))[0], expr)


def unary(name: str, derivative, expr=None, hint: str = "", family: str = FAMILY, **knowledge):
    """Register an element-wise function of one operand with derivative ``derivative(x, y)``
    (or ``derivative(x, y, e)``, which may ask JAX for the value)."""

    def rule(e: Eqn) -> dict:
        x, y = e.ins[0].sym, e.out.sym
        d = derivative(x, y, e) if derivative.__code__.co_argcount == 3 else derivative(x, y)
        return {0: local(e, 0, d)}

    build = expr or (lambda a, shape, params: E.call(name, *a))
    register(name, family, jacobian=rule, expr=build, hint=hint, **knowledge)


def binary(name: str, dx, dy, expr, hint: str = "", family: str = FAMILY, **knowledge):
    """Register an element-wise function of two operands with partials ``dx(x, y, out, e)``
    and ``dy(x, y, out, e)``."""

    def rule(e: Eqn) -> dict:
        x, y, out = e.ins[0].sym, e.ins[1].sym, e.out.sym
        return {k: local(e, k, (dx, dy)[k](x, y, out, e)) for k in e.active}

    register(name, family, jacobian=rule, expr=expr, hint=hint, **knowledge)


def ind(condition: Sym, like: Sym) -> Sym:
    """$\\mathbb{1}[c]$ in ``like``'s dtype."""
    return S.indicator(condition, jnp.result_type(like.value))


def _value(name: str) -> Slips:
    """A function whose derivative differs from its value: one can be written for the other."""
    return Slips(value=name)


# -- one operand ---------------------------------------------------------------------------------
unary("neg", lambda x, y: -1, lambda a, s, p: E.neg(a[0]), rounding="exact")
unary("exp", lambda x, y: y,
      slips=Slips(neighbour=("exp(z) z for exp(z)", lambda x, y, p: y * x)))
unary("exp2", lambda x, y: y * math.log(2.0))
unary("log", lambda x, y: 1 / x,
      slips=Slips(value="log", neighbour=("1/z^2 for 1/z", lambda x, y, p: 1 / x**2)))
unary("log1p", lambda x, y: 1 / (1 + x), slips=_value("log1p"))
unary("expm1", lambda x, y: S.labelled(y.value + 1, E.call("exp", x.expr)))
unary("sin", lambda x, y: S.cos(x), slips=_value("sin"))
unary("cos", lambda x, y: -S.sin(x), slips=_value("cos"))
unary("tan", lambda x, y: 1 + y**2)
unary("sinh", lambda x, y: S.cosh(x), slips=_value("sinh"))
unary("cosh", lambda x, y: S.sinh(x), slips=_value("cosh"))
unary("tanh", lambda x, y: 1 - y**2, hint="a",
      slips=Slips(value="tanh", neighbour=("1 - tanh for 1 - tanh^2", lambda x, y, p: 1 - y)))
unary("atan", lambda x, y: 1 / (1 + x**2), slips=_value("atan"))
unary("asin", lambda x, y: 1 / S.sqrt(1 - x**2), slips=_value("asin"))
unary("acos", lambda x, y: -1 / S.sqrt(1 - x**2), slips=_value("acos"))
unary("asinh", lambda x, y: 1 / S.sqrt(x**2 + 1))
unary("acosh", lambda x, y, e: jax_partial(e, 0, E.div(E.ONE, E.call(
    "sqrt", E.sub(E.power(x.expr, 2), E.ONE)))))
unary("atanh", lambda x, y: 1 / (1 - x**2))
unary("logistic", lambda x, y: y * (1 - y), lambda a, s, p: E.call("sigmoid", a[0]), hint="a",
      slips=Slips(value="sigmoid", neighbour=("1 - sigma for sigma (1 - sigma)",
                                              lambda x, y, p: 1 - y)))
unary("sqrt", lambda x, y: 1 / (2 * y),
      slips=Slips(value="sqrt", neighbour=("1/sqrt(z) for 1/(2 sqrt(z)): the 1/2 left out",
                                           lambda x, y, p: 1 / y)))
unary("rsqrt", lambda x, y: S.labelled(-0.5 * y.value / x.value, E.mul(E.num(-0.5),
                                                                         E.power(x.expr, -1.5))),
      lambda a, s, p: E.power(a[0], -0.5), slips=_value("rsqrt"))
unary("cbrt", lambda x, y: S.labelled(y.value / (3 * x.value), E.mul(E.num(1 / 3),
                                                                       E.power(x.expr, -2 / 3))),
      lambda a, s, p: E.power(a[0], 1 / 3))
unary("square", lambda x, y: 2 * x, lambda a, s, p: E.power(a[0], 2),
      slips=Slips(neighbour=("z for 2 z: the exponent's 2 left out", lambda x, y, p: x)))
register("integer_pow", FAMILY,
         jacobian=lambda e: {0: local(e, 0, _integer_pow(e.ins[0].sym, e.params["y"]))},
         expr=lambda a, s, p: E.power(a[0], p["y"]),
         slips=Slips(neighbour=("z^(n-1) for n z^(n-1): the exponent's factor left out",
                                lambda x, y, p: x ** (p["y"] - 1))))


def _integer_pow(x: Sym, n: int):
    if n == 0:
        return 0
    return n * x ** (n - 1) if n != 1 else 1


for _name in ("copy", "copy_p", "reduce_precision", "optimization_barrier"):
    # optimization_barrier takes several operands: one identity each, below
    if _name != "optimization_barrier":
        unary(_name, lambda x, y: 1, lambda a, s, p: a[0], behaviour="identity", rounding="exact")


def _barrier(e: Eqn):
    return [{k: B.identity(out.shape, out.dtype)} if k in e.active and out is not None else {}
            for k, out in enumerate(e.outs)]


register("optimization_barrier", FAMILY, jacobian=_barrier, behaviour="identity",
         rounding="exact")


# -- abs: a kink at 0 ------------------------------------------------------------------------------
def _abs_switch(eqn, ins, directional):
    (x,) = ins
    p = jnp.abs(x.p)
    side = jnp.sign(x.p)
    if not directional or x.t is None:
        return [V(p, x.e)], [side]
    t = jnp.where(at_switch(x), jnp.abs(x.t), side * x.t)
    return [V(p, x.e, t)], [side]


unary("abs", lambda x, y: S.labelled(jnp.where(x.value == 0, ABS_GRAD_AT_ZERO, jnp.sign(
    x.value)).astype(x.value.dtype), E.call("sign", x.expr)),
      behaviour="kink", switch=_abs_switch, rounding="exact", slips=Slips(sign=True))


# -- two operands ------------------------------------------------------------------------------
def _affine_hint(expr: E.Expr) -> E.Expr:
    """``W x + b`` (a matrix product plus something) is named ``z``, as in the paper."""
    if any(a.op in ("matmul", "dot") for a in expr.args):
        return E.Expr(expr.op, expr.args, expr.param, expr.shape, expr.var, "z")
    return expr


_SUMMANDS = ("the first summand", "the second summand")
binary("add", lambda x, y, o, e: 1, lambda x, y, o, e: 1,
       lambda a, s, p: _affine_hint(E.add(*a)), slips=Slips(terms=("sum", _SUMMANDS)))
binary("add_any", lambda x, y, o, e: 1, lambda x, y, o, e: 1,
       lambda a, s, p: _affine_hint(E.add(*a)), slips=Slips(terms=("sum", _SUMMANDS)))
binary("sub", lambda x, y, o, e: 1, lambda x, y, o, e: -1,
       lambda a, s, p: _affine_hint(E.sub(*a)),
       slips=Slips(terms=("difference", ("the first term", "the subtracted term"))))
binary("mul", lambda x, y, o, e: y, lambda x, y, o, e: x, lambda a, s, p: E.mul(*a),
       rounding="bilinear",
       slips=Slips(terms=("product", ("the first factor", "the second factor")), chain=True))
binary("div", lambda x, y, o, e: 1 / y,
       lambda x, y, o, e: S.labelled((-x / y**2).value, E.neg(E.div(o.expr, y.expr))),  # -(x/y)/y
       lambda a, s, p: E.div(*a),
       slips=Slips(terms=("quotient", ("the numerator", "the denominator")), chain=True,
                   count=True))
binary("atan2", lambda x, y, o, e: y / (x**2 + y**2), lambda x, y, o, e: -x / (x**2 + y**2),
       lambda a, s, p: E.call("atan2", *a))


def _wins(a: Sym, b: Sym, tie: Sym) -> Sym:
    """$\\mathbb{1}[a > b] + \\frac12 \\mathbb{1}[x = y]$: JAX's derivative of max at a tie."""
    return ind(a > b, a) + MAX_TIE_SHARE * ind(tie, a)


def _loses(a: Sym, b: Sym, tie: Sym) -> Sym:
    r"""$\mathbb{1}[a < b] + \frac12 \mathbb{1}[x = y]$: JAX's derivative of min at a tie."""
    return ind(a < b, a) + MAX_TIE_SHARE * ind(tie, a)


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


def max_min_switch(eqn, ins, directional):
    """``max(a, b)`` (``min``): the side is ``a > b``; at a tie the direction decides, the
    directional derivative is ``max(a', b')``."""
    bigger = eqn.primitive.name == "max"
    p = bind_values(eqn, ins[0].p, ins[1].p)[0]
    a, b = (broadcast(v, p.shape) for v in ins)
    e = None if a.e is None and b.e is None else jnp.maximum(
        zero_if_none(a.e, p), zero_if_none(b.e, p))
    side = a.p > b.p if bigger else a.p < b.p
    if not directional or (a.t is None and b.t is None):
        return [V(p, e)], [side]
    ta, tb = zero_if_none(a.t, p), zero_if_none(b.t, p)
    tied = jnp.maximum(ta, tb) if bigger else jnp.minimum(ta, tb)
    t = jnp.where(at_switch(a, b), tied, jnp.where(side, ta, tb))
    return [V(p, e, t)], [side]


def through(gated, through):
    """Value of ``gated``, derivative of ``through`` (a gate made straight-through)."""
    return through + lax.stop_gradient(gated - through)


def _ungate_max(apply, operands, dependent):
    """``max(z, 0)`` with one operand depending on the argument: straight through to it."""
    if sum(dependent) != 1:
        return None
    return [through(apply(operands)[0], operands[dependent.index(True)])]


_GATE = Slips(gate=_ungate_max, branches=(0, 1))
binary("max", lambda x, y, o, e: _wins(x, y, x.equals(y)),
       lambda x, y, o, e: _wins(y, x, x.equals(y)), _max_expr("max"),
       behaviour="kink", switch=max_min_switch, rounding="exact", slips=_GATE)
binary("min", lambda x, y, o, e: _loses(x, y, x.equals(y)),
       lambda x, y, o, e: _loses(y, x, x.equals(y)), _max_expr("min"),
       behaviour="kink", switch=max_min_switch, rounding="exact", slips=_GATE)


def _clamp(e: Eqn) -> dict:
    """$\\operatorname{clamp}(l, x, h)$, as JAX differentiates it: 1 to ``x`` strictly
    inside, to ``l`` where ``l > x`` (and ``l < h``), to ``h`` where ``h < x``; nothing at a tie."""
    lo, x, hi = (op.sym for op in e.ins)
    partials = {0: ind(lo > x, x) * ind(lo < hi, x), 1: ind(x > lo, x) * ind(x < hi, x),
                2: ind(hi < x, x)}
    return {k: local(e, k, partials[k]) for k in e.active}


def _clamp_switch(eqn, ins, directional):
    lo, x, hi = ins
    outs, sides = max_min_switch(Stand(lax.max_p), [x, lo], directional)
    outs2, sides2 = max_min_switch(Stand(lax.min_p), [outs[0], hi], directional)
    return outs2, sides + sides2


register("clamp", FAMILY, jacobian=_clamp, expr=lambda a, s, p: E.call("clip", a[1], a[0], a[2]),
         behaviour="kink", switch=_clamp_switch, rounding="exact", slips=Slips(branches=(1,)))


def _pow_x(x: Sym, y: Sym, out: Sym, e) -> Sym:
    """JAX's: $y x^{y-1}$, and 0 where $y = 0$."""
    exponent = jnp.asarray(y.value)  # a literal's NumPy scalar: NumPy 1.x widens y - 1 to float64
    value = jnp.where(exponent == 0, 0, exponent * x.value ** (exponent - 1))
    return S.labelled(value.astype(jnp.result_type(out.value)),
                      E.mul(y.expr, E.pow_expr(x.expr, E.sub(y.expr, E.ONE))))


def _pow_y(x: Sym, y: Sym, out: Sym, e) -> Sym:
    """JAX's: $\\ln(x)\\,x^y$, with $\\ln$ of 0 read as 0."""
    safe = jnp.where(x.value == 0, 1, x.value)
    return S.labelled(jnp.log(safe) * out.value, E.mul(E.call("log", x.expr), out.expr))


binary("pow", _pow_x, _pow_y, lambda a, s, p: E.pow_expr(*a),
       slips=Slips(terms=("power", ("the base", "the exponent"))))


def _convert_expr(a, shape, params):
    if a[0].op in ("cmp", "not"):  # a boolean made a number: an indicator
        return E.indicator(a[0])
    return a[0]


def _convert(e: Eqn) -> dict | list | None:
    if not jnp.issubdtype(e.out.dtype, jnp.inexact):
        return {}  # to an integer or a boolean: no derivative
    if (jnp.issubdtype(e.out.dtype, jnp.complexfloating)
            and not jnp.issubdtype(jnp.result_type(e.ins[0].value), jnp.complexfloating)):
        # real to complex (an FFT's input): the cast stays in the chain, or the complex
        # operations after it would be applied to real tangents
        from mcjax._primitives._linear import linear

        return linear("complex")(e)
    return {0: B.identity(e.out.shape, e.out.dtype)}


_convert.real_linear = True  # an identity or a cast to complex: right on complex values too
register("convert_element_type", FAMILY, jacobian=_convert, expr=_convert_expr,
         behaviour="identity", rounding="exact")


# -- complex parts: linear over the reals ---------------------------------------------------------
def _complex_part(written: str):
    from mcjax._primitives._linear import linear

    return linear(written, affine=(0, 1) if written == "complex" else ())


for _name in ("real", "imag", "conj", "complex"):
    register(_name, FAMILY, jacobian=_complex_part(_name), rounding="exact",
             expr=lambda a, s, p, name=_name: E.call(name, *a, shape=s))
