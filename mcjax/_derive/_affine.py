r"""Where a program stops being affine in its argument: ``f = g \circ z`` with ``z`` affine.

A loss of a linear model, ``f(w, b) = \sum_i \ell(x_i^\top w + b)``, reads its parameters
first through an affine map ``z = X w + b`` (products with data, sums, reshapes, slices)
and only then through a non-linear ``g``.  Its Hessian is then exactly
$J^\top \nabla^2 g\, J$ with $J = \partial z / \partial v$ (the second derivative of an
affine ``z`` vanishes: Parr & Howard's vector chain rule, applied twice), and the
structure lies in the pieces: $J = [X, 1]$ is the data, $\nabla^2 g$ a diagonal.

``split(fn, v)`` walks ``fn``'s program once and marks every value *constant* (it does not
depend on ``v``), *affine* in ``v`` (an affine primitive, ``_primitives._linear.affine_in``,
of affine and constant values) or *non-linear*.  The frontier is the affine values that a
non-linear equation, a custom-rule call or the output reads; ``z`` computes them (the
affine equations only) and ``g`` the rest from them (the non-linear equations only), both
walked in the same order, so the frontier's values are matched by their place in the walk.
A custom-derivative call is never looked into: its rule, not its body, is its derivative.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mcjax._primitives._linear import SELECTIONS, affine_in
from mcjax._program._walk import Interpreter, bind, sub_jaxprs

CONST, AFFINE, NONLINEAR = "const", "affine", "non-linear"


class Val(NamedTuple):
    kind: str
    value: Any = None  # None where this walk does not compute it
    token: int = -1  # an affine value's place in the walk
    mixed: bool = False  # an affine value that is more than some entries of the argument


class _Split(Interpreter[Val]):
    """One walk: ``frontier is None`` computes the affine values and records the frontier
    (``z``); else the non-linear values, reading the frontier's values from ``frontier``
    (``g``)."""

    def __init__(self, frontier: dict[int, Any] | None = None):
        super().__init__()
        self.frontier = frontier
        self.read: dict[int, Any] = {}  # token -> value, in the order the frontier is met
        self.mixed: dict[int, bool] = {}  # token -> whether it is more than a selection
        self.count = 0

    def literal(self, value) -> Val:
        return Val(CONST, value)

    def affine(self, value, mixed: bool = False) -> Val:
        self.count += 1
        return Val(AFFINE, value, self.count, mixed)

    def value(self, val: Val):
        """The array ``val`` holds where a non-linear equation reads it."""
        if val.kind != AFFINE:
            return val.value
        if self.frontier is None:
            self.read.setdefault(val.token, val.value)
            self.mixed[val.token] = val.mixed
            return None
        return self.frontier[val.token]

    def unmoved(self, eqn, ins: list[Val]) -> list[Val] | None:
        """The outputs of an equation that does not depend on the argument, or None."""
        if all(v.kind == CONST for v in ins):
            return [Val(CONST, o) for o in bind(eqn, [v.value for v in ins])]
        return None

    def primitive(self, eqn, ins: list[Val]) -> list[Val]:
        if (held := self.unmoved(eqn, ins)) is not None:
            return held
        dependent = tuple(i for i, v in enumerate(ins) if v.kind != CONST)
        if (all(ins[i].kind == AFFINE for i in dependent) and not any(sub_jaxprs(eqn))
                and all(_real_floating(o.aval) for o in eqn.outvars)
                and all(_real_floating(eqn.invars[i].aval) for i in dependent)
                and affine_in(eqn.primitive.name, dependent)
                and not (eqn.primitive.name == "select_n" and 0 in dependent)):
            mixed = (eqn.primitive.name not in SELECTIONS
                     or any(ins[i].mixed for i in dependent))
            if self.frontier is None:
                outs = bind(eqn, [v.value for v in ins])
                return [self.affine(o, mixed) for o in outs]
            return [self.affine(None, mixed) for _ in eqn.outvars]
        return self.nonlinear(eqn, ins)

    def custom(self, eqn, ins: list[Val]) -> list[Val]:
        held = self.unmoved(eqn, ins)
        return held if held is not None else self.nonlinear(eqn, ins)

    def nonlinear(self, eqn, ins: list[Val]) -> list[Val]:
        values = [self.value(v) for v in ins]
        if self.frontier is None:  # z does not compute g's equations
            return [Val(NONLINEAR) for _ in eqn.outvars]
        return [Val(NONLINEAR, o) for o in bind(eqn, values)]


def _real_floating(aval) -> bool:
    dtype = getattr(aval, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.floating)


class Split(NamedTuple):
    """``fn = g(z(v))`` with ``z`` affine in ``v``: ``z(v)`` the frontier of ``size``
    entries, in its own shape where it is one value, else flattened into one vector."""

    z: Callable[[jax.Array], jax.Array]
    g: Callable[[jax.Array], jax.Array]
    size: int
    at: jax.Array  # z(v), from the walk that found the frontier


def split(fn: Callable[[jax.Array], jax.Array], v: jax.Array) -> Split | None:
    """Split the scalar function ``fn`` of the vector ``v`` at its affine frontier, or
    ``None`` where there is nothing to split (the frontier only selects entries of ``v``,
    holds a value of another dtype than ``v``'s, or ``fn`` is affine)."""
    closed = jax.make_jaxpr(fn)(v)

    def walk(frontier, argument):
        interpreter = _Split(frontier)
        (out,) = interpreter.run(closed.jaxpr, closed.consts, [interpreter.affine(argument)])
        if out.kind == AFFINE:
            interpreter.value(out)
        return interpreter, out

    probe, out = walk(None, v)
    tokens = list(probe.read)
    if out.kind != NONLINEAR or not any(probe.mixed.values()):
        return None  # g reads entries of v itself: J would only select them
    shapes = [jnp.shape(probe.read[t]) for t in tokens]
    if any(jnp.result_type(probe.read[t]) != jnp.result_type(v) for t in tokens):
        return None
    sizes = [math.prod(s) for s in shapes]

    def joined(read: dict):
        if len(tokens) == 1:  # in its own shape: the structure of g's Hessian shows in it
            return read[tokens[0]]
        return jnp.concatenate([jnp.ravel(read[t]) for t in tokens])

    def z(w):
        return joined(walk(None, w)[0].read)

    def g(u):
        pieces, at = {tokens[0]: u}, 0
        if len(tokens) > 1:
            for t, shape, size in zip(tokens, shapes, sizes):
                pieces[t] = u[at:at + size].reshape(shape)
                at += size
        return walk(pieces, None)[1].value

    return Split(z, g, sum(sizes), joined(probe.read))
