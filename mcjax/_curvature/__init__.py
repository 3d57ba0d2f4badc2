"""Structured symmetric operators for second derivatives (``mcjax.hessian``).

- ``_operator``: the type ``Curvature`` and its one algebra (``mv``, ``dense``,
  ``diagonal``, ``trace``, ``solve``, ``slogdet``, singledispatch functions);
- ``_structures``: the structures, each with the operations it does cheaper registered
  beside it;
- ``_fallback``: Hessian-vector products where no structure was found;
- ``_gauss_newton``: $J^\\top H_L J$ held as its two factors;
- ``_from_jacobian``: a structured Jacobian of a gradient read as one of these.
"""

from mcjax._curvature._fallback import HessianVectorProducts, hessian_vector_products
from mcjax._curvature._from_jacobian import NoStructure, combine, diagonal_grid, from_jacobian
from mcjax._curvature._gauss_newton import GaussNewton, ThroughAffine
from mcjax._curvature._operator import Curvature
from mcjax._curvature._structures import (
    BatchedLowRank,
    BlockDiagonal,
    Dense,
    Diagonal,
    DiagonalGrid,
    DiagonalPlusLowRank,
    Gram,
    Kronecker,
    ScaledIdentity,
    Sum,
)

__all__ = [
    "Curvature", "ScaledIdentity", "Diagonal", "DiagonalPlusLowRank", "BatchedLowRank", "Gram",
    "Kronecker", "DiagonalGrid", "BlockDiagonal", "Sum", "Dense", "HessianVectorProducts",
    "GaussNewton", "ThroughAffine", "NoStructure", "combine", "diagonal_grid", "from_jacobian",
    "hessian_vector_products",
]
