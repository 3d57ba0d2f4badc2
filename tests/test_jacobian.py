"""Structured Jacobians: dense form, jvp, vjp, composition and sums agree with each other."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import mcjax
from mcjax import (
    BlockDiagonal,
    Broadcast,
    Composed,
    Dense,
    Diagonal,
    Fill,
    Kronecker,
    ScaledIdentity,
    ShapeError,
    Sum,
)

TOL = mcjax.conventions.tolerance("float64")
close = functools.partial(chex.assert_trees_all_close, rtol=TOL.rtol, atol=TOL.atol)


def examples(rng):
    r = lambda *s: jnp.asarray(rng.standard_normal(s))  # noqa: E731
    return {
        "dense": Dense(r(2, 3, 4), in_ndim=1),
        "dense_scalar_in": Dense(r(3), in_ndim=0),
        "diagonal": Diagonal(r(3)),
        "diagonal_matrix": Diagonal(r(2, 3)),
        "diagonal_scalar": Diagonal(r()),
        "scaled_identity": ScaledIdentity(r(), (2, 3)),
        "fill_column": Fill(r(), (4,), ()),
        "fill_row": Fill(r(), (), (4,)),
        "broadcast": Broadcast((5,), (3,), r()),
        "kronecker": Kronecker(r(3), 4),
        "kronecker_batch": Kronecker(r(5, 3), 4),
        "block": BlockDiagonal(r(4, 3)),
        "block_batch": BlockDiagonal(r(4, 3), (2, 5)),
        "composed": Composed(Dense(r(2, 4), in_ndim=1), Kronecker(r(3), 4)),
        "sum": Sum((Diagonal(r(3)), Dense(r(3, 3), in_ndim=1))),
    }


NAMES = list(examples(np.random.default_rng(0)))


class TestEachStructure(chex.TestCase):
    """Each structure's jvp, vjp and dense form agree, computed with and without jax.jit
    (a Jacobian is a pytree: it goes into a jitted function and comes out of it)."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*NAMES)
    def test_jvp_vjp_and_dense_agree(self, name):
        rng = np.random.default_rng(0)
        J = examples(rng)[name]
        v = jnp.asarray(rng.standard_normal(J.in_shape))
        u = jnp.asarray(rng.standard_normal(J.out_shape))
        D, Jv, uJ = self.variant(lambda J, v, u: (J.dense(), J.jvp(v), J.vjp(u)))(J, v, u)
        assert D.shape == J.out_shape + J.in_shape == J.shape
        assert Jv.shape == J.out_shape and uJ.shape == J.in_shape
        close(Jv, jnp.tensordot(D, v, axes=len(J.in_shape)))
        close(uJ, jnp.tensordot(u, D, axes=len(J.out_shape)))


@pytest.mark.parametrize("name", NAMES)
def test_scaled_negated_and_jitted(name, rng):
    J = examples(rng)[name]
    close((2.5 * J).dense(), 2.5 * J.dense())
    close((-J).dense(), -J.dense())
    through_jit = jax.jit(lambda J: J)(J)
    assert type(through_jit) is type(J)
    close(through_jit.dense(), J.dense())


def test_composition_is_the_chain_rule(rng):
    r = lambda *s: jnp.asarray(rng.standard_normal(s))  # noqa: E731
    inner, outer = Kronecker(r(3), 4), Diagonal(r(4))
    J = outer @ inner
    close(J.dense(), jnp.tensordot(outer.dense(), inner.dense(), axes=1))
    assert J.shape == (4, 4, 3)


def test_composition_keeps_structure(rng):
    d1, d2 = Diagonal(jnp.arange(3.0)), Diagonal(jnp.ones(3))
    assert isinstance(d1 @ d2, Diagonal)
    assert isinstance(ScaledIdentity(2.0, (3,)) @ d1, Diagonal)
    assert isinstance(Diagonal(jnp.array(2.0)) @ Dense(jnp.ones(3), in_ndim=1), Dense)
    assert isinstance(d1 + d2, Diagonal)


def test_mismatched_composition_and_sum_name_the_shapes():
    with pytest.raises(ShapeError, match=r"taking \(3,\) with a diagonal Jacobian giving \(4,\)"):
        Diagonal(jnp.ones(3)) @ Diagonal(jnp.ones(4))
    with pytest.raises(ShapeError, match=r"shape \(3, 3\) to a diagonal Jacobian of shape \(4, 4\)"):
        Diagonal(jnp.ones(3)) + Diagonal(jnp.ones(4))


def test_kronecker_never_builds_the_dense_tensor():
    """The Kronecker Jacobian of W x w.r.t. W holds x only: O(n), not O(m^2 n)."""
    m, n = 512, 256
    J = mcjax.derivative(mcjax.affine, "W")(jnp.ones((m, n)), jnp.ones(n), jnp.ones(m))
    assert isinstance(J, Kronecker)
    stored = sum(leaf.size for leaf in jax.tree_util.tree_leaves(J))
    assert stored == n
    assert J.shape == (m, m, n)
    assert J.vjp(jnp.ones(m)).shape == (m, n)


def test_densify_walks_pytrees(rng):
    tree = {"a": Diagonal(jnp.ones(2)), "b": [jnp.zeros(3)]}
    out = mcjax.densify(tree)
    assert out["a"].shape == (2, 2) and out["b"][0].shape == (3,)
