r"""The derivation: ``f``'s jaxpr, equation by equation, with structured Jacobians.

A client of the one walker (:mod:`mcjax._program._walk`).  Each value of the program carries
its array, its expression, and its derivative with respect to each leaf of the differentiated
argument (absent where it does not depend on it).  An equation's local Jacobians (from
:mod:`mcjax._program.primitives`) are chained onto its operands' derivatives by the vector chain
rule, and the paths that meet in one value are added by the total-derivative rule (Parr &
Howard §4.5) — forward accumulation, as ``jax.jacfwd``, but on structures.

Nested ``jit`` calls are walked inside; ``custom_jvp`` functions mcjax knows by name
(``relu``, ``logaddexp``) use their structured rule, which follows JAX's derivative at the
kink.  Anything else becomes an opaque block from ``jax.linearize`` of that one equation
(``jax.vjp`` for ``custom_vjp``): correct, unstructured, marked with the primitive's name.
With ``strict=True`` it is an error instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mcjax._jacobian import _build as B
from mcjax._jacobian import _expr as E
from mcjax._jacobian._algebra import add, compose
from mcjax._program._walk import Interpreter, bind, callee_name, source_line
from mcjax._program.primitives import Eqn, Operand, is_float, lookup, output_expr


class Derivation(Interpreter[Operand]):
    """The walk of ``f``'s program that carries each value's structured derivative."""

    def __init__(self, strict: bool):
        super().__init__()
        self.strict = strict

    def literal(self, value) -> Operand:
        expr = E.num(float(value)) if jnp.ndim(value) == 0 and is_float(value) else \
            E.opaque("constant", (), jnp.shape(value))
        return Operand(value, expr)

    def constant(self, value) -> Operand:
        if isinstance(value, Operand):  # f's own constants, named by the caller
            return value
        return Operand(value, E.opaque("constant", (), jnp.shape(value)))

    def custom(self, eqn, ins: list[Operand]) -> list[Operand]:
        return self.primitive(eqn, ins)  # JAX's own rule (by name where mcjax knows it)

    def primitive(self, eqn, ins: list[Operand]) -> list[Operand]:
        name = eqn.primitive.name
        custom = name.startswith("custom_")
        shown = callee_name(eqn) if custom else name
        entry = lookup(f"{name}:{shown}" if custom else name)
        values = bind(eqn, [op.value for op in ins])
        known = entry.name if entry is not None else shown
        outs = [Operand(v, output_expr(known, tuple(ins), jnp.shape(v), eqn.params))
                for v in values]
        if name == "transpose" and tuple(eqn.params["permutation"]) == (1, 0):
            outs[0] = outs[0]._replace(transposed=(ins[0], (1, 0)))
        active = tuple(k for k, op in enumerate(ins) if op.tangents)
        if not active or not any(is_float(v) for v in values):
            return outs
        partials = None
        if entry is not None and entry.jacobian is not None:
            partials = entry.jacobian(Eqn(known, tuple(ins), outs[0], dict(eqn.params), active,
                                          tuple(outs), lambda vals: bind(eqn, vals)))
        if partials is None:
            return self._opaque(eqn, shown, ins, outs, active)
        per_output = partials if isinstance(partials, list) else [partials]
        return [out._replace(tangents=self._chain(p, ins)) if is_float(out.value) else out
                for out, p in zip(outs, per_output)] + outs[len(per_output):]

    @staticmethod
    def _chain(partials: dict, ins: list[Operand]) -> dict:
        """The output's derivative: each operand's, times the local Jacobian (the vector
        chain rule), summed over the operands (the total-derivative rule)."""
        chained: dict = {}
        for source, J in partials.items():
            # an int: the operand; ("source", k): the value operand k is the transpose of
            t = ins[source].tangents if isinstance(source, int) else \
                ins[source[1]].transposed[0].tangents
            for leaf, J_in in t.items():
                term = compose(J, J_in)
                chained[leaf] = term if leaf not in chained else add(chained[leaf], term)
        return chained

    def _opaque(self, eqn, name, ins, outs, active) -> list[Operand]:
        """Each output's derivative through an unstructured block of this one equation."""
        if self.strict:
            raise NotImplementedError(
                f"mcjax.derive(strict=True): no structured rule for the primitive {name!r} at "
                f"{source_line(*self.calls[:1], eqn)}; without strict=True it becomes an opaque "
                "block from jax.linearize (correct, but with no structure)")
        out_tangents = [{} for _ in outs]
        for k in active:
            linear = _linear_map(eqn, ins, k)
            for o, out in enumerate(outs):
                if not is_float(out.value):
                    continue
                block = B.opaque(linear, name, out.shape, ins[k].shape, ins[k].dtype,
                                 out_index=o)
                for leaf, J_in in ins[k].tangents.items():
                    term = compose(block, J_in)
                    t = out_tangents[o]
                    t[leaf] = term if leaf not in t else add(t[leaf], term)
        return [out._replace(tangents=t) for out, t in zip(outs, out_tangents)]


def interpret(jaxpr, consts: list[Operand], ins: list[Operand], strict: bool) -> list[Operand]:
    """Run ``jaxpr`` on operands with derivatives; return the outputs with theirs.  The
    top-level constants come named (the arrays ``f`` closes over)."""
    return Derivation(strict).run(jaxpr, consts, ins)


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
