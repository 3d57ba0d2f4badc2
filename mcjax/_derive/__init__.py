"""``mcjax.derive``: Parr & Howard's matrix calculus applied to any JAX function by the machine.

- ``_api``: :func:`derive`, tracing and the shape of the result;
- ``_interpret``: the jaxpr interpreter (chain rule, total-derivative rule, opaque blocks);
- ``_rules`` and ``_rules_*``: the structured Jacobian of each primitive, one line each;
- ``_algebra`` and ``_pull``: composing, adding and scaling structured Jacobians, simplifying;
- ``_build``: the Jacobian classes with their formulas attached;
- ``_expr``, ``_sym``, ``_names``, ``_print``, ``_formula``: the formula a person would write.
"""

from mcjax._derive._api import derive
from mcjax._jacobian._formula import formula, structure

__all__ = ["derive", "formula", "structure"]
