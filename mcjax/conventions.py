"""The conventions of mcjax, stated once: layout, kinks, tolerances, the verified shapes.

- **Layout**: numerator layout, ``J.shape == out.shape + in.shape`` (``mcjax.conventions.LAYOUT``), and the
  conversions ``mcjax.conventions.to_numerator`` / ``mcjax.conventions.to_denominator``;
- **kinks**: what the registry's rules return where a function is not differentiable;
- **tolerances**: the checker's one policy (``mcjax.conventions.check_rtol``, ``mcjax.conventions.check_atol``: how far a
  derivative may be from its reference) and ``mcjax.conventions.tolerance``, a fixed ``(rtol, atol)`` per
  dtype for comparing two computations of one quantity in tests and experiments;
  ``mcjax.conventions.data_parallel_tolerance`` for a run on several devices against one;
- **verification**: the dtypes and shape cases ``mcjax verify`` instantiates rules at.
"""

from mcjax._check._layout import to_denominator, to_numerator
from mcjax._core._conventions import (
    ABS_GRAD_AT_ZERO,
    DTYPES,
    KINK_MARGIN,
    LAYOUT,
    LEAKY_RELU_GRAD_AT_ZERO,
    MAX_TIE_SHARE,
    RELU_GRAD_AT_ZERO,
    SHAPE_CASES,
    Tolerance,
    data_parallel_tolerance,
    tolerance,
)
from mcjax._core._tolerance import KINK_CONVENTIONS, check_atol, check_rtol

__all__ = [
    "LAYOUT",
    "to_numerator",
    "to_denominator",
    "RELU_GRAD_AT_ZERO",
    "LEAKY_RELU_GRAD_AT_ZERO",
    "ABS_GRAD_AT_ZERO",
    "MAX_TIE_SHARE",
    "KINK_CONVENTIONS",
    "check_rtol",
    "check_atol",
    "Tolerance",
    "tolerance",
    "data_parallel_tolerance",
    "DTYPES",
    "SHAPE_CASES",
    "KINK_MARGIN",
]
