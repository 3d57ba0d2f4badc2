"""The one table of primitive knowledge (see ``_table``), filled family by family.

Importing this package fills the table: ``lookup(name)`` is what mcjax knows of a primitive.
Its rules build structured Jacobians (``mcjax._jacobian``) and read programs with the walker
(``mcjax._program``): it stands above both.
"""

from mcjax._primitives import (  # noqa: F401 (each module registers its family)
    _control,
    _effects,
    _elementwise,
    _indexing,
    _known,
    _linalg,
    _logic,
    _products,
    _reductions,
    _shape,
    _special,
    _windows,
)
from mcjax._primitives._coverage import coverage, differentiable_primitives
from mcjax._primitives._table import (
    TABLE,
    Eqn,
    Operand,
    Primitive,
    Slips,
    V,
    is_float,
    lookup,
    output_expr,
)

__all__ = ["coverage", "differentiable_primitives", "TABLE", "Eqn", "Operand", "Primitive", "Slips", "V", "is_float", "lookup",
           "output_expr"]
