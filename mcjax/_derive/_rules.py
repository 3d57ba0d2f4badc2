"""The structured derivative of each JAX primitive, one registration per primitive.

A rule receives an :class:`Eqn` (the primitive's operands, each with its value and
expression, its output, its parameters, and which operands depend on the argument) and
returns the *local* Jacobian of the output with respect to each of those operands; the
interpreter (:mod:`mcjax._derive._interpret`) chains them.  Beside each rule sits the
expression the primitive's output is printed as (``W x``, ``exp(x)``, ``1[x > 0]``).

The families live in ``_rules_elementwise``, ``_rules_shape`` and ``_rules_dot``; this
module holds the registry and what they share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp

from mcjax._jacobian import _expr as E
from mcjax._jacobian._sym import Sym


class Operand(NamedTuple):
    """A value of ``f``'s program: the array, its expression, its derivative with respect to
    each leaf of the argument (``{leaf index: Jacobian}``, empty where it does not depend on
    it), and where it came from."""

    value: Any
    expr: E.Expr
    tangents: dict = {}  # noqa: RUF012 - never mutated: a derivation builds new dicts
    transposed: tuple | None = None  # (operand, perm) when this is a transpose of operand

    @property
    def sym(self) -> Sym:
        return Sym(self.value, self.expr)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(jnp.shape(self.value))

    @property
    def dtype(self):
        return jnp.result_type(self.value)


class Eqn(NamedTuple):
    """One equation of the program, as a rule sees it."""

    name: str
    ins: tuple[Operand, ...]
    out: Operand
    params: dict
    active: tuple[int, ...]  # the operands that depend on the argument


Rule = Callable[[Eqn], dict]
"""``rule(eqn) -> {operand index: local Jacobian}`` for the active operands, or ``None`` when
the rule does not cover this case (the interpreter then makes an opaque block).  A key may
also be ``("source", k)``: the value operand ``k`` is the transpose of (``dot_general``
differentiates ``x @ W.T`` with respect to ``W`` through the transpose)."""

ExprRule = Callable[[tuple, tuple, dict], E.Expr]
"""``expr(operand expressions, output shape, params) -> the output's expression``."""

RULES: dict[str, Rule] = {}
EXPRS: dict[str, ExprRule] = {}
HINTS: dict[str, str] = {}
"""The letter a person names a primitive's output with, when it needs a name: ``z`` for the
affine map's output, ``a`` for an activation's."""


def register(name: str, rule: Rule, expr: ExprRule | None = None, hint: str = "") -> None:
    """Register primitive ``name``'s rule and (optionally) how its output is written."""
    RULES[name] = rule
    if expr is not None:
        EXPRS[name] = expr
    if hint:
        HINTS[name] = hint


def output_expr(name: str, ins: tuple[Operand, ...], shape, params: dict) -> E.Expr:
    """How the output of primitive ``name`` is written: its registered form, or ``name(...)``."""
    exprs = tuple(op.expr for op in ins)
    build = EXPRS.get(name)
    expr = build(exprs, tuple(shape), params) if build else E.opaque(name, exprs, shape)
    return expr.as_var(HINTS.get(name, ""))


def is_float(value) -> bool:
    return bool(jnp.issubdtype(jnp.result_type(value), jnp.inexact))
