"""The constructors a rule builds Jacobians with, in one namespace (``B.diagonal(d, ...)``).

Each takes ``Sym`` values (array and expression) and returns the
simplest class that is the map, with its formula attached (``symbols``).
"""

from mcjax._jacobian._algebra import (
    add,
    as_dtype,
    compose,
    identity,
    is_identity,
    scaled_identity,
    sym,
    symbol,
    zero,
)
from mcjax._jacobian._elementwise import diagonal, fill
from mcjax._jacobian._opaque import Opaque as opaque
from mcjax._jacobian._operations import Operation, applied, sandwich, take
from mcjax._jacobian._products import block_diagonal, contraction, dense, kronecker
from mcjax._jacobian._rearrange import embed, expand, permutation, reshape, slice_, sum_along

__all__ = [
    "add", "compose", "as_dtype", "dense", "identity", "is_identity", "scaled_identity", "sym", "symbol", "zero",
    "diagonal", "fill", "opaque", "block_diagonal", "contraction", "kronecker", "embed",
    "expand", "permutation", "reshape", "slice_", "sum_along", "Operation", "applied",
    "sandwich", "take",
]
