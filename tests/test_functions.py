"""The paper's functions against independent NumPy implementations; jit, vmap, dtypes."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import mcjax
from mcjax.conventions import DTYPES


def close(a, b, dtype="float64"):
    """Within ``dtype``'s tolerance, compared in float64 (NumPy's references are float64)."""
    tol = mcjax.conventions.tolerance(dtype)
    as64 = functools.partial(jax.tree_util.tree_map, lambda x: np.asarray(x, np.float64))
    chex.assert_trees_all_close(as64(a), as64(b), rtol=tol.rtol, atol=tol.atol)


def r(rng, *shape, dtype="float64"):
    return jnp.asarray(rng.standard_normal(shape), dtype)


class TestFunctionsWithAndWithoutJit(chex.TestCase):
    """Each function against NumPy, called as users call it: jitted and eagerly."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*DTYPES)
    def test_affine_single_and_batch(self, dtype):
        rng = np.random.default_rng(0)
        W, x, X, b = (r(rng, *shape, dtype=dtype) for shape in ((4, 3), (3,), (5, 3), (4,)))
        affine = self.variant(mcjax.affine)
        close(affine(W, x, b), np.asarray(W) @ np.asarray(x) + np.asarray(b), dtype)
        close(affine(W, X, b), np.asarray(X) @ np.asarray(W).T + np.asarray(b)[None, :], dtype)
        assert affine(W, X, b).dtype == jnp.dtype(dtype)
        close(jax.vmap(affine, in_axes=(None, 0, None))(W, X, b), affine(W, X, b), dtype)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*DTYPES)
    def test_activations(self, dtype):
        x = r(np.random.default_rng(0), 7, dtype=dtype)
        n = np.asarray(x, np.float64)
        expected = {
            mcjax.relu: np.maximum(n, 0),
            functools.partial(mcjax.leaky_relu, slope=0.1): np.where(n >= 0, n, 0.1 * n),
            mcjax.sigmoid: 1 / (1 + np.exp(-n)),
            mcjax.tanh: np.tanh(n),
            mcjax.softplus: np.log1p(np.exp(n)),
        }
        for f, want in expected.items():
            got = self.variant(f)(x)
            close(got, want, dtype)
            assert got.dtype == jnp.dtype(dtype)


def test_neuron_is_the_papers_and_vmaps(rng):
    w, X, b = r(rng, 3), r(rng, 6, 3), jnp.asarray(0.2)
    expected = np.maximum(0, np.asarray(X) @ np.asarray(w) + 0.2)
    close(jax.vmap(mcjax.neuron, in_axes=(None, 0, None))(w, X, b), expected)
    close(jax.jit(mcjax.neuron)(w, X[0], b), expected[0])
    close(mcjax.neuron(w, X[0], b, activation="sigmoid"),
          1 / (1 + np.exp(-(np.asarray(X[0]) @ np.asarray(w) + 0.2))))


def test_papers_loss(rng):
    w, b, X, y = r(rng, 3), jnp.asarray(0.1), r(rng, 8, 3), r(rng, 8)
    expected = np.mean((np.asarray(y) - np.maximum(0, np.asarray(X) @ np.asarray(w) + 0.1)) ** 2)
    close(jax.jit(mcjax.neuron_loss)(w, b, X, y), expected)


def test_mse_and_logistic(rng):
    a, y = r(rng, 4, 2), r(rng, 4, 2)
    close(mcjax.mse(a, y), np.mean((np.asarray(a) - np.asarray(y)) ** 2))
    z, t = r(rng, 5), jnp.asarray([0.0, 1.0, 1.0, 0.0, 1.0])
    n = np.asarray(z)
    close(mcjax.logistic_loss(z, t), np.mean(np.log1p(np.exp(n)) - np.asarray(t) * n))


def test_softmax_cross_entropy_integer_and_probability_labels(rng):
    z, labels = r(rng, 4, 3), jnp.asarray([0, 2, 1, 2])
    n = np.asarray(z)
    lse = np.log(np.exp(n).sum(-1))
    expected = np.mean(lse - n[np.arange(4), np.asarray(labels)])
    close(mcjax.softmax_cross_entropy(z, labels), expected)
    close(mcjax.softmax_cross_entropy(z, jax.nn.one_hot(labels, 3, dtype=z.dtype)), expected)


