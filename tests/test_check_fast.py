"""Fast mode on a 1,000,000-parameter ReLU MLP: passes where jax.test_util.check_grads fails,
costs at most 3 gradients when it passes, never builds the Jacobian, and still catches a wrong gradient.

Compiling dominates these tests, so the problem is built once per dtype (with NumPy: jax.random
on a CPU takes seconds for a million numbers), and the right gradient, the gradient off by 0.1%
and the gradient with one wrong entry are one derivative with a traced ``slip`` argument: one
compiled check per dtype serves all three.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import mcjax
from mcjax._check import _fast
from mcjax._check._problem import prepare
from mcjax._program._compile import run_compiled

SIZES = (784, 1024, 192, 10)  # 1,002,570 parameters
RIGHT, OFF_BY_0_1_PERCENT, ONE_WRONG_ENTRY = (1.0, 1.0), (1.001, 1.0), (1.0, 2.0)


@functools.cache
def mlp_problem(dtype):
    """He-initialised weights (as :func:`mcjax.mlp_init` draws them), small random biases, a
    batch of 64: the arguments of :func:`mcjax.mlp_loss`."""
    rng = np.random.default_rng(0)
    params = [{"W": jnp.asarray(rng.standard_normal((m, n)) * np.sqrt(2 / n), dtype),
               "b": jnp.asarray(0.1 * rng.standard_normal(m), dtype)}
              for n, m in zip(SIZES[:-1], SIZES[1:])]
    X = jnp.asarray(rng.standard_normal((64, SIZES[0])), dtype)
    return params, X, jnp.arange(64) % SIZES[-1]


def loss(params, X, Y, slip):
    """:func:`mcjax.mlp_loss`; ``slip`` is unused (the derivative's arguments are f's)."""
    return mcjax.mlp_loss(params, X, Y)


def backprop(params, X, Y, slip):
    """:func:`mcjax.mlp_backprop` times ``slip[0]``, and its entry ``[1]['W'][5, 7]`` times
    ``slip[1]`` as well."""
    grads = jax.tree_util.tree_map(lambda g: g * slip[0], mcjax.mlp_backprop(params, X, Y))
    grads[1]["W"] = grads[1]["W"].at[5, 7].multiply(slip[1])
    return grads


def check(dtype, slip):
    params, X, Y = mlp_problem(dtype)
    return mcjax.check(loss, backprop, params, X, Y, jnp.asarray(slip, dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_right_1m_parameter_gradient_passes_where_check_grads_fails(dtype):
    params, X, Y = mlp_problem(dtype)
    assert sum(a.size for a in jax.tree_util.tree_leaves(params)) > 1_000_000
    report = check(dtype, RIGHT)
    assert report.mode == "fast" and report.ok, report
    off = check(dtype, OFF_BY_0_1_PERCENT)
    assert not off.ok and [s.kind for s in off.slips] == ["factor"], off
    assert "times 1.001 (+0.1%)" in off.slips[0].sentence
    with pytest.raises(AssertionError):  # one unnormalised direction, a step that crosses kinks
        check_grads(jax.jit(lambda p: mcjax.mlp_loss(p, X, Y)), (params,), order=1, modes=("rev",))


def test_a_single_wrong_entry_of_a_gradient_is_caught():
    report = check("float32", ONE_WRONG_ENTRY)
    assert not report.ok and report.worst[0].label == "params[1]['W'][5, 7]", report
    # the table's labels are the report's (x); the sentences use f's name of its argument
    assert report.where[0] == "1 of 196608 entries of d out / d params[1]['W'] are wrong", \
        report.where
    assert [s.kind for s in report.slips] == ["wrong-entries"], report.slips
    assert ("params[1]['W'] is wrong at 1 of its 196608 entries only (params[1]['W'][5, 7])"
            in report.diagnosis[0])


def test_a_passing_fast_check_costs_at_most_three_gradients_and_never_builds_the_jacobian():
    """Deterministic stand-ins for wall time (measured by experiments/bench_check.py): FLOPs,
    bytes accessed, working memory, and no array of the parameters' total size, of the program
    a passing check of a scalar f runs (x alone: every entry of the gradient compared)."""
    params, X, Y = mlp_problem("float32")
    p = prepare(mcjax.mlp_loss, mcjax.mlp_backprop, (params, X, Y), 0, "numerator")
    seed = jnp.asarray(0, jnp.uint32)
    checked = run_compiled(_fast._program, (p.static, p.x_spec, p.out_spec, (0,), 4, ()),
                           p.static.consts(), p.dynamic, seed, call=False)
    gradient = jax.jit(jax.grad(mcjax.mlp_loss)).lower(params, X, Y).compile()
    cost = lambda key: checked.cost_analysis()[key] / gradient.cost_analysis()[key]  # noqa: E731
    assert _fast._which(p, None) == ((0,), True)  # x alone, the point near it if x is special
    assert cost("flops") <= 3, f"fast mode costs {cost('flops'):.2f} gradients"  # measured: 1.63
    # memory passes are what made it slow: 55 gradients' worth of bytes when it flattened the
    # parameters and hashed every index per direction; leaf by leaf at two points, 6.6; 3.5
    assert cost("bytes accessed") <= 5, f"fast mode moves {cost('bytes accessed'):.1f} gradients' bytes"
    # peak working memory: a small multiple of the arguments (both sides' u^T J)
    argument_bytes = sum(a.nbytes for a in jax.tree_util.tree_leaves((params, X)))
    one_gradient = gradient.memory_analysis().temp_size_in_bytes + 2 * argument_bytes
    assert checked.memory_analysis().temp_size_in_bytes <= 2 * one_gradient
    assert checked.memory_analysis().temp_size_in_bytes <= 2 * argument_bytes  # measured: 1.6
    assert f"[{p.x_spec.size}]" not in checked.as_text()  # the parameters are never flattened


W = jnp.asarray(np.random.default_rng(2).standard_normal((1500, 2000)) / 50)


def tanh_layer(x, sign):
    return jnp.tanh(W @ x)


def tanh_layer_vjp(x, sign):
    """The VJP ``u -> u^T J`` of :func:`tanh_layer`, times ``sign`` (-1: a wrong one)."""
    return lambda u: sign * ((u * (1 - tanh_layer(x, sign) ** 2)) @ W)


def test_fast_mode_on_a_vector_function_never_builds_its_jacobian():
    """f: 2000 -> 1500 numbers; its Jacobian would take 3e6 entries, fast mode far less."""
    x = jnp.asarray(np.random.default_rng(3).standard_normal(2000))
    report = mcjax.check(tanh_layer, tanh_layer_vjp, x, jnp.asarray(1.0))
    assert report.mode == "fast" and report.ok, report
    p = prepare(tanh_layer, tanh_layer_vjp, (x, jnp.asarray(1.0)), 0, "numerator")
    compiled = run_compiled(_fast._program, (p.static, p.x_spec, p.out_spec, (0,), 4, ()),
                            p.static.consts(), p.dynamic, jnp.asarray(0, jnp.uint32), call=False)
    jacobian_bytes = W.size * W.dtype.itemsize
    assert compiled.memory_analysis().temp_size_in_bytes < jacobian_bytes / 10
    assert not mcjax.check(tanh_layer, tanh_layer_vjp, x, jnp.asarray(-1.0)).ok


def test_fast_mode_says_when_a_failure_at_x_alone_may_be_a_kink():
    """max(x, 0) at x = 0: JAX's value is 1/2, a hand-written 1[x > 0] is one-sided. Fast mode
    accepts JAX's value only, fails, and says why; full mode reads the kink and passes.  A
    derivative wrong everywhere gets no such note."""
    f = lambda x: jnp.sum(jnp.maximum(x, 0.0))  # noqa: E731
    x = jnp.array([0.0, 1.0, -2.0, 3.0])
    one_sided = lambda x: jnp.where(x > 0, 1.0, 0.0)  # noqa: E731
    fast = mcjax.check(f, one_sided, x, mode="fast")
    assert not fast.ok and any("may sit at a kink" in n for n in fast.notes), fast
    assert mcjax.check(f, one_sided, x, mode="full").ok
    wrong = mcjax.check(f, lambda x: jnp.where(x > 0, 1.1, 0.0), x, mode="fast")
    assert not wrong.ok and not any("kink" in n for n in wrong.notes)
