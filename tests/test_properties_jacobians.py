"""Property tests of the structured Jacobians: for every public Jacobian class, at
shapes and values hypothesis draws,

- composition is the chain rule in numerator layout: ``(A @ B).dense()`` is
  ``tensordot(A.dense(), B.dense())`` over B's output axes, with a partner ``Dense``,
  ``Diagonal`` or ``ScaledIdentity`` (the cases ``_compose`` treats apart) on either side;
- the sum is linear: ``(A + B).vjp(u) == A.vjp(u) + B.vjp(u)``, for B of another structure
  and of the same one;
- jvp and vjp are adjoint: ``<u, J v> == <u^T J, v>``.

float64 only.  The three properties of one drawn example are evaluated by one jitted
function (Jacobians are pytrees), and shapes come from a small pool (a scalar, size 1, a
vector, non-square matrices, batches), so that most examples reuse a compiled program: an
eager operation would compile once per shape it meets.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mcjax
from mcjax import (
    Applied,
    BlockDiagonal,
    Broadcast,
    Composed,
    Contraction,
    Dense,
    Diagonal,
    Embed,
    Expand,
    Fill,
    Kronecker,
    Opaque,
    Permutation,
    Reshape,
    Sandwich,
    ScaledIdentity,
    Slice,
    Sum,
    SumAlong,
    Take,
    Zero,
)
from mcjax.compilation import quick_jit

TOL = mcjax.conventions.tolerance("float64")
# a scalar, size 1, a non-square matrix; sizes 1 and 3; no batch or a batch of 2
SHAPE = st.sampled_from([(), (1,), (2, 3)])
SIZE = st.sampled_from([1, 3])
BATCH = st.sampled_from([(), (2,)])
OTHER = (2,)  # the far side of a dense partner: J @ Dense(J.in_shape + OTHER) ...
SEED = st.integers(0, 2**32 - 1)


class Draw:
    """Random float64 arrays of any shape, from one drawn seed."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def __call__(self, *shape) -> jnp.ndarray:
        return jnp.asarray(self.rng.standard_normal(shape))


# -- one strategy per class: shapes drawn from the pool, values from a seed -----------------
def _dense(r: Draw, out, in_):
    return Dense(r(*out, *in_), in_ndim=len(in_))


def _applied(name):
    """A linear operation applied to the tangent: lax's cumsum or rev of a vector."""
    fn = {"cumsum": lambda v: jax.lax.cumsum(v, 0), "rev": lambda v: jax.lax.rev(v, (0,))}[name]
    return Applied.of(fn, jnp.zeros(3, jnp.float64))


