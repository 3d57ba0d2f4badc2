r"""Rules shared by families: a primitive linear in an operand, and derivatives whose pattern
is known while JAX supplies the numbers.

- ``linear``: the Jacobian of a primitive that is linear (or affine) in an operand is the
  primitive applied to the tangent, the other operands held (``mcjax.Applied``);
- ``picked``: where JAX's own derivative picks one input entry per output entry (a max
  pool's winner, a sort's order, a top-k), the positions it picks, read off JAX's JVP by
  pushing the tangent ``1, 2, 3, ...`` through it: a ``mcjax.Take``;
- ``weights``: for a reduction each input entry feeds one output entry, so the Jacobian
  is a sum over the reduced axes after a diagonal, whose numbers JAX's VJP of ones gives
  exactly (ties sharing as JAX shares them).

Each is exact by construction: the pattern is the primitive's, the numbers are JAX's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._jacobian import _build as B
from mcjax._jacobian import _expr as E
from mcjax._jacobian._sym import Sym
from mcjax._primitives._table import Eqn, is_float
from mcjax._program._trace import has_tracers


def operation(e: Eqn, written: str = "", params: dict | None = None, **options) -> B.Operation:
    return B.Operation.of(e.primitive, e.params if params is None else params, written, **options)


def traced(fn, *args, written: str = "") -> B.Operation:
    """The one primitive ``fn`` binds (a lax function), with its parameters, as JAX traces it
    at ``args``: JAX's own way of writing an operation (``lax.scatter_add`` with a scatter's
    indices), never its private constructors."""
    (eqn,) = jax.make_jaxpr(fn)(*args).jaxpr.eqns
    return B.Operation.of(eqn.primitive, eqn.params, written)


def linear(written: str = "", affine: tuple[int, ...] | str = (),
           shown: tuple[int, ...] | None = None, tangent_params=None,
           slots: tuple[int, ...] | None = None):
    """A rule for a primitive linear in each differentiable operand given the others.

    Args:
      written: how the operation is written (default: the primitive's name).
      affine: operands the output depends on affinely: held at zero while another operand's
        Jacobian is applied (``dynamic_update_slice(v, 0)``, ``pad(v, 0)``); ``"all"`` for a
        primitive linear in all its operands together (``stack``).
      shown: the held operands whose expressions the formula shows (default: all).
      tangent_params: ``params -> params`` of the operation on tangents, where they differ
        from the primal's (a gather out of bounds fills a value with NaN, its tangent with 0).
      slots: the operands it is linear in (default: every floating one); the others have no
        derivative (``select_and_scatter_add``'s operand only chooses).
    """

    def rule(e: Eqn):
        per_output = []
        for o, out in enumerate(e.outs):
            partials = {}
            zeroed = tuple(range(len(e.ins))) if affine == "all" else tuple(affine)
            for k in e.active:
                if not is_float(e.ins[k].value) or not is_float(out.value) or (
                        slots is not None and k not in slots):
                    continue
                held = [None if j == k else jnp.zeros_like(op.value) if j in zeroed else op.value
                        for j, op in enumerate(e.ins)]
                exprs = [op.expr for j, op in enumerate(e.ins) if j != k and j not in zeroed
                         and (shown is None or j in shown)]
                params = tangent_params(e.params) if tangent_params else None
                several = len(e.outs) > 1 or e.primitive.multiple_results
                partials[k] = B.applied(operation(e, written, params), held, k, e.ins[k].shape,
                                        out.shape, out.dtype, exprs, o if several else None,
                                        in_dtype=jnp.result_type(e.ins[k].value))
            per_output.append(partials)
        return per_output if len(e.outs) > 1 else per_output[0]

    rule.real_linear = True  # right on complex values too: a linear map applied again
    return rule


def _jointly(e: Eqn, values, k: int) -> list[int]:
    """The operands a rule differentiates together with operand ``k``: those the argument
    moves (a zero array for the others among them, not JAX's symbolic zero, which some rules
    cannot take: a variadic ``reduce`` differentiated in one operand gets all its operands,
    never its initial values); the rest are held, as JAX holds what does not move (its rules
    refuse any tangent on some operands: ``polygamma``'s order)."""
    if e.name == "reduce":
        count = len(values) // 2
        return [j for j, v in enumerate(values[:count]) if is_float(v)]
    return sorted({k} | {j for j in e.active if is_float(values[j])})


def jvp_along(e: Eqn, k: int, tangent, values=None) -> list:
    """JAX's JVP of the equation with ``tangent`` on operand ``k`` and zero on the other
    operands it differentiates (see ``_jointly``); the output tangents."""
    values = [op.value for op in e.ins] if values is None else values
    floating = _jointly(e, values, k)

    def of(*xs):
        new = list(values)
        for j, x in zip(floating, xs):
            new[j] = x
        return e.apply(new)

    tangents = [tangent if j == k else jnp.zeros_like(values[j]) for j in floating]
    _, out = jax.jvp(of, [values[j] for j in floating], tangents)
    return out


def vjp_of(e: Eqn, k: int, cotangent, out_index: int = 0):
    """JAX's VJP of output ``out_index`` of the equation, at ``cotangent``, for operand ``k``
    (taken jointly in every floating operand, as ``jvp_along``)."""
    values = [op.value for op in e.ins]
    floating = _jointly(e, values, k)

    def of(*xs):
        new = list(values)
        for j, x in zip(floating, xs):
            new[j] = x
        return e.apply(new)[out_index]

    _, pullback = jax.vjp(of, *(values[j] for j in floating))
    return pullback(cotangent)[floating.index(k)]


def _probe_dtype(n: int, native):
    """A float dtype that holds the integers up to ``n`` exactly: the operand's own, else a
    wider one (None if there is none)."""
    for dtype in (native, jnp.float32, jnp.float64):
        if dtype == jnp.float64 and not jax.config.read("jax_enable_x64"):
            continue
        if n + 1 < 2 ** (jnp.finfo(dtype).nmant + 1):
            return jnp.dtype(dtype)
    return None


def concrete(*arrays) -> bool:
    """Whether the arrays hold numbers now (not traced under ``jax.jit``)."""
    return not has_tracers(arrays)


def picked(e: Eqn, k: int, out_index: int = 0, check: bool = False):
    """The flat position in operand ``k`` each entry of output ``out_index`` takes its
    derivative from (-1: none), read off JAX's JVP; None when it is no pure selection there
    (``check``: JAX shares the derivative at a tie) or the positions do not fit a float."""
    x = e.ins[k].value
    wide = _probe_dtype(x.size, jnp.result_type(x))
    if wide is None or (wide != jnp.result_type(x) and any(
            k in e.params for k in ("jaxpr", "update_jaxpr"))):  # a typed computation inside
        return None
    values = [op.value.astype(wide) if is_float(op.value) else op.value for op in e.ins]
    tangent = (jnp.arange(x.size, dtype=wide) + 1).reshape(x.shape)
    t = jvp_along(e, k, tangent, values)[out_index]
    if check:
        if not concrete(t) or not bool(np.all(np.asarray(t) == np.round(np.asarray(t)))):
            return None
    return (jnp.round(t) - 1).astype(jnp.int32)


def weights(e: Eqn, k: int, out_index: int = 0) -> Sym:
    """For a reduction: $\\partial y / \\partial x_i$ for each entry ``i`` of operand ``k``
    (each feeds one output entry), from JAX's VJP of ones."""
    w = vjp_of(e, k, jnp.ones_like(e.outs[out_index].value), out_index)
    return Sym(w, E.call(f"∂{e.name}", e.ins[k].expr))


# -- affine primitives: where a program stops being affine in its argument ---------------------
AFFINE_JOINTLY = frozenset({
    "add", "add_any", "sub", "neg", "reshape", "broadcast_in_dim", "transpose", "squeeze",
    "expand_dims", "slice", "concatenate", "pad", "reduce_sum", "convert_element_type", "copy",
    "copy_p", "rev", "cumsum", "dynamic_slice", "dynamic_update_slice", "gather",
    "scatter-add", "scatter_add", "select_n", "reduce_window_sum", "split", "tile",
    "sharding_constraint", "device_put"})
"""Primitives affine in all their floating operands together (their integer operands, the
indices of a gather or a slice, and ``select_n``'s predicate must not depend on the argument:
the reader checks).  A sum of affine maps, a reshaping, a selection of entries."""

AFFINE_IN_ONE = {"mul": (0, 1), "dot_general": (0, 1), "conv_general_dilated": (0, 1),
                 "div": (0,)}
"""Primitives affine in one operand while the other is held (a product, a quotient by a
constant): affine when exactly one operand depends on the argument and it is one of these."""


SELECTIONS = frozenset({"slice", "reshape", "squeeze", "expand_dims", "transpose", "rev",
                        "dynamic_slice", "gather", "copy", "copy_p", "convert_element_type",
                        "sharding_constraint", "device_put", "split", "concatenate",
                        "broadcast_in_dim", "pad", "select_n"})
"""Affine primitives whose every output entry is one entry of an operand (or a constant):
they only select, move or copy the argument's entries (``ravel_pytree``'s unravelling)."""


def affine_in(name: str, dependent: tuple[int, ...]) -> bool:
    """Whether primitive ``name`` is affine in its operands ``dependent`` (those that depend
    on the argument) with its other operands held."""
    if name in AFFINE_JOINTLY:
        return True
    return len(dependent) == 1 and dependent[0] in AFFINE_IN_ONE.get(name, ())
