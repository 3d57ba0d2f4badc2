"""``Jacobian.leading_batch``: the leading axes a structure is block diagonal along, which
``mcjax.hessian`` reads to hold a batch's Hessian as one block per example.  Each structure's
claim is checked against its dense form: block diagonal along the axes it names, and not along
one more (the claim is exact, so an over-claim, which would drop entries of a Hessian, fails
here before it reaches a result)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

import mcjax
from mcjax._jacobian import _algebra as A
from mcjax._jacobian._products import BlockDiagonal, Contraction, Kronecker
from mcjax._jacobian._rearrange import Embed, Expand, Permutation, Reshape, Slice, SumAlong

F64 = jnp.float64


def _arr(*shape):
    return jnp.asarray(np.random.default_rng(len(shape)).standard_normal(shape) + 2.0, F64)


def cases():
    """``name -> (Jacobian, its leading batch)``."""
    dims = (((2,), (1,)), ((0,), (0,)))  # a batched matrix-vector product over axis 0
    return {
        "diagonal": (mcjax.Diagonal(_arr(2, 3)), 2),
        "scaled_identity": (A.ScaledIdentity(jnp.asarray(2.0, F64), (2, 3)), 2),
        "zero": (A.Zero((2, 4), (2, 3), F64), 1),
        "permutation_of_trailing_axes": (Permutation((0, 2, 1), (2, 3, 4), F64), 1),
        "permutation_of_leading_axes": (Permutation((1, 0, 2), (2, 3, 4), F64), 0),
        "reshape_of_trailing_axes": (Reshape((2, 12), (2, 3, 4), F64), 1),
        "reshape_splitting_the_first_axis": (Reshape((2, 3, 4), (6, 4), F64), 0),
        "expand_along_a_trailing_axis": (Expand((2, 3, 4), (0, 2), (2, 4), F64), 1),
        "expand_along_the_first_axis": (Expand((3, 2, 4), (1, 2), (2, 4), F64), 0),
        "sum_along_the_last_axis": (SumAlong((2,), (2, 3, 4), F64), 2),
        "sum_along_the_first_axis": (SumAlong((0,), (2, 3), F64), 0),
        "slice_of_the_last_axis": (Slice((0, 1), (2, 3), (1, 1), (2, 4), F64), 1),
        "slice_of_the_first_axis": (Slice((1, 0), (3, 4), (1, 1), (3, 4), F64), 0),
        "embed_in_the_last_axis": (Embed((0, 1), (1, 1), (2, 4), (2, 2), F64), 1),
        "block_diagonal": (BlockDiagonal(_arr(3, 4), (2,)), 1),
        "one_matrix": (BlockDiagonal(_arr(3, 4), ()), 0),
        "kronecker_of_a_vector": (Kronecker(_arr(4), 3), 1),
        "kronecker_of_a_batch": (Kronecker(_arr(2, 4), 3), 0),
        "batched_contraction_left": (Contraction(_arr(2, 3), dims, 0, (2, 4, 3)), 2),
        "outer_product_left": (Contraction(_arr(5), (((), ()), ((), ())), 0, (4,)), 1),
        "outer_product_right": (Contraction(_arr(5), (((), ()), ((), ())), 1, (4,)), 0),
        "composed": (A.compose(mcjax.Diagonal(_arr(2, 3)), SumAlong((2,), (2, 3, 4), F64)), 2),
        "sum": (A.add(mcjax.Diagonal(_arr(2, 3)), A.compose(Expand((2, 3), (0,), (2,), F64),
                                                         SumAlong((1,), (2, 3), F64))), 1),
    }


def block_diagonal_along(J, t: int) -> bool:
    """Whether ``J``'s dense form is block diagonal along its first ``t`` axes."""
    if tuple(J.out_shape[:t]) != tuple(J.in_shape[:t]):
        return False
    B = math.prod(J.out_shape[:t])
    M = np.asarray(J.dense()).reshape(B, -1, B, math.prod(J.in_shape[t:]))
    off = M * (1 - np.eye(B))[:, None, :, None]
    return not np.any(off)


@pytest.mark.parametrize("name", list(cases()))
def test_the_leading_batch_is_exactly_the_block_diagonal_axes(name):
    J, expected = cases()[name]
    t = J.leading_batch()
    assert t == expected
    assert block_diagonal_along(J, t)
    if t < min(len(J.out_shape), len(J.in_shape)):
        assert not block_diagonal_along(J, t + 1), "the claim could be one axis longer"


def test_an_over_claim_is_caught():
    """A sum along the first axis claimed to be per-row would read a batch's cross-row
    Hessian as zero: the dense check above refuses that claim."""
    J = SumAlong((0,), (2, 3), F64)
    assert not block_diagonal_along(J, 1)