DRAW = SEED.map(Draw)
BUILDERS = {
    Dense: st.builds(_dense, DRAW, SHAPE, SHAPE),
    Diagonal: st.builds(lambda r, s: Diagonal(r(*s)), DRAW, SHAPE),
    ScaledIdentity: st.builds(lambda r, s: ScaledIdentity(r(), s), DRAW, SHAPE),
    Fill: st.builds(lambda r, out, in_: Fill(r(), out, in_), DRAW, SHAPE, SHAPE),
    Broadcast: st.builds(lambda r, batch, s: Broadcast(batch, s, r()), DRAW, BATCH, SHAPE),
    Kronecker: st.builds(lambda r, batch, n, m: Kronecker(r(*batch, n), m), DRAW, BATCH,
                         SIZE, SIZE),
    BlockDiagonal: st.builds(lambda r, m, n, batch: BlockDiagonal(r(m, n), batch), DRAW,
                             SIZE, SIZE, BATCH),
    # a lazy chain of two factors, and a sum of two structures of one shape
    Composed: st.builds(lambda r, out, s: Composed(_dense(r, out, s), Diagonal(r(*s))), DRAW,
                        SHAPE, SHAPE),
    Sum: st.builds(lambda r, s: Sum((Diagonal(r(*s)), _dense(r, s, s))), DRAW, SHAPE),
    # the structures mcjax.derive adds: entries moved, copied, picked, summed; a contraction;
    # nothing; an opaque linear map
    Zero: st.builds(lambda out, in_: Zero(out, in_, jnp.float64), SHAPE, SHAPE),
    Permutation: st.sampled_from([((1, 0), (2, 3)), ((0,), (3,)), ((2, 0, 1), (2, 1, 3))]).map(
        lambda p: Permutation(*p, jnp.float64)),
    Reshape: st.sampled_from([((3, 2), (2, 3)), ((6,), (2, 3)), ((1,), ())]).map(
        lambda p: Reshape(*p, jnp.float64)),
    Slice: st.sampled_from([((0,), (3,), (2,), (4,)), ((1, 0), (2, 3), None, (2, 3)),
                            ((1,), (2,), None, (3,))]).map(lambda p: Slice(*p, jnp.float64)),
    Embed: st.sampled_from([((1,), None, (4,), (2,)), ((0, 1), (1, 2), (2, 4), (2, 2))]).map(
        lambda p: Embed(*p, jnp.float64)),
    Expand: st.sampled_from([((2, 3), (1,), (3,)), ((2, 3), (0, 1), (1, 3)), ((3,), (), ())]).map(
        lambda p: Expand(*p, jnp.float64)),
    SumAlong: st.sampled_from([((1,), (2, 3)), ((0,), (2, 3)), ((0, 2), (2, 1, 3))]).map(
        lambda p: SumAlong(*p, jnp.float64)),
    Contraction: st.builds(
        lambda r, side: Contraction(r(3, 2), (((1,), (0,)), ((), ())), 0, (4, 3)) if side == 0
        else Contraction(r(4, 3), (((1,), (0,)), ((), ())), 1, (3, 2)), DRAW, st.sampled_from([0, 1])),
    # an operation applied (a cumulative sum, a reversal), a selection, a two-sided product
    Applied: st.sampled_from(["cumsum", "rev"]).map(_applied),
    Take: st.sampled_from([((2, -1, 0, 3), (4,)), ((0, 0), (1,)), ((5, 1, -1), (2, 3))]).map(
        lambda p: Take(jnp.asarray(p[0]), p[1], jnp.float64)),
    Sandwich: st.builds(lambda r, vector: Sandwich(r(3, 2), r(4) if vector else r(4, 2)),
                        DRAW, st.booleans()),
    Opaque: st.builds(lambda r, s: Opaque(jax.linearize(jnp.cumsum, r(*s))[1], "cumsum",
                                          (max(1, int(np.prod(s))),), s, jnp.float64),
                      DRAW, st.sampled_from([(3,), (1,)])),
}


def test_every_jacobian_class_has_a_strategy():
    classes = {getattr(mcjax, name) for name in mcjax.__all__}
    classes = {c for c in classes if isinstance(c, type) and issubclass(c, mcjax.Jacobian)
               and c is not mcjax.Jacobian}
    assert classes == set(BUILDERS)


CLASSES = list(BUILDERS)


@quick_jit
def properties(J, partners, others, u, v):
    """(got, want) of each property, in one program per structure and shapes (compiled for
    speed of compiling: LLVM's optimisations off, the classic CPU emitters)."""
    pairs = {}
    for name, (inner, outer) in partners.items():
        for product, (A, B) in {f"J @ {name}": (J, inner), f"{name} @ J": (outer, J)}.items():
            pairs[product] = ((A @ B).dense(),
                              jnp.tensordot(A.dense(), B.dense(), len(B.out_shape)))
    for i, B in enumerate(others):
        pairs[f"(J + B{i}).vjp"] = ((J + B).vjp(u), J.vjp(u) + B.vjp(u))
    pairs["adjoint"] = (jnp.vdot(u, J.jvp(v)), jnp.vdot(J.vjp(u), v))
    return pairs


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
@settings(max_examples=5, deadline=None)
@given(data=st.data(), seed=SEED, scale=st.floats(-2, 2))
def test_product_sum_and_adjoint(cls, data, seed, scale):
    J = data.draw(BUILDERS[cls], label="J")
    r = Draw(seed)
    # partners that meet J's input (J @ inner) and its output (outer @ J): the cases
    # _compose treats apart (a scaled identity, a diagonal, a dense array) and the rest
    partners = {
        "Dense": (_dense(r, J.in_shape, OTHER), _dense(r, OTHER, J.out_shape)),
        "Diagonal": (Diagonal(r(*J.in_shape)), Diagonal(r(*J.out_shape))),
        "ScaledIdentity": (ScaledIdentity(r(), J.in_shape), ScaledIdentity(r(), J.out_shape)),
    }
    # B of another structure with J's shape, and J's own structure scaled
    others = (_dense(r, J.out_shape, J.in_shape), J.scaled(scale))
    pairs = properties(J, partners, others, r(*J.out_shape), r(*J.in_shape))
    for name, (got, want) in pairs.items():
        chex.assert_trees_all_close(got, want, rtol=TOL.rtol, atol=TOL.atol,
                                    custom_message=f"{cls.__name__}: {name}")
