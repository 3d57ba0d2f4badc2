"""``mcjax.derive``: Parr & Howard's matrix calculus applied to any JAX function by the machine.

- ``_api``: ``mcjax.derive``, tracing and the shape of the result;
- ``_interpret``: the derivation, a client of the one jaxpr walker (chain rule,
  total-derivative rule, the fallback to JAX's linear map); each primitive's structured
  Jacobian is in the primitive table (``mcjax._primitives``), the structures and their
  algebra in ``mcjax._jacobian``;
- ``_names``: the names of ``f``'s arguments and constants in the formula;
- ``_hessian``: ``mcjax.hessian``, the second derivative read as a structured operator
  (``mcjax._curvature``); ``_gauss_newton``: ``mcjax.gauss_newton``, built on it;
- ``_kfac``, ``_kfac_check``: K-FAC's Kronecker factors of the dense layers found in a loss
  (the same walker), and the check of a user's factors against them.
"""

from mcjax._derive._api import derive
from mcjax._derive._gauss_newton import gauss_newton
from mcjax._derive._hessian import hessian

__all__ = ["derive", "hessian", "gauss_newton"]
