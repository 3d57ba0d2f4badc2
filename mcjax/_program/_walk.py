"""THE walker of traced programs: one interpreter of jaxprs for every client.

``mcjax.derive`` (structured Jacobians), the checker's kink reader (one-sided derivatives and
switch sides), its slip planter (the diagnosis) and the static analyses (dependence, the
longest sum, the least precise dtype) all walk ``f``'s jaxpr.  They differ only in the value
each variable carries and in what one primitive does to it; the walk itself — the
environment, literals and constants, binding an equation with JAX's own parameters, entering
the jaxprs that ``jit``, ``closed_call``, ``remat`` and the custom-rule primitives call, the
user's source lines — is written once, here.  A client subclasses ``Interpreter`` and
supplies ``Interpreter.primitive`` (and, where it wants, ``Interpreter.custom``
for ``custom_jvp``/``custom_vjp`` calls and ``Interpreter.literal``).

What each primitive *is* (its Jacobian, how it switches, its slip sites) is not here: that is
the primitive table (``mcjax._primitives``).
"""

from __future__ import annotations

import linecache
import os
from collections.abc import Callable, Iterator
from typing import Any, Generic, NamedTuple, TypeVar

from jax.extend import core

from mcjax._core._compat import DropVar
from mcjax._core._ipython import cell_location, code_location

CALLS = frozenset({"jit", "pjit", "closed_call", "core_call", "remat", "remat2", "checkpoint",
                   "custom_vmap_call", "linear_call", "composite", "eval_jaxpr"})
"""Primitives that call a jaxpr with their operands: their body is walked in their place."""
CUSTOM_RULES = frozenset({"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
                          "custom_lin"})
"""The primitives that carry a custom derivative rule (their body is ``f``'s own computation)."""

V = TypeVar("V")


