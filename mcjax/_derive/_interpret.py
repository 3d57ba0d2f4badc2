r"""The interpreter: ``f``'s jaxpr, equation by equation, with structured Jacobians.

Each variable of the program carries its value, its expression, and its derivative with
respect to each leaf of the differentiated argument (absent where it does not depend on it).
An equation's local Jacobians (from :mod:`mcjax._derive._rules`) are chained onto its
operands' derivatives by the vector chain rule, and the paths that meet in one variable are
added by the total-derivative rule (Parr & Howard §4.5) — forward accumulation, as
``jax.jacfwd``, but on structures.

Nested ``jit`` calls are interpreted inside; ``custom_jvp`` functions mcjax knows by name
(``relu``, ``logaddexp``) use their structured rule, which follows JAX's derivative at the
kink.  Anything else becomes an opaque block from ``jax.linearize`` of that one equation
(``jax.vjp`` for ``custom_vjp``): correct, unstructured, marked with the primitive's name.
With ``strict=True`` it is an error instead.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.extend import core

from mcjax._derive._rules import RULES, Eqn, Operand, is_float, output_expr
from mcjax._jacobian import _build as B
from mcjax._jacobian import _expr as E
from mcjax._jacobian._algebra import add, compose

CALLS = ("jit", "pjit", "closed_call", "core_call", "remat", "checkpoint", "remat2")


class Context(NamedTuple):
    strict: bool
    call: object = None  # the outermost call equation (jit) being interpreted: the user's line


def source_line(*eqns) -> str:
    """Where in the user's code the first of ``eqns`` with a known place was traced:
    ``file.py:12:8 (f)``.  (A primitive inside ``jnp.cumsum``'s own ``jit`` has none: the
    call of ``jnp.cumsum`` is the user's line.)"""
    try:
        from jax._src import source_info_util

        for eqn in eqns:
            if eqn is not None:
                where = source_info_util.summarize(eqn.source_info)
                if where:
                    return where
    except Exception:  # noqa: BLE001 - a private API: say less rather than fail
        pass
    return "an unknown line"


def bind(eqn, values) -> list:
    """Evaluate one equation on concrete (or traced) values; always a list of outputs."""
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns = ()
    if isinstance(params, tuple):  # JAX before 0.7 returned (subfuns, params)
        subfuns, params = params
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*subfuns, *values, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def custom_name(eqn) -> str:
    """The Python name of a ``custom_jvp`` / ``custom_vjp`` function (``relu``)."""
    call = eqn.params.get("call_jaxpr")
    info = getattr(getattr(call, "jaxpr", call), "debug_info", None)
    src = getattr(info, "func_src_info", None) or getattr(info, "func_name", None) or ""
    return src.split(" ")[0] or eqn.primitive.name


def interpret(jaxpr: core.Jaxpr, consts, ins: list[Operand], tangents: list[dict],
              ctx: Context) -> tuple[list[Operand], list[dict]]:
    """Run ``jaxpr`` on operands with derivatives; return the outputs' operands and
    derivatives (``{leaf index: Jacobian}``, empty where there is no dependence)."""
    env: dict = {}
    derivative: dict = {}

    def read(v) -> Operand:
        if isinstance(v, core.Literal):
            value = v.val
            expr = E.num(float(value)) if jnp.ndim(value) == 0 and is_float(value) else \
                E.opaque("constant", (), jnp.shape(value))
            return Operand(value, expr)
        return env[v]

    for var, op in zip(jaxpr.constvars, consts):
        env[var] = op._replace(var=var)
    for var, op, t in zip(jaxpr.invars, ins, tangents):
        env[var] = op._replace(var=var)
        if t:
            derivative[var] = t
    for eqn in jaxpr.eqns:
        operands = [read(v) for v in eqn.invars]
        in_tangents = [derivative.get(v, {}) if not isinstance(v, core.Literal) else {}
                       for v in eqn.invars]
        outs, out_tangents = _equation(eqn, operands, in_tangents, derivative, ctx)
        for var, op, t in zip(eqn.outvars, outs, out_tangents):
            if isinstance(var, core.DropVar):
                continue
            env[var] = op._replace(var=var)
            if t:
                derivative[var] = t
    outs = [read(v) for v in jaxpr.outvars]
    return outs, [{} if isinstance(v, core.Literal) else derivative.get(v, {})
                  for v in jaxpr.outvars]


def _equation(eqn, operands, in_tangents, derivative, ctx):
    name = eqn.primitive.name
    if name in CALLS:
        inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
        closed = inner if isinstance(inner, core.ClosedJaxpr) else core.ClosedJaxpr(inner, ())
        consts = [Operand(c, E.opaque("constant", (), jnp.shape(c))) for c in closed.consts]
        inner_ctx = ctx if ctx.call is not None else ctx._replace(call=eqn)
        # a transpose's source (``Operand.transposed``) is a variable of the scope it was
        # made in, where the dot rule looks up its derivative: it does not cross a call
        local = [op._replace(transposed=None) for op in operands]
        outs, tangents = interpret(closed.jaxpr, consts, local, in_tangents, inner_ctx)
        return [op._replace(transposed=None) for op in outs], tangents
    key = f"{name}:{custom_name(eqn)}" if name.startswith("custom_") else name
    values = bind(eqn, [op.value for op in operands])
    shown = custom_name(eqn) if name.startswith("custom_") else name
    outs = [Operand(v, output_expr(key if key in RULES else shown, tuple(operands),
                                   jnp.shape(v), eqn.params)) for v in values]
    if name == "transpose" and tuple(eqn.params["permutation"]) == (1, 0):
        outs[0] = outs[0]._replace(transposed=(operands[0], (1, 0)))
    active = tuple(k for k, t in enumerate(in_tangents) if t)
    if not active or not any(is_float(v) for v in values):
        return outs, [{} for _ in outs]
    partials = None
    if len(outs) == 1 and key in RULES:
        partials = RULES[key](Eqn(key, tuple(operands), outs[0], dict(eqn.params), active))
    if partials is None:
        return outs, _opaque(eqn, shown, operands, outs, in_tangents, active, ctx)
    chained: dict = {}
    for source, J in partials.items():
        t = in_tangents[source] if isinstance(source, int) else derivative.get(source, {})
        for leaf, J_in in t.items():
            term = compose(J, J_in)
            chained[leaf] = term if leaf not in chained else add(chained[leaf], term)
    return outs, [chained]


def _opaque(eqn, name, operands, outs, in_tangents, active, ctx) -> list[dict]:
    """Each output's derivative through an unstructured block of this one equation."""
    if ctx.strict:
        raise NotImplementedError(
            f"mcjax.derive(strict=True): no structured rule for the primitive {name!r} at "
            f"{source_line(ctx.call, eqn)}; without strict=True it becomes an opaque block from "
            "jax.linearize (correct, but with no structure)")
    out_tangents = [{} for _ in outs]
    for k in active:
        linear = _linear_map(eqn, operands, k)
        for o, out in enumerate(outs):
            if not is_float(out.value):
                continue
            block = B.opaque(linear, name, out.shape, operands[k].shape, operands[k].dtype,
                             out_index=o)
            for leaf, J_in in in_tangents[k].items():
                term = compose(block, J_in)
                t = out_tangents[o]
                t[leaf] = term if leaf not in t else add(t[leaf], term)
    return out_tangents


def _linear_map(eqn, operands, k: int):
    """``v -> [d out_o]`` for a tangent ``v`` of operand ``k``, as a pytree ``Partial``."""
    values = [op.value for op in operands]

    def f(x):
        return bind(eqn, values[:k] + [x] + values[k + 1:])

    if eqn.primitive.name == "custom_vjp_call":  # no forward mode: build it from reverse mode
        return _dense_map(f, values[k])
    return jax.linearize(f, values[k])[1]


def _apply(columns, v):
    return [jnp.tensordot(c, v, axes=jnp.ndim(v)) for c in columns]


def _dense_map(f, x):
    outs, pullback = jax.vjp(f, x)
    columns = []
    for o, out in enumerate(outs):
        if not is_float(out):
            columns.append(jnp.zeros(jnp.shape(out) + jnp.shape(x), jnp.result_type(x)))
            continue
        n = out.size
        basis = jnp.eye(n, dtype=out.dtype).reshape((n,) + out.shape)

        def row(u, o=o):
            cot = [jnp.zeros_like(y) if i != o else u for i, y in enumerate(outs)]
            return pullback(cot)[0]

        columns.append(jax.vmap(row)(basis).reshape(out.shape + jnp.shape(x)))
    return jax.tree_util.Partial(_apply, columns)
