"""What the checker reads off ``f``'s jaxpr.

- ``max_terms``: the longest sum (contraction, reduction) that builds a value: rounding
  error grows with it, so the thresholds do (``mcjax._core._conventions.check_rtol``).
- ``lowest_precision``: the least precise floating dtype that values depending on the
  argument pass through.  A function that hard-codes float32 evaluated on float64 input still
  rounds to float32; the report says so and the finite-difference steps adapt.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax.extend import core

from mcjax._program._walk import Dependence, equations, sub_jaxprs


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
    return max((equation_terms(eqn) for eqn in equations(jaxpr)), default=1)


def lowest_precision(jaxpr: core.Jaxpr) -> str | None:
    """The least precise floating dtype of any value that depends on ``jaxpr``'s inputs."""
    found: list[str] = []

    def visit(eqn, deps: list[bool]) -> None:
        if not any(deps):
            return
        for var in eqn.outvars:
            dtype = getattr(var.aval, "dtype", None)
            if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
                found.append(np.dtype(dtype).name)
        for sub in sub_jaxprs(eqn):  # a loop's body, a branch, a custom rule's computation
            found.extend(filter(None, [lowest_precision(sub)]))

    Dependence(visit).run(jaxpr, [False] * len(jaxpr.constvars), [True] * len(jaxpr.invars))
    return max(found, key=lambda name: float(jnp.finfo(name).eps), default=None)
