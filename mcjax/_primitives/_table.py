r"""The one table of primitive knowledge: what mcjax knows of each JAX primitive.

JAX registers one differentiation rule per primitive in one table (``ad.primitive_jvps``);
mcjax does the same for what *it* needs of a primitive, in one ``Primitive`` record per
name, so that ``mcjax.derive``, the checker and the diagnosis never disagree about what a
primitive does and a primitive JAX adds shows up as missing (``tests/test_primitives.py``
enumerates JAX's own tables):

- **its Jacobian** (``jacobian``), for ``mcjax.derive``: the local structured Jacobian of the
  output with respect to each operand, or — where none is written — ``fallback``, the reason,
  and JAX's own linear map of that one equation, named (``mcjax.Opaque``): correct, never
  a crash and never silently wrong.  ``expr`` and ``hint`` say how its output is written;
- **how it switches** (``behaviour``), for the checker: ``smooth``; a ``kink`` (continuous,
  one-sided derivatives differ where it switches: ``max``, ``abs``, ``sort``); a ``jump``
  (discontinuous there: ``rem``, ``select_n``); ``piecewise constant`` (``floor``,
  ``sign``); ``integer`` (its outputs are integers or booleans: they pass through every
  interpreter untouched); ``identity``; or ``none`` (no derivative at all: state, random
  keys).  ``switch`` is the rule that reads the branch each element takes and differentiates
  along a direction; ``rounding`` the rounding model (``exact``, ``sum``, ``bilinear``,
  ``elementary``);
- **its slip sites** (``slips``), for the diagnosis: where a hand derivation's usual slips can
  be planted (a term of a sum or product dropped or negated; a factor of a product chain
  left out; a value or a neighbour's derivative for a derivative; a gate or clip forgotten;
  a piecewise function's one branch everywhere; ``|z|``'s sign dropped; a mean's count off by
  one; a matrix product's operand or result not transposed; a convolution's kernel not
  flipped, padding off by one or tap missing).

The families live in their own modules (``_elementwise``, ``_shape``, ...), each registering
its primitives with ``register``.  Besides primitives, the table knows some *functions* by
name: ``custom_jvp`` functions (``custom_jvp_call:relu``) and JAX's own jitted library
functions (``jit:inv`` for ``jnp.linalg.inv``), whose structured Jacobian a person writes
directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mcjax._jacobian import _expr as E
from mcjax._jacobian._sym import Sym

BEHAVIOURS = ("smooth", "kink", "jump", "piecewise constant", "integer", "identity", "none")
ROUNDINGS = ("exact", "sum", "bilinear", "elementary")
FAMILIES = ("element-wise", "special functions", "comparison and logic", "shape",
            "indexing", "reductions", "windows", "products", "linear algebra", "control flow",
            "known functions", "sharding and effects", "state", "random", "collectives",
            "sparse")


# -- what derive's rules see ------------------------------------------------------------------------
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
    outs: tuple[Operand, ...] = ()  # every output (``out`` is the first)
    apply: Callable[[list], list] = list  # the equation on other operand values
    primitive: Any = None  # the JAX primitive (for a structure that applies it again)


Rule = Callable[[Eqn], "dict | None"]
"""``rule(eqn) -> {operand index: local Jacobian}`` for the active operands, or ``None`` when
the rule does not cover this case (the derivation then falls back to JAX's linear map).  A
key may also be ``("source", k)``: the value operand ``k`` is the transpose of
(``dot_general`` differentiates ``x @ W.T`` with respect to ``W`` through the transpose).
For a primitive with several outputs the rule returns a list, one such dict per output."""

ExprRule = Callable[[tuple, tuple, dict], E.Expr]
"""``expr(operand expressions, output shape, params) -> the output's expression``."""


class V(NamedTuple):
    """A value of the checker's kink reading: primal, rounding bound, tangent, directional
    value.

    ``e`` and ``t`` are None where known to be zero; ``d`` (booleans and integers only) is the
    value just after moving along the direction, None where it equals ``p``.
    """

    p: jax.Array
    e: jax.Array | None = None
    t: jax.Array | None = None
    d: jax.Array | None = None


SwitchRule = Callable[[Any, list, bool], tuple[list, list]]
"""``switch(eqn, ins, directional) -> (outs, sides)``: the outputs as ``V`` values (with
the directional derivative when ``directional``: the branch a direction moves each element
into) and the side every element takes (arrays, compared between two points to see that a
finite-difference step crossed a switch)."""


class Slips(NamedTuple):
    """Where a hand derivation's usual slips can be planted in one primitive."""

    terms: tuple[str, tuple[str, str]] | None = None  # (what, (operand 0, operand 1)): a term
    value: str = ""  # an element-wise function whose derivative differs from its value
    gate: Callable | None = None
    """A gate that can be forgotten (``max(z, 0)``, ``where(mask, z, 0)``): ``gate(apply,
    operands, dependent) -> outputs`` with the same values and the derivative of the gated
    operand straight through, or None where this equation gates nothing."""
    neighbour: tuple[str, Callable] | None = None
    """The derivative of a neighbouring function, written for this one's: ``(words,
    derivative(x, y, params))`` (``1 - tanh`` for ``1 - tanh^2``: ``lambda x, y, p: 1 - y``;
    ``params``: the equation's)."""
    branches: tuple[int, ...] = ()
    """A piecewise function: the operands whose derivative may be taken everywhere (one
    branch's formula for every element: ``max``'s two, ``select_n``'s cases, ``clamp``'s
    ``x``: a missing clip)."""
    sign: bool = False  # |z|: its sign(z) can be dropped from the derivative
    chain: bool = False  # a product or quotient: a constant factor of the chain can be left out
    count: bool = False  # a quotient by a scalar: the count N of a mean, off by one (N - 1)
    transposes: bool = False  # a matrix product: an operand or the result not transposed
    window: bool = False  # a convolution: kernel not flipped, padding off by one, a tap missing


@dataclass(frozen=True)
class Primitive:
    """What mcjax knows of one primitive (or of one function known by name)."""

    name: str
    family: str
    jacobian: Rule | None = None
    fallback: str = ""
    expr: ExprRule | None = None
    hint: str = ""
    behaviour: str = "smooth"
    switch: SwitchRule | None = None
    rounding: str = "elementary"
    slips: Slips = Slips()
    walked: bool = False  # derive walks its body (a call, a branch, a loop) rather than a rule

    @property
    def structured(self) -> bool:
        """Whether ``mcjax.derive`` has a structured Jacobian for it (a rule, or its body)."""
        return self.jacobian is not None or self.walked


TABLE: dict[str, Primitive] = {}


def register(name: str, family: str, **knowledge) -> Primitive:
    """Enter what mcjax knows of primitive ``name`` (once: a second entry is a bug)."""
    if name in TABLE:
        raise ValueError(f"mcjax: the primitive {name!r} is in the table twice")
    if family not in FAMILIES:
        raise ValueError(f"mcjax: {name!r} has family {family!r}; expected one of {FAMILIES}")
    entry = Primitive(name, family, **knowledge)
    if entry.behaviour not in BEHAVIOURS or entry.rounding not in ROUNDINGS:
        raise ValueError(f"mcjax: {name!r}: behaviour {entry.behaviour!r}, rounding "
                         f"{entry.rounding!r}; expected one of {BEHAVIOURS}, {ROUNDINGS}")
    if entry.jacobian is None and not entry.walked and not entry.fallback and entry.behaviour not in (
            "integer", "none", "piecewise constant"):
        raise ValueError(f"mcjax: {name!r} has neither a structured Jacobian nor the reason "
                         "for its fallback")
    TABLE[name] = entry
    return entry


def lookup(name: str) -> Primitive | None:
    """The entry of primitive (or known function) ``name``."""
    return TABLE.get(name)


def is_float(value) -> bool:
    return bool(jnp.issubdtype(jnp.result_type(value), jnp.inexact))


def output_expr(name: str, ins: tuple[Operand, ...], shape, params: dict) -> E.Expr:
    """How the output of primitive ``name`` is written: its registered form, or ``name(...)``."""
    exprs = tuple(op.expr for op in ins)
    entry = TABLE.get(name)
    build = entry.expr if entry is not None else None
    expr = build(exprs, tuple(shape), params) if build else E.opaque(name, exprs, shape)
    return expr.as_var(entry.hint if entry is not None else "")
