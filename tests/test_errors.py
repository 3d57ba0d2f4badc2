"""Bad input gets a sentence naming the function, the argument, what was expected and what
arrived, raised at trace time (before any computation)."""

import re

import jax
import jax.numpy as jnp
import pytest

import mcjax
from mcjax import DtypeError, ShapeError


def test_affine_names_W_and_x_shapes():
    with pytest.raises(ShapeError, match=re.escape(
            "mcjax.affine: W has shape (3, 4) but x has shape (5,); expected x of shape (4,)")):
        mcjax.affine(jnp.ones((3, 4)), jnp.ones(5), jnp.ones(3))


def test_affine_reports_every_problem_at_once():
    with pytest.raises(ShapeError) as info:
        mcjax.affine(jnp.ones((3, 4)), jnp.ones((2, 5)), jnp.ones(2))
    message = str(info.value)
    assert "expected x of shape (..., 4)" in message
    assert "b has shape (2,); expected b of shape (3,)" in message


def test_affine_rejects_a_vector_W():
    with pytest.raises(ShapeError, match=r"W has shape \(4,\) \(1 dimensions\); expected 2"):
        mcjax.affine(jnp.ones(4), jnp.ones(4), jnp.ones(1))


def test_errors_fire_at_trace_time_without_computing():
    spec = jax.ShapeDtypeStruct
    with pytest.raises(ShapeError, match="mcjax.affine"):
        jax.eval_shape(mcjax.affine, spec((3, 4), jnp.float32), spec((5,), jnp.float32),
                       spec((3,), jnp.float32))
    with pytest.raises(ShapeError, match="mcjax.affine"):
        jax.jit(mcjax.affine).lower(spec((3, 4), jnp.float32), spec((5,), jnp.float32),
                                    spec((3,), jnp.float32))


def test_mixed_float_dtypes_are_refused():
    with pytest.raises(DtypeError, match="x has dtype float32 but y has dtype float64"):
        mcjax.multiply(jnp.ones(3, jnp.float32), jnp.ones(3, jnp.float64))
    # Python scalars join any dtype, as in JAX
    assert mcjax.multiply_scalar(jnp.ones(3, jnp.float32), 2.0).dtype == jnp.float32


def test_elementwise_refuses_silent_broadcasting():
    with pytest.raises(ShapeError, match=r"mcjax.add: arguments must have the same shape; "
                                         r"got x \(3,\), y \(2, 3\)"):
        mcjax.add(jnp.ones(3), jnp.ones((2, 3)))


def test_scalar_expansion_wants_a_scalar():
    with pytest.raises(ShapeError, match=r"mcjax.add_scalar: z has shape \(3,\)"):
        mcjax.add_scalar(jnp.ones(3), jnp.ones(3))


def test_neuron_and_loss_shapes():
    with pytest.raises(ShapeError, match=r"mcjax.neuron: w has shape \(3,\) but x has shape "
                                         r"\(4,\); expected x of shape \(3,\)"):
        mcjax.neuron(jnp.ones(3), jnp.ones(4), jnp.asarray(0.0))
    with pytest.raises(ShapeError, match=r"mcjax.neuron_loss: .*expected y of shape \(5,\)"):
        mcjax.neuron_loss(jnp.ones(3), jnp.asarray(0.0), jnp.ones((5, 3)), jnp.ones(4))


def test_cross_entropy_labels():
    with pytest.raises(ShapeError, match=r"integer labels have shape \(3,\); expected labels "
                                         r"of shape \(4,\)"):
        mcjax.softmax_cross_entropy(jnp.ones((4, 2)), jnp.zeros(3, jnp.int32))
    with pytest.raises(DtypeError, match="labels have dtype bool"):
        mcjax.softmax_cross_entropy(jnp.ones((4, 2)), jnp.zeros(4, bool))


def test_mlp_features_must_fit_the_first_layer():
    params = mcjax.mlp_init(jax.random.PRNGKey(0), (4, 3, 2))
    with pytest.raises(ShapeError, match=r"mcjax.mlp_apply: X has shape \(8, 5\) but the first "
                                         r"layer's W has shape \(3, 4\); expected X of shape "
                                         r"\(B, 4\)"):
        mcjax.mlp_apply(params, jnp.ones((8, 5)))


def test_mlp_init_wants_two_widths():
    with pytest.raises(ShapeError, match="at least two positive widths"):
        mcjax.mlp_init(jax.random.PRNGKey(0), (4,))


@pytest.mark.parametrize("f, wrt, args", [
    (mcjax.relu, "x", (jnp.arange(3),)),
    (mcjax.affine, "x", (jnp.ones((2, 3)), jnp.arange(3), jnp.ones(2))),
    (mcjax.neuron, "w", (jnp.arange(2), jnp.ones(2), jnp.asarray(0.0))),
])
def test_integer_arguments_are_not_differentiated_to_a_silent_zero(f, wrt, args):
    with pytest.raises(DtypeError, match=rf"cannot differentiate with respect to {wrt}, which "
                                         r"has dtype int\d+; expected a floating dtype"):
        mcjax.derivative(f, wrt)(*args)


def test_integer_labels_are_fine_where_nothing_is_differentiated():
    J = mcjax.derivative(mcjax.softmax_cross_entropy, "logits")(jnp.ones((2, 3)), jnp.array([0, 2]))
    assert J.dense().shape == (2, 3)