@jax.jit
def _losses_and_gradients(z, labels, zb, yb):
    """Softmax cross-entropy and the logistic loss with their gradients (autodiff's and, for
    the former, the registered rule's): one program, as a training step computes them."""
    return {"cross-entropy": mcjax.softmax_cross_entropy(z, labels),
            "its jax.grad": jax.grad(mcjax.softmax_cross_entropy)(z, labels),
            "its rule": mcjax.derivative(mcjax.softmax_cross_entropy, "logits")(z, labels).dense(),
            "logistic": mcjax.logistic_loss(zb, yb),
            "its gradient": jax.grad(mcjax.logistic_loss)(zb, yb)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_losses_stay_finite_for_huge_logits(dtype, scale):
    z = jnp.asarray([[scale, 0.0, -scale], [0.0, scale, 1.0]], dtype)
    labels = jnp.asarray([2, 0])
    zb, yb = jnp.asarray([scale, -scale], dtype), jnp.asarray([0.0, 1.0], dtype)
    values = _losses_and_gradients(z, labels, zb, yb)
    for name, value in values.items():
        assert np.all(np.isfinite(np.asarray(value))), (name, value)
    # row 0: logsumexp = |scale|; row 1: logsumexp([0, scale, 1]); minus the labelled logit
    expected = (2 * scale + scale) / 2 if scale > 0 else np.log1p(np.e) / 2
    close(values["cross-entropy"], expected, dtype)


def test_mlp_init_and_apply(rng):
    params = mcjax.mlp_init(jax.random.PRNGKey(0), (5, 7, 3), dtype=jnp.float64)
    assert [(p["W"].shape, p["b"].shape) for p in params] == [((7, 5), (7,)), ((3, 7), (3,))]
    X = r(rng, 4, 5)
    h = np.maximum(0, np.asarray(X) @ np.asarray(params[0]["W"]).T)
    close(jax.jit(mcjax.mlp_apply)(params, X), h @ np.asarray(params[1]["W"]).T)
    assert mcjax.mlp_apply(params, X[0]).shape == (3,)
    same = mcjax.mlp_init(jax.random.PRNGKey(0), (5, 7, 3), dtype=jnp.float64)
    assert all(jnp.array_equal(a["W"], b["W"]) for a, b in zip(params, same))


def test_mlp_backprop_is_jax_grad(rng):
    # drawn with NumPy: eager jax.random compiles each operation (mlp_init is tested above)
    sizes = (4, 6, 5, 3)
    params = [{"W": r(rng, m, n) / np.sqrt(n), "b": r(rng, m)} for n, m in zip(sizes, sizes[1:])]
    X, labels = r(rng, 8, 4), jnp.asarray(rng.integers(0, 3, 8))
    ours = jax.jit(mcjax.mlp_backprop)(params, X, labels)
    theirs = jax.jit(jax.grad(mcjax.mlp_loss))(params, X, labels)
    close(ours, theirs)


def test_layer_backward_shapes_and_values(rng):
    W, X, b, dY = r(rng, 4, 3), r(rng, 5, 3), r(rng, 4), r(rng, 5, 4)
    dW, db, dX = mcjax.layer_backward(W, X, b, dY, activation="tanh")
    _, vjp = jax.vjp(lambda W, X, b: mcjax.dense_layer(W, X, b, activation="tanh"), W, X, b)
    eW, eX, eb = vjp(dY)
    close(dW, eW), close(db, eb), close(dX, eX)


class TestKinkConventions:
    """What each function's derivative is at its kink, and what JAX gives there."""

    def test_relu_at_zero_is_zero_like_jax_nn_relu(self):
        zero = jnp.zeros(1)
        assert mcjax.derivative(mcjax.relu, "x")(zero).dense()[0, 0] == 0.0
        assert jax.grad(jax.nn.relu)(0.0) == 0.0
        assert jax.grad(lambda x: mcjax.relu(x))(0.0) == 0.0
        # jnp.maximum splits the tie: this is why mcjax.relu is not jnp.maximum(x, 0)
        assert jax.grad(lambda x: jnp.maximum(x, 0.0))(0.0) == 0.5

    def test_leaky_relu_at_zero_takes_the_positive_branch(self):
        assert mcjax.derivative(mcjax.leaky_relu, "x")(jnp.zeros(1)).dense()[0, 0] == 1.0
        assert jax.grad(jax.nn.leaky_relu)(0.0) == 1.0

    def test_maximum_tie_gives_half_to_each(self):
        x = jnp.ones(2)
        assert jnp.all(jnp.diag(mcjax.derivative(mcjax.maximum, "x")(x, x).dense()) == 0.5)
        assert jnp.all(jnp.diag(mcjax.derivative(mcjax.maximum, "y")(x, x).dense()) == 0.5)
        assert jax.grad(jnp.maximum)(1.0, 1.0) == 0.5

    def test_neuron_gate_is_closed_at_z_equal_zero(self):
        w, x = jnp.array([1.0, 1.0]), jnp.array([1.0, -1.0])
        J = mcjax.derivative(mcjax.neuron, "w")(w, x, jnp.asarray(0.0))
        assert jnp.all(J.dense() == 0.0)
        assert jnp.all(jax.grad(mcjax.neuron)(w, x, jnp.asarray(0.0)) == 0.0)
