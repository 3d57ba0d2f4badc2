"""What the checker reads off ``f``'s jaxpr.

- :func:`max_terms`: the longest sum (contraction, reduction) that builds a value: rounding
  error grows with it, so the thresholds do (``mcjax._core._conventions.check_rtol``).
- :func:`lowest_precision`: the least precise floating dtype that values depending on the
  argument pass through.  A function that hard-codes float32 evaluated on float64 input still
  rounds to float32; the report says so and the finite-difference steps adapt.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax.extend import core

from mcjax._program._walk import sub_jaxprs

CALLS = ("jit", "pjit", "closed_call", "core_call", "remat2", "checkpoint")
"""Primitives that call a jaxpr with their operands (custom rules are not among them)."""


def call_jaxpr(eqn) -> tuple[core.Jaxpr, tuple]:
    """``(jaxpr, consts)`` a call equation (:data:`CALLS`, ``custom_jvp_call``) runs."""
    closed = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    if isinstance(closed, core.ClosedJaxpr):
        return closed.jaxpr, closed.consts
    return closed, ()


def bind(eqn, *args) -> list:
    """``eqn``'s primitive applied to ``args``, as a list of outputs."""
    out = eqn.primitive.bind(*args, **eqn.params)
    return list(out) if eqn.primitive.multiple_results else [out]


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
