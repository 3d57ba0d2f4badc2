"""A value and its expression, computed together.

A derivative rule is written once, as arithmetic on ``Sym`` values
(``lambda x, y: 1 - y**2`` for tanh); each operation computes the number with ``jax.numpy``
and the expression with ``mcjax._jacobian._expr``, so the formula printed for a Jacobian is
by construction the formula of the numbers it holds.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from mcjax._jacobian import _expr as E


class Sym(NamedTuple):
    """``value`` (an array, or a Python number for a constant) and ``expr`` (its formula)."""

    value: Any
    expr: E.Expr

    # -- arithmetic -------------------------------------------------------------------------
    def __add__(self, other):
        other = lift(other)
        return Sym(self.value + other.value, E.add(self.expr, other.expr))

    def __radd__(self, other):
        return lift(other) + self

    def __sub__(self, other):
        other = lift(other)
        return Sym(self.value - other.value, E.sub(self.expr, other.expr))

    def __rsub__(self, other):
        return lift(other) - self

    def __mul__(self, other):
        other = lift(other)
        return Sym(self.value * other.value, E.mul(self.expr, other.expr))

    def __rmul__(self, other):
        return lift(other) * self

    def __truediv__(self, other):
        other = lift(other)
        return Sym(self.value / other.value, E.div(self.expr, other.expr))

    def __rtruediv__(self, other):
        return lift(other) / self

    def __neg__(self):
        return Sym(-self.value, E.neg(self.expr))

    def __pow__(self, exponent: float):
        return Sym(self.value**exponent, E.power(self.expr, exponent))

    # -- comparisons give boolean Syms, for indicators -----------------------------------------
    def __gt__(self, other):  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]
        return _compare(">", self, other)

    def __lt__(self, other):  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]
        return _compare("<", self, other)

    def __ge__(self, other):  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]
        return _compare(">=", self, other)

    def __le__(self, other):  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]
        return _compare("<=", self, other)

    def equals(self, other):
        return _compare("==", self, other)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.value))

    def is_constant(self, value: float) -> bool:
        """Whether this is the number ``value`` (known without looking at an array)."""
        return self.expr.op == "num" and self.expr.param == value


def lift(x) -> Sym:
    """A Python number as a constant Sym; a Sym unchanged."""
    if isinstance(x, Sym):
        return x
    return Sym(x, E.num(x))


_OPS = {">": jnp.greater, "<": jnp.less, ">=": jnp.greater_equal, "<=": jnp.less_equal,
        "==": jnp.equal, "!=": jnp.not_equal}


def _compare(op: str, a, b) -> Sym:
    a, b = lift(a), lift(b)
    return Sym(_OPS[op](a.value, b.value), E.compare(op, a.expr, b.expr))


# -- functions -------------------------------------------------------------------------------
def _function(name: str, fn):
    def apply(x: Sym) -> Sym:
        return Sym(fn(x.value), E.call(name, x.expr))

    apply.__name__ = name
    return apply


exp = _function("exp", jnp.exp)
sin = _function("sin", jnp.sin)
cos = _function("cos", jnp.cos)
cosh = _function("cosh", jnp.cosh)
sinh = _function("sinh", jnp.sinh)
sqrt = _function("sqrt", jnp.sqrt)


def indicator(condition: Sym, dtype) -> Sym:
    """$\\mathbb{1}[c]$ in ``dtype``."""
    return Sym(jnp.asarray(condition.value).astype(dtype), E.indicator(condition.expr))


def logical_not(condition: Sym) -> Sym:
    return Sym(jnp.logical_not(condition.value), E.logical_not(condition.expr))


def labelled(value, expr: E.Expr) -> Sym:
    """A value computed one way and written another (``exp(x)`` for ``expm1(x) + 1``)."""
    return Sym(value, expr)
