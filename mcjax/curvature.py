"""Structured symmetric operators for second derivatives: what ``mcjax.hessian`` returns.

Each is a ``mcjax.Curvature`` on the flattened argument (``shape == (n, n)``) with ``hvp``,
``dense``, ``solve(b, damping)``, ``diagonal``, ``trace``, ``slogdet``/``logdet``,
``formula``/``latex``, ``nbytes`` and ``to_lineax``, using its structure; all are JAX pytrees.
See the [second-order page](../second-order.md) for each structure's formula and costs.
"""

from mcjax._curvature import (
    BatchedLowRank,
    BlockDiagonal,
    Curvature,
    Dense,
    Diagonal,
    DiagonalGrid,
    DiagonalPlusLowRank,
    GaussNewton,
    Gram,
    HessianVectorProducts,
    Kronecker,
    ScaledIdentity,
    Sum,
    ThroughAffine,
)

__all__ = [
    "Curvature", "ScaledIdentity", "Diagonal", "DiagonalPlusLowRank", "BatchedLowRank", "Gram",
    "Kronecker", "DiagonalGrid", "BlockDiagonal", "Sum", "Dense", "HessianVectorProducts",
    "GaussNewton", "ThroughAffine",
]
