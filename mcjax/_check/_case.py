"""One check as the checker holds it: its hashable part (what jit compiles for) and the rest."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
from jax.extend import core

from mcjax._check._flat import FlatSpec
from mcjax._core._pytrees import combine, partition
from mcjax._program._trace import Keyed, signature


class ByIdentity:
    """Wraps an unhashable static value so that jit can key on it (by identity: no reuse)."""

    def __init__(self, value):
        self.value = value


class Static(NamedTuple):
    """The hashable part of a check: what jit compiles for.

    ``f`` and ``derivative`` are ``Keyed``: equal when their traces are.
    """

    f: Keyed
    derivative: Keyed
    argnums: int | tuple[int, ...]  # a tuple: x is the tuple of those arguments (jax.grad's)
    layout: str
    treedef: Any
    static_leaves: tuple  # None where a leaf is dynamic
    dynamic_positions: tuple[int, ...]
    switches: bool = False  # f switches branch somewhere (max, abs, where...): kinks are read
    reverse_only: bool = False  # f calls a custom_vjp function: jax.jacfwd cannot run
    pullback: bool = False  # the derivative returns a VJP function u -> u^T J
    no_float32: bool = False  # f cannot run on float32 arguments (a scan's carry typed by a
    # float64 constant): its rounding is not measured against float32 (the policy's rtol alone)
    draws: bool = False  # f draws random numbers, in its arguments' dtype perhaps: in another
    # precision it draws others, and the difference is no rounding (not measured)

    def args(self, dynamic) -> tuple:
        """The arguments rebuilt from the traced leaves."""
        leaves = [v.value if isinstance(v, ByIdentity) else v for v in self.static_leaves]
        for pos, value in zip(self.dynamic_positions, dynamic):
            leaves[pos] = value
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    @property
    def positions(self) -> tuple[int, ...]:
        """The positions of the differentiated arguments."""
        return (self.argnums,) if isinstance(self.argnums, int) else self.argnums

    def x_of(self, args: tuple):
        """The differentiated argument: ``args[argnums]``, or the tuple of them, each with
        ``None`` at the leaves that are not trained (a model's functions, integer arrays,
        state such as an ``nnx.BatchStat``: ``_pytrees.partition``)."""
        if isinstance(self.argnums, int):
            return partition(args[self.argnums])[0]
        return tuple(partition(args[i])[0] for i in self.argnums)

    def with_x(self, args: tuple, x) -> tuple:
        """``args`` with the differentiated leaves of the differentiated argument (or
        arguments) replaced by ``x`` (as :meth:`x_of` returns it); the rest kept."""
        values = (x,) if isinstance(self.argnums, int) else tuple(x)
        new = list(args)
        for i, value in zip(self.positions, values):
            new[i] = combine(value, args[i])
        return tuple(new)

    def dynamic_of(self, args) -> list:
        """The traced leaves of ``args`` (arguments as :meth:`args` builds them)."""
        leaves = jax.tree_util.tree_leaves(args)
        return [leaves[i] for i in self.dynamic_positions]

    def f_of(self, args):
        """``f(*args)``, evaluated from ``f``'s trace at the arguments' shapes and dtypes
        (never its Python: a compiled check serves every value ``f`` closes over)."""
        dynamic = self.dynamic_of(args)
        return self.f.program(signature(dynamic))(*dynamic)

    def derivative_of(self, args, cotangent: list):
        """The derivative's value at ``args`` from its trace: for a VJP function its value
        at ``cotangent`` (flat leaves, as ``f``'s output), else the Jacobian (``cotangent``
        unused)."""
        dynamic = self.dynamic_of(args)
        run = self.derivative.program(signature(dynamic))
        return run(*dynamic, *cotangent)

    def consts(self) -> tuple:
        """The values ``f`` and the derivative close over: a compiled check's arguments."""
        return self.f.consts, self.derivative.consts

    def bind(self, consts) -> "Static":
        """This check evaluating ``f`` and the derivative on ``consts`` (see :meth:`consts`)."""
        return self._replace(f=self.f.bind(consts[0]), derivative=self.derivative.bind(consts[1]))


class Prepared(NamedTuple):
    """One check, ready: its static part, the traced leaves, the shapes and the traces."""

    static: Static
    dynamic: tuple
    x_spec: FlatSpec
    out_spec: FlatSpec
    dtype: str  # the dtype the derivative is judged in: the least precise of x and f(x)
    f_jaxpr: core.ClosedJaxpr  # f's trace at the point's shapes and dtypes
    derivative_jaxpr: core.ClosedJaxpr  # the derivative's (applied to u if it is a VJP)
    tolerance: tuple[float | None, float | None] = (None, None)  # (rtol, atol) given, or None
    # the derivative's entries at the argument's state (an nnx.BatchStat's, by plain path,
    # with what each is), not differentiated and so not compared: the report says so
    not_compared: tuple[tuple[str, str], ...] = ()
