r"""The derivation: ``f``'s jaxpr, equation by equation, with structured Jacobians.

A client of the one walker (``mcjax._program._walk``).  Each value of the program carries
its array, its expression, and its derivative with respect to each leaf of the differentiated
argument (absent where it does not depend on it).  An equation's local Jacobians (from the
primitive table, ``mcjax._primitives``) are chained onto its operands' derivatives
by the vector chain rule, and the paths that meet in one value are added by the
total-derivative rule (Parr & Howard §4.5) — forward accumulation, as ``jax.jacfwd``, but on
structures.

Nested ``jit`` calls are walked inside, except JAX's own library functions the table knows by
name (``jnp.linalg.inv``: $-A^{-1}(\cdot)A^{-1}$); ``custom_jvp`` functions the table knows
(``relu``, ``logaddexp``) use their structured rule, which follows JAX's derivative at the
kink.  ``lax.cond`` walks the branch taken (every branch, weighted by the indicator of its
index, when the index is traced); ``lax.scan`` and a ``while`` loop with a known trip count
are unrolled.  Anything else is the table's fallback: the linear map JAX gives that one
equation, marked with its name (``mcjax.Opaque``): correct, unstructured.  With
``strict=True`` it is an error instead.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mcjax._derive._names import written
from mcjax._jacobian import _build as B
from mcjax._jacobian import _expr as E
from mcjax._jacobian._algebra import add, compose, scale
from mcjax._jacobian._sym import Sym
from mcjax._primitives import Eqn, Operand, is_float, lookup, output_expr
from mcjax._primitives._linear import concrete
from mcjax._program._walk import Interpreter, bind, callee_name, from_jax, source_line

SCAN_UNROLL = 256
"""A ``lax.scan`` of at most this many steps is unrolled (its Jacobian a product of the
body's, one per step); a longer one is JAX's linear map."""
WHILE_UNROLL = 1024
"""A ``while`` loop is unrolled (at concrete values) for at most this many steps."""


class Derivation(Interpreter[Operand]):
    """The walk of ``f``'s program that carries each value's structured derivative."""

    def __init__(self, strict: bool):
        super().__init__()
        self.strict = strict

    def literal(self, value) -> Operand:
        return Operand(value, written(value))

    def constant(self, value) -> Operand:
        if isinstance(value, Operand):  # f's own constants, named by the caller
            return value
        return Operand(value, written(value))

    def custom(self, eqn, ins: list[Operand]) -> list[Operand]:
        """A custom rule: by name where the table knows it; a ``custom_jvp`` rule otherwise
        by walking the rule itself (its Jacobian is the rule's, structured); a
        ``custom_vjp`` by JAX's map of it."""
        entry = lookup(f"{eqn.primitive.name}:{callee_name(eqn)}")
        if entry is None and eqn.primitive.name == "custom_jvp_call" and any(
                op.tangents for op in ins):
            walked = self._jvp_rule(eqn, ins)
            if walked is not None:
                return walked
        return self.primitive(eqn, ins)

    def _jvp_rule(self, eqn, ins: list[Operand]) -> list[Operand] | None:
        """A ``custom_jvp`` function's derivative by walking its JVP rule: the rule's output
        tangents as structured Jacobians of its input tangents (the rule is linear in them),
        chained onto the operands' derivatives."""
        consts = eqn.params["num_consts"]
        primals = ins[consts:]
        zeros = [not (op.tangents and is_float(op.value)) for op in primals]
        try:
            rule, rule_consts, out_zeros = eqn.params["jvp_jaxpr_fun"].call_wrapped(*zeros)
        except Exception:  # noqa: BLE001 - a rule JAX cannot trace here: JAX's map of the call
            return None
        tangent_ins = [Operand(jnp.zeros_like(op.value), E.arg(f"d{k}", f"d{k}", op.shape),
                               {k: B.identity(op.shape, op.dtype)})
                       for k, op in enumerate(primals) if not zeros[k]]
        inner = Derivation(self.strict)
        inner.calls = self.calls + [eqn]
        walked = inner.run(rule, list(rule_consts),
                           [Operand(op.value, op.expr) for op in primals] + tangent_ins)
        values = bind(eqn, [op.value for op in ins])
        name = callee_name(eqn)
        expr_args = tuple(op.expr for op in primals)
        out_tangents = iter(walked[len(out_zeros):])
        outs = []
        for value, zero in zip(values, out_zeros):
            expr = E.call(name, *expr_args, shape=jnp.shape(value))
            rule_out = None if zero else next(out_tangents)
            if rule_out is None or not is_float(value):
                outs.append(Operand(value, expr))
                continue
            partials = {consts + k: J for k, J in rule_out.tangents.items()}
            outs.append(Operand(value, expr, _chain(partials, ins)))
        return outs

    def inline(self, eqn, ins: list[Operand]) -> list[Operand]:
        """A call: JAX's own library function known by name (``jnp.linalg.inv``) by its
        rule, anything else by walking its body."""
        entry = lookup(f"{eqn.primitive.name}:{callee_name(eqn)}")
        if entry is not None and entry.jacobian is not None and from_jax(eqn):
            outs = self._apply_rule(eqn, ins, entry, walk_otherwise=True)
            if outs is not None:
                return outs
        return super().inline(eqn, ins)

    def primitive(self, eqn, ins: list[Operand]) -> list[Operand]:
        name = eqn.primitive.name
        if name in ("cond", "scan", "while") and any(op.tangents for op in ins):
            walked = getattr(self, "_" + name)(eqn, ins)
            if walked is not None:
                return walked
        entry = lookup(f"{name}:{callee_name(eqn)}" if name.startswith("custom_") else name)
        outs = self._apply_rule(eqn, ins, entry)
        assert outs is not None  # None only when walking the body is the alternative
        return outs

    def _apply_rule(self, eqn, ins, entry, walk_otherwise: bool = False):
        """The equation's outputs with their derivatives by ``entry``'s rule; the fallback
        where it has none (None instead, with ``walk_otherwise``: the body is walked)."""
        shown = callee_name(eqn) if entry is None else entry.name.split(":")[-1]
        values = bind(eqn, [op.value for op in ins])
        outs = [Operand(v, output_expr(entry.name if entry else shown, tuple(ins), jnp.shape(v),
                                       eqn.params)) for v in values]
        if eqn.primitive.name == "transpose" and tuple(eqn.params["permutation"]) == (1, 0):
            outs[0] = outs[0]._replace(transposed=(ins[0], (1, 0)))
        active = tuple(k for k, op in enumerate(ins) if op.tangents)
        if not active or not any(is_float(v) for v in values):
            return outs
        partials = None
        if entry is not None and entry.jacobian is not None and not _complex_beyond(
                entry, ins, values):
            partials = entry.jacobian(Eqn(entry.name, tuple(ins), outs[0], dict(eqn.params),
                                          active, tuple(outs), lambda vals: bind(eqn, vals),
                                          eqn.primitive))
        if isinstance(partials, dict) and sum(is_float(v) for v in values) > 1:
            # one output's derivative where several depend on the argument (a jitted ``inv``
            # that also returns its LU factors, as a gradient's program does): the others
            # would pass as constants, so the rule does not cover this equation
            partials = None
        if partials is None:
            if walk_otherwise:
                return None
            return self._opaque(eqn, shown, ins, outs, active,
                                entry.fallback if entry is not None else "")
        per_output = partials if isinstance(partials, list) else [partials]
        return [out._replace(tangents=_chain(p, ins)) if is_float(out.value) else out
                for out, p in zip(outs, per_output)] + outs[len(per_output):]

    def _opaque(self, eqn, name, ins, outs, active, reason: str) -> list[Operand]:
        """Each output's derivative through JAX's linear map of this one equation, named."""
        if self.strict:
            why = f" ({reason})" if reason else ""
            raise NotImplementedError(
                f"mcjax.derive(strict=True): no structured rule for the primitive {name!r}"
                f"{why} at {source_line(*self.calls[:1], eqn)}; without strict=True it becomes "
                "an opaque block from JAX's linear map of it (correct, but with no structure)")
        out_tangents = [{} for _ in outs]
        for k in active:
            linear = _linear_map(eqn, ins, k, active)
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

    # -- control flow: walked ---------------------------------------------------------------
    def _cond(self, eqn, ins):
        """The branch taken; with a traced index, every branch weighted by the indicator of
        its index (their values are the cond's own)."""
        index, *operands = ins
        branches = eqn.params["branches"]
        if concrete(index.value):
            taken = branches[int(index.value)]
            return self.run(taken.jaxpr, taken.consts, operands)
        walked = [self.run(b.jaxpr, b.consts, operands) for b in branches]
        values = bind(eqn, [op.value for op in ins])
        outs = []
        for o, value in enumerate(values):
            tangents: dict = {}
            for k, branch in enumerate(walked):
                for leaf, J in branch[o].tangents.items():  # in J's dtype (not the value's:
                    # JAX's residuals of a branch may be placeholders of another dtype)
                    chosen = Sym((index.value == k).astype(J.dtype),
                                 E.indicator(E.compare("==", index.expr, E.num(k))))
                    term = scale(_finite_unless(index.value == k, J), chosen)
                    tangents[leaf] = term if leaf not in tangents else add(tangents[leaf], term)
            expr = E.call("cond", index.expr, *(b[o].expr for b in walked), shape=jnp.shape(value))
            outs.append(Operand(value, expr, tangents if is_float(value) else {}))
        return outs

    def _scan(self, eqn, ins):
        """The body once per step (a product of its Jacobians); None past
        ``SCAN_UNROLL`` steps."""
        p = eqn.params
        length, consts_n, carry_n = p["length"], p["num_consts"], p["num_carry"]
        if length > SCAN_UNROLL:
            return None
        body = p["jaxpr"]
        consts, carry, xs = ins[:consts_n], ins[consts_n:consts_n + carry_n], \
            ins[consts_n + carry_n:]
        ys: dict[int, list] = {}
        for i in (reversed(range(length)) if p["reverse"] else range(length)):
            outs = self.run(body.jaxpr, body.consts, consts + carry + [_row(x, i) for x in xs])
            carry, ys[i] = outs[:carry_n], outs[carry_n:]
        stacked = [_stack([ys[i][j] for i in range(length)]) for j in range(len(ys[0]))] \
            if length else [Operand(v, E.opaque("scan", (), jnp.shape(v)))
                            for v in bind(eqn, [op.value for op in ins])[carry_n:]]
        return list(carry) + stacked

    def _while(self, eqn, ins):
        """The body while the condition holds, at concrete values; None when traced or past
        ``WHILE_UNROLL`` steps."""
        p = eqn.params
        if not concrete(*(op.value for op in ins)):
            return None
        cond_n, body_n = p["cond_nconsts"], p["body_nconsts"]
        cond_consts, body_consts = ins[:cond_n], ins[cond_n:cond_n + body_n]
        carry = ins[cond_n + body_n:]
        cond, body = p["cond_jaxpr"], p["body_jaxpr"]
        for _ in range(WHILE_UNROLL):
            (go,) = self.run(cond.jaxpr, cond.consts, cond_consts + carry)
            if not bool(go.value):
                return carry
            carry = self.run(body.jaxpr, body.consts, body_consts + carry)
        return None


def _complex_beyond(entry, ins: list[Operand], values) -> bool:
    """A complex operand or output where the rule is not a linear map applied again: the
    structured rules are the real ones (``|z|``'s is not ``diag(sign z)``), so JAX's own
    linear map of the equation stands in (an FFT, ``real``, a cast to complex keep theirs)."""
    if getattr(entry.jacobian, "real_linear", False):
        return False
    return any(jnp.issubdtype(jnp.result_type(v), jnp.complexfloating)
               for v in [op.value for op in ins] + list(values))


def _chain(partials: dict, ins: list[Operand]) -> dict:
    """The output's derivative: each operand's, times the local Jacobian (the vector chain
    rule), summed over the operands (the total-derivative rule)."""
    chained: dict = {}
    for source, J in partials.items():
        # an int: the operand; ("source", k): the value operand k is the transpose of
        t = ins[source].tangents if isinstance(source, int) else \
            ins[source[1]].transposed[0].tangents
        for leaf, J_in in t.items():
            term = compose(J, J_in)
            chained[leaf] = term if leaf not in chained else add(chained[leaf], term)
    return chained


def _finite_unless(taken, J):
    """``J`` with its non-finite numbers made 0 where its branch is not ``taken``: a branch
    not taken is evaluated at a point outside its domain (a division by 0 the other branch
    guards against), and ``0 · inf`` would make the weighted sum of branches NaN."""
    def clean(a):
        if not (hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.inexact)):
            return a
        return jnp.where(taken | jnp.isfinite(a), a, jnp.zeros_like(a))

    return jax.tree_util.tree_map(clean, J)


def _row(x: Operand, i: int) -> Operand:
    """``x[i]`` (a scan's slice of its inputs), with its derivative."""
    shape = x.shape
    start = (i,) + (0,) * (len(shape) - 1)
    limit = (i + 1,) + tuple(shape[1:])
    J = compose(B.reshape(shape[1:], (1,) + tuple(shape[1:]), x.dtype),
                B.slice_(start, limit, None, shape, x.dtype)) if is_float(x.value) else None
    return Operand(x.value[i], E.part(x.expr, f"[{i}]", f"_{{{i}}}", shape[1:]),
                   {leaf: compose(J, t) for leaf, t in x.tangents.items()} if J else {})


def _stack(rows: list[Operand]) -> Operand:
    """The rows stacked (a scan's outputs), with their derivative: each row put in place."""
    value = jnp.stack([r.value for r in rows])
    shape = value.shape
    tangents: dict = {}
    for i, r in enumerate(rows):
        if not r.tangents:
            continue
        start = (i,) + (0,) * (len(shape) - 1)
        place = compose(B.embed(start, None, shape, (1,) + shape[1:], value.dtype),
                        B.reshape((1,) + shape[1:], shape[1:], value.dtype))
        for leaf, J in r.tangents.items():
            term = compose(place, J)
            tangents[leaf] = term if leaf not in tangents else add(tangents[leaf], term)
    return Operand(value, E.call("stack", *(r.expr for r in rows), shape=shape), tangents)


def interpret(jaxpr, consts: list[Operand], ins: list[Operand], strict: bool) -> list[Operand]:
    """Run ``jaxpr`` on operands with derivatives; return the outputs with theirs.  The
    top-level constants come named (the arrays ``f`` closes over)."""
    return Derivation(strict).run(jaxpr, consts, ins)


def _linear_map(eqn, operands, k: int, active: tuple[int, ...]):
    """``v -> [d out_o]`` for a tangent ``v`` of operand ``k``, as a pytree ``Partial``.

    The equation is linearized in the operands the argument moves, together (zero arrays for
    the others' tangents, never JAX's symbolic zeros, which some rules cannot take:
    ``custom_linear_solve``, a variadic ``reduce``), or failing that in operand ``k`` alone;
    a ``custom_vjp`` call has no forward mode and a ``while`` loop no reverse mode: their maps
    are dense, from whichever they have."""
    values = [op.value for op in operands]

    def in_one(x):
        return bind(eqn, values[:k] + [x] + values[k + 1:])

    if eqn.primitive.name == "custom_vjp_call":  # no forward mode: build it from reverse mode
        return _dense_map(in_one, values[k])
    if eqn.primitive.name == "while":  # forward mode only: column by column
        return _forward_map(in_one, values[k])
    moving = [j for j in active if is_float(values[j])]

    def f(*xs):
        new = list(values)
        for j, x in zip(moving, xs):
            new[j] = x
        return bind(eqn, new)

    try:
        _, linear = jax.linearize(f, *(values[j] for j in moving))
    except Exception:  # noqa: BLE001 - a rule that refuses a tangent: this operand alone
        try:
            return jax.linearize(in_one, values[k])[1]
        except Exception:  # noqa: BLE001 - JAX linearizes no further (a window reduction by
            return _forward_map(in_one, values[k])  # its own computation): forward mode
    zeros = [jnp.zeros_like(values[j]) for j in moving]
    # the slot is static (in the Partial's function), not a leaf: a Jacobian goes through jit
    return jax.tree_util.Partial(functools.partial(_in_slot, moving.index(k)), linear, zeros)


def _in_slot(slot, linear, zeros, v):
    tangents = list(zeros)
    tangents[slot] = v
    return linear(*tangents)


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


def _forward_map(f, x):
    n = jnp.size(x)
    basis = jnp.eye(n, dtype=jnp.result_type(x)).reshape((n,) + jnp.shape(x))
    columns = jax.vmap(lambda v: jax.jvp(f, (x,), (v,))[1])(basis)  # per output: (n,) + out
    return jax.tree_util.Partial(_apply, [jnp.moveaxis(c.reshape((n, -1)), 0, 1).reshape(
        jnp.shape(c)[1:] + jnp.shape(x)) for c in columns])
