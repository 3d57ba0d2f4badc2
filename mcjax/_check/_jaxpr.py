"""What the checker reads off ``f``'s jaxpr.

- :func:`max_terms`: the longest sum (contraction, reduction) that builds a value: rounding
  error grows with it, so the thresholds do (``mcjax._conventions.check_rtol``).
- :func:`lowest_precision`: the least precise floating dtype that values depending on the
  argument pass through.  A function that hard-codes float32 evaluated on float64 input still
  rounds to float32; the report says so and the finite-difference steps adapt.
- :func:`ungated`: ``f`` with every gate (``max(z, 0)``, ``where(mask, z, 0)``) made
  straight-through: same values, derivative 1 through the gate.  A derivative that matches
  *this* function's Jacobian forgot a gate or mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core


def sub_jaxprs(eqn) -> Iterator[core.Jaxpr]:
    """The jaxprs an equation calls (pjit, cond branches, scan bodies, custom rules)."""
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, core.Jaxpr):
                yield item


def _shape(var) -> tuple[int, ...]:
    return tuple(getattr(var.aval, "shape", ()))


def equation_terms(eqn) -> int:
    """How many terms one sum of ``eqn`` adds up (1 for an equation that sums nothing)."""
    name = eqn.primitive.name
    if name == "dot_general":
        (contract, _), _ = eqn.params["dimension_numbers"]
        lhs = _shape(eqn.invars[0])
        return math.prod(lhs[d] for d in contract)
    if name in ("reduce_sum", "reduce_prod", "argmax", "argmin"):
        shape = _shape(eqn.invars[0])
        return math.prod(shape[a] for a in eqn.params.get("axes", ()))
    if name in ("cumsum", "cumprod", "cumlogsumexp"):
        return _shape(eqn.invars[0])[eqn.params["axis"]]
    if name == "conv_general_dilated":
        return math.prod(_shape(eqn.invars[1]))
    return 1


def max_terms(jaxpr: core.Jaxpr) -> int:
    """The largest number of terms any one sum in ``jaxpr`` (or its sub-jaxprs) adds up."""
    best = 1
    for eqn in jaxpr.eqns:
        best = max(best, equation_terms(eqn), *(max_terms(sub) for sub in sub_jaxprs(eqn)))
    return best


def lowest_precision(jaxpr: core.Jaxpr, dependent: set | None = None) -> str | None:
    """The least precise floating dtype of any value that depends on ``jaxpr``'s inputs."""
    dependent = set(jaxpr.invars) if dependent is None else dependent
    worst, worst_eps = None, 0.0
    for eqn in jaxpr.eqns:
        if not any(isinstance(v, core.Var) and v in dependent for v in eqn.invars):
            continue
        candidates = []
        for var in eqn.outvars:
            dependent.add(var)
            dtype = getattr(var.aval, "dtype", None)
            if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
                candidates.append(np.dtype(dtype).name)
        for sub in sub_jaxprs(eqn):
            inner = lowest_precision(sub, set(sub.invars))
            if inner:
                candidates.append(inner)
        for name in candidates:
            eps = float(jnp.finfo(name).eps)
            if eps > worst_eps:
                worst, worst_eps = name, eps
    return worst


# -- the straight-through evaluation of f --------------------------------------------------
_GATES = ("max", "min")


def _straight_through(gated, through):
    """Value of ``gated``, derivative of ``through``."""
    return through + jax.lax.stop_gradient(gated - through)


def _eval(jaxpr: core.Jaxpr, consts, args, dependent_in) -> list:
    env, dependent = {}, set()

    def read(v):
        return v.val if isinstance(v, core.Literal) else env[v]

    for var, value in zip(jaxpr.constvars, consts):
        env[var] = value
    for var, value, dep in zip(jaxpr.invars, args, dependent_in):
        env[var] = value
        if dep:
            dependent.add(var)
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        deps = [isinstance(v, core.Var) and v in dependent for v in eqn.invars]
        name = eqn.primitive.name
        if name in _GATES and sum(deps) == 1:
            out = [_straight_through(eqn.primitive.bind(*invals, **eqn.params), invals[deps.index(True)])]
        elif name == "select_n" and sum(deps[1:]) == 1:
            through = invals[1 + deps[1:].index(True)]
            gated = eqn.primitive.bind(*invals, **eqn.params)
            out = [_straight_through(gated, jnp.broadcast_to(through, gated.shape))]
        elif name == "custom_jvp_call":
            closed = eqn.params["call_jaxpr"]
            out = _eval(closed.jaxpr, closed.consts, invals, deps)
        elif name in ("jit", "pjit", "closed_call", "core_call"):
            closed = eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr")
            inner = closed.jaxpr if isinstance(closed, core.ClosedJaxpr) else closed
            consts_ = closed.consts if isinstance(closed, core.ClosedJaxpr) else ()
            out = _eval(inner, consts_, invals, deps)
        else:
            out = eqn.primitive.bind(*invals, **eqn.params)
            out = out if eqn.primitive.multiple_results else [out]
        for var, value in zip(eqn.outvars, out):
            env[var] = value
            if any(deps):
                dependent.add(var)
    return [read(v) for v in jaxpr.outvars]


def ungated(fn: Callable) -> Callable:
    """``fn`` (of one array) with its gates straight-through; same values, other derivative."""

    def wrapped(x):
        closed = jax.make_jaxpr(fn)(x)
        (out,) = _eval(closed.jaxpr, closed.consts, [x], [True])
        return out

    return wrapped
