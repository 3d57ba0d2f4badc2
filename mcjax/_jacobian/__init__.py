"""Structured Jacobians: the type, its one algebra, and the formula it prints as.

- ``_algebra``: the type, the chain rule (``compose``), the total-derivative rule (``add``),
  scaling, and the structures the algebra produces (``Zero``, ``ScaledIdentity``,
  ``Composed``, ``Sum``);
- ``_products`` (``Dense`` and products), ``_elementwise``, ``_rearrange``, ``_operations``
  (an operation applied, a selection, a sandwich), ``_opaque``: the other structures, each with its operations registered beside it;
- ``_build``: the constructors rules build with; ``_expr``, ``_sym``, ``_print``,
  ``_formula``: the formula a person would write.

Importing this package registers every structure's operations.
"""

from mcjax._jacobian._algebra import (
    Composed,
    Jacobian,
    ScaledIdentity,
    Sum,
    Zero,
    densify,
)
from mcjax._jacobian._elementwise import Broadcast, Diagonal, Fill
from mcjax._jacobian._opaque import Opaque
from mcjax._jacobian._operations import Applied, Sandwich, Take
from mcjax._jacobian._products import BlockDiagonal, Contraction, Dense, Kronecker
from mcjax._jacobian._rearrange import Embed, Expand, Permutation, Reshape, Slice, SumAlong

__all__ = [
    "Jacobian", "Dense", "Diagonal", "ScaledIdentity", "Fill", "Broadcast", "Kronecker",
    "BlockDiagonal", "Composed", "Sum", "Zero", "Permutation", "Reshape", "Slice", "Embed",
    "Expand", "SumAlong", "Contraction", "Applied", "Take", "Sandwich", "Opaque", "densify",
]
