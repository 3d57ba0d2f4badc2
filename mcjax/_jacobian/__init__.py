"""Structured Jacobians: the type, its algebra, and the formula it prints as.

- ``_structures``: the classes (a diagonal, a Kronecker block, a permutation, ...);
- ``_algebra`` and ``_pull``: composing (the vector chain rule), adding (the total-derivative
  rule) and scaling, simplifying where the structure allows;
- ``_build``: the classes with their formulas attached (the simplest class that is the map);
- ``_expr``, ``_sym``, ``_print``, ``_formula``: the formula a person would write.
"""

from mcjax._jacobian._structures import (
    BlockDiagonal,
    Broadcast,
    Composed,
    Contraction,
    Dense,
    Diagonal,
    Embed,
    Expand,
    Fill,
    Jacobian,
    Kronecker,
    Opaque,
    Permutation,
    Reshape,
    ScaledIdentity,
    Slice,
    Sum,
    SumAlong,
    Zero,
    densify,
)

__all__ = [
    "Jacobian", "Dense", "Diagonal", "ScaledIdentity", "Fill", "Broadcast", "Kronecker",
    "BlockDiagonal", "Composed", "Sum", "Zero", "Permutation", "Reshape", "Slice", "Embed",
    "Expand", "SumAlong", "Contraction", "Opaque", "densify",
]
