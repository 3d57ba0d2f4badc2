"""Fast mode on a 1,000,000-parameter ReLU MLP: passes where jax.test_util.check_grads fails,
costs at most 5 gradients, never builds the Jacobian, and still catches a wrong gradient."""

import jax
import jax.numpy as jnp
import pytest
from jax.test_util import check_grads

import mcjax
from mcjax._check import _fast
from mcjax._check._problem import prepare

SIZES = (784, 1024, 192, 10)  # 1,002,570 parameters


def mlp_problem(dtype):
    params = mcjax.mlp_init(jax.random.PRNGKey(0), SIZES, dtype=dtype)
    params = [{"W": layer["W"], "b": 0.1 * jax.random.normal(jax.random.PRNGKey(10 + i), layer["b"].shape, dtype)}
              for i, layer in enumerate(params)]
    X = jax.random.normal(jax.random.PRNGKey(1), (64, SIZES[0]), dtype)
    Y = jnp.arange(64) % SIZES[-1]
    return params, X, Y


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_right_1m_parameter_gradient_passes_where_check_grads_fails(dtype):
    params, X, Y = mlp_problem(dtype)
    assert sum(a.size for a in jax.tree_util.tree_leaves(params)) > 1_000_000
    report = mcjax.check(mcjax.mlp_loss, mcjax.mlp_backprop, params, X, Y)
    assert report.mode == "fast" and report.ok, report
    wrong = lambda p, X, Y: jax.tree_util.tree_map(lambda g: g * 1.001, mcjax.mlp_backprop(p, X, Y))  # noqa: E731
    assert not mcjax.check(mcjax.mlp_loss, wrong, params, X, Y).ok
    with pytest.raises(AssertionError):  # one unnormalised direction, a step that crosses kinks
        check_grads(lambda p: mcjax.mlp_loss(p, X, Y), (params,), order=1, modes=("rev",))


def test_fast_mode_costs_at_most_five_gradients_and_never_builds_the_jacobian():
    params, X, Y = mlp_problem("float32")
    p = prepare(mcjax.mlp_loss, mcjax.mlp_backprop, (params, X, Y), 0, "numerator")
    seed = jnp.asarray(0, jnp.uint32)
    checked = _fast._program.lower(p.static, p.x_spec, p.out_spec, p.dtype, 2, 4, p.dynamic,
                                   seed).compile()
    gradient = jax.jit(jax.grad(mcjax.mlp_loss)).lower(params, X, Y).compile()
    ratio = checked.cost_analysis()["flops"] / gradient.cost_analysis()["flops"]
    assert ratio <= 5, f"fast mode costs {ratio:.2f} gradients"
    # peak working memory: a small multiple of what one gradient evaluation needs (two points,
    # each with both sides' u^T J and the perturbed parameters)
    argument_bytes = sum(a.nbytes for a in jax.tree_util.tree_leaves((params, X)))
    one_gradient = gradient.memory_analysis().temp_size_in_bytes + 2 * argument_bytes
    assert checked.memory_analysis().temp_size_in_bytes <= 10 * one_gradient  # measured: 7.7


def test_fast_mode_on_a_vector_function_never_builds_its_jacobian():
    """f: 2000 -> 1500 numbers; its Jacobian would take 3e6 entries, fast mode far less."""
    W = jax.random.normal(jax.random.PRNGKey(2), (1500, 2000)) / 50
    f = lambda x: jnp.tanh(W @ x)  # noqa: E731
    vjp = lambda x: (lambda u: (u * (1 - f(x) ** 2)) @ W)  # noqa: E731
    x = jax.random.normal(jax.random.PRNGKey(3), (2000,))
    report = mcjax.check(f, vjp, x)
    assert report.mode == "fast" and report.ok, report
    p = prepare(f, vjp, (x,), 0, "numerator")
    compiled = _fast._program.lower(p.static, p.x_spec, p.out_spec, p.dtype, 2, 4, p.dynamic,
                                    jnp.asarray(0, jnp.uint32)).compile()
    jacobian_bytes = W.size * W.dtype.itemsize
    assert compiled.memory_analysis().temp_size_in_bytes < jacobian_bytes / 10
    assert not mcjax.check(f, lambda x: (lambda u: -(u * (1 - f(x) ** 2)) @ W), x).ok


def test_a_single_wrong_entry_of_a_gradient_is_caught():
    params, X, Y = mlp_problem("float32")

    def one_wrong(p, X, Y):
        grads = mcjax.mlp_backprop(p, X, Y)
        grads[1]["W"] = grads[1]["W"].at[5, 7].multiply(2.0)
        return grads

    report = mcjax.check(mcjax.mlp_loss, one_wrong, params, X, Y)
    assert not report.ok and report.worst[0].label == "x[1]['W'][5, 7]", report