def body(eqn) -> core.ClosedJaxpr | None:
    """The jaxpr a call-like equation (``CALLS``, a custom rule) runs on its operands."""
    params = eqn.params
    inner = next((params[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr", "callee")
                  if k in params), None)
    if isinstance(inner, core.ClosedJaxpr):
        return inner
    if isinstance(inner, core.Jaxpr):
        return core.ClosedJaxpr(inner, ())
    return None


def bind(eqn, values) -> list:
    """Evaluate one equation on concrete (or traced) values, with the parameters JAX binds it
    with (``get_bind_params``: a custom rule's functions, a call's jaxpr) in its context;
    always a list of outputs."""
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns = ()
    if isinstance(params, tuple):  # JAX before 0.7 returned (subfuns, params)
        subfuns, params = params
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*subfuns, *values, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


class Interpreter(Generic[V]):
    """A walk of a jaxpr on values of type ``V``: subclass it and supply ``primitive``.

    ``run`` evaluates a jaxpr equation by equation: a call (``CALLS``) runs its body
    in place, a custom-rule call goes to ``custom`` (by default its body too: ``f``'s own
    computation), anything else to ``primitive``.  ``calls`` holds the call equations
    being walked, outermost first (the user's line of a primitive inside a library's ``jit``).
    """

    def __init__(self):
        self.calls: list = []
        self.annotation: Any = None  # the annotation (see scope) of the jaxpr being walked

    # -- what a client supplies ------------------------------------------------------------
    def primitive(self, eqn, ins: list[V]) -> list[V]:
        """The outputs of one equation that is no call."""
        raise NotImplementedError

    def literal(self, value) -> V:
        """The value of a literal (a constant written into the program)."""
        return value

    def constant(self, value) -> V:
        """The value of a constant a jaxpr closes over."""
        return self.literal(value)

    def custom(self, eqn, ins: list[V]) -> list[V]:
        """A ``custom_jvp``/``custom_vjp`` call: by default its body, ``f``'s own computation."""
        return self.inline(eqn, ins)

    def store(self, var, value: V, wanted) -> V:
        """What the environment keeps of an equation's output (``wanted``: the scope's
        annotation of the variable, see ``scope``)."""
        return value

    def scope(self, jaxpr: core.Jaxpr, outputs) -> Any:
        """A client's annotation of a jaxpr about to be walked, given its caller's of the
        outputs (``None`` at the top): kept while the jaxpr is walked, passed to
        ``store`` and ``wanted``."""
        return None

    def wanted(self, eqn, annotation) -> Any:
        """The annotation of ``eqn``'s outputs that its body is walked with."""
        return None

    # -- the walk ----------------------------------------------------------------------------
    def run(self, jaxpr: core.Jaxpr, consts, args: list[V], outputs=None) -> list[V]:
        """Evaluate ``jaxpr`` on ``args`` (its constants ``consts`` given as raw values)."""
        annotation = self.scope(jaxpr, outputs)
        env: dict = {}

        def read(var) -> V:
            return self.literal(var.val) if isinstance(var, core.Literal) else env[var]

        for var, value in zip(jaxpr.constvars, consts):
            env[var] = self.constant(value)
        env.update(zip(jaxpr.invars, args))
        for eqn in jaxpr.eqns:
            self.annotation = annotation
            outs = self.equation(eqn, [read(v) for v in eqn.invars])
            for var, value in zip(eqn.outvars, outs):
                if not isinstance(var, DropVar):
                    env[var] = self.store(var, value, annotation)
        return [read(v) for v in jaxpr.outvars]

    def equation(self, eqn, ins: list[V]) -> list[V]:
        """One equation: a call's body, a custom rule, or a primitive."""
        name = eqn.primitive.name
        if name in CALLS:
            return self.inline(eqn, ins)
        if name in CUSTOM_RULES:
            return self.custom(eqn, ins)
        return self.primitive(eqn, ins)

    def inline(self, eqn, ins: list[V]) -> list[V]:
        """Walk the jaxpr ``eqn`` calls, on its operands."""
        closed = body(eqn)
        if closed is None:
            raise NotImplementedError(f"mcjax: {eqn.primitive.name} calls no jaxpr mcjax can read")
        outputs = self.wanted(eqn, self.annotation)
        self.calls.append(eqn)
        try:
            return self.run(closed.jaxpr, closed.consts, ins, outputs)
        finally:
            self.calls.pop()


class Dependence(Interpreter[bool]):
    """Which values depend on the arguments (a walk on booleans); every equation it meets
    is reported to ``visit(eqn, dependent_operands)``."""

    def __init__(self, visit: Callable[[Any, list[bool]], None] | None = None):
        super().__init__()
        self.visit = visit

    def literal(self, value) -> bool:
        return False

    def primitive(self, eqn, ins: list[bool]) -> list[bool]:
        if self.visit is not None:
            self.visit(eqn, ins)
        return [any(ins)] * len(eqn.outvars)

    def custom(self, eqn, ins):
        return self.primitive(eqn, ins)


# -- static reading: every equation, the sub-jaxprs -------------------------------------------
def _called(eqn) -> Iterator:
    for value in eqn.params.values():
        yield from value if isinstance(value, (tuple, list)) else (value,)


def sub_jaxprs(eqn) -> Iterator[core.Jaxpr]:
    """The jaxprs an equation calls (jit, cond branches, scan and while bodies, custom rules)."""
    for item in _called(eqn):
        if isinstance(item, core.ClosedJaxpr):
            yield item.jaxpr
        elif isinstance(item, core.Jaxpr):
            yield item


def equations(jaxpr: core.Jaxpr) -> Iterator:
    """Every equation of ``jaxpr`` and of the jaxprs it calls, depth first."""
    for eqn in jaxpr.eqns:
        yield eqn
        for inner in sub_jaxprs(eqn):
            yield from equations(inner)


def called_constants(jaxpr: core.Jaxpr) -> Iterator:
    """The constants held by the closed jaxprs that ``jaxpr`` calls, at any depth, in order
    (each closed jaxpr once): their values, which a jaxpr's text does not show."""
    seen: set[int] = set()
    for eqn in equations(jaxpr):
        for item in _called(eqn):
            if isinstance(item, core.ClosedJaxpr) and id(item) not in seen:
                seen.add(id(item))
                yield from item.consts


def custom_rules(jaxpr: core.Jaxpr) -> set[str]:
    """The custom-derivative primitives (``custom_jvp_call``, ``custom_vjp_call``) that
    ``jaxpr`` or its sub-jaxprs call."""
    return {e.primitive.name for e in equations(jaxpr) if e.primitive.name in CUSTOM_RULES}


def needed(jaxpr: core.Jaxpr, outputs, also: Callable[[Any], bool]) -> set:
    """The variables that the wanted ``outputs`` (booleans, one per output) or any equation
    for which ``also(eqn)`` holds read, directly or not (a backward pass over ``jaxpr``)."""
    found = {v for v, want in zip(jaxpr.outvars, outputs) if want and isinstance(v, core.Var)}
    for eqn in reversed(jaxpr.eqns):
        if also(eqn) or any(o in found for o in eqn.outvars):
            found.update(v for v in eqn.invars if isinstance(v, core.Var))
    return found


# -- names and places ----------------------------------------------------------------------------
def callee_name(eqn) -> str:
    """The Python name of the function a call or custom rule runs (``relu``, ``inv``), or the
    primitive's name."""
    if eqn.params.get("name"):
        return str(eqn.params["name"])
    closed = body(eqn)
    info = getattr(getattr(closed, "jaxpr", None), "debug_info", None)
    src = getattr(info, "func_src_info", None) or getattr(info, "func_name", None) or ""
    return src.split(" ")[0] or eqn.primitive.name


def from_jax(eqn) -> bool:
    """Whether the function a call runs is JAX's own (``jnp.linalg.inv``), not a user's
    function of the same name."""
    closed = body(eqn)
    info = getattr(getattr(closed, "jaxpr", None), "debug_info", None)
    src = getattr(info, "func_src_info", None) or ""
    return f"{os.sep}jax{os.sep}_src{os.sep}" in src


class Place(NamedTuple):
    """Where an equation was traced in the user's code."""

    file: str
    line: int
    code: str  # the expression on that line, when it is known exactly ("" otherwise)

    def __str__(self) -> str:
        place = code_location(self.file, self.line)  # model.py:12, or Cell In[3], line 2
        return f"`{self.code}` ({place})" if self.code else f"at {place}"


_MCJAX_OWN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_")


def _user_frame(traceback):
    """The innermost frame of ``traceback`` in the user's code: neither JAX's (JAX's own
    test) nor mcjax's internals (``mcjax/_*``: the checker's wrapper of ``f`` is no line of
    the user's).  None when ``f`` is a library's function through and through."""
    from jax._src import source_info_util  # the one place JAX exposes the user's frames

    return next((fr for fr in source_info_util.user_frames(traceback)
                 if not os.path.abspath(fr.file_name).startswith(_MCJAX_OWN)), None)


def user_place(eqn) -> Place | None:
    """The user's line (and expression) ``eqn`` was traced from, if JAX recorded it."""
    try:
        frame = _user_frame(eqn.source_info.traceback)
    except Exception:  # noqa: BLE001 - a private API: a missing place costs only the line
        return None
    if frame is None:
        return None
    line = linecache.getline(frame.file_name, frame.start_line)
    code = ""
    if line and frame.start_line == frame.end_line and frame.end_column > frame.start_column >= 0:
        code = line[frame.start_column:frame.end_column].strip()
    return Place(frame.file_name, frame.start_line, code)


def source_line(*eqns) -> str:
    """Where in the user's code the first of ``eqns`` with a known place was traced:
    ``file.py:12:8 (f)``.  (A primitive inside ``jnp.cumsum``'s own ``jit`` has none: the
    call of ``jnp.cumsum`` is the user's line.)"""
    try:
        for eqn in eqns:
            if eqn is not None:
                frame = _user_frame(eqn.source_info.traceback)
                if frame is None:
                    continue
                cell = cell_location(frame.file_name, frame.start_line)
                if cell:  # a notebook's cell, named as IPython does
                    return f"{cell} ({frame.function_name})"
                column = f":{frame.start_column}" if frame.start_column else ""
                return f"{frame.file_name}:{frame.start_line}{column} ({frame.function_name})"
    except Exception:  # noqa: BLE001 - a private API: say less rather than fail
        pass
    return "an unknown line"
