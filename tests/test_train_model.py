"""A researcher's own model (an init and a loss; a hand gradient optional; any batch pytree;
a fresh key per step), and compiled programs reused only for the same traced program."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax
from mcjax.conventions import tolerance

F64 = jnp.float64
RNG = np.random.default_rng(0)
X = RNG.standard_normal((48, 3))
Y = X @ np.array([1.0, -2.0, 0.5]) + 0.3
WEIGHTS = RNG.uniform(0.5, 1.5, 48)


def init(key):
    return {"w": 0.1 * jax.random.normal(key, (3,), F64), "b": jnp.zeros((), F64)}


def weighted_loss(params, batch):
    X, y, weight = batch
    error = X @ params["w"] + params["b"] - y
    return jnp.sum(weight * error**2) / jnp.sum(weight)


def weighted_grad(params, batch):
    """By hand: d/dθ of sum(v e²)/sum(v) is 2 sum(v e x)/sum(v) for w, 2 sum(v e)/sum(v) for b."""
    X, y, weight = batch
    error = X @ params["w"] + params["b"] - y
    scale = 2.0 / jnp.sum(weight)
    return {"w": scale * (weight * error) @ X, "b": scale * jnp.sum(weight * error)}


def test_an_init_and_a_loss_are_a_model_and_any_batch_pytree_trains():
    model = mcjax.Model(init, weighted_loss, backprop=weighted_grad)
    kw = dict(optimizer="sgd", learning_rate=0.05, epochs=30, batch_size=8)
    by_hand = mcjax.train(model, (X, Y, WEIGHTS), grad="analytic", **kw)
    by_autodiff = mcjax.train(model, (X, Y, WEIGHTS), grad="autodiff", **kw)
    tol = tolerance(F64)
    chex.assert_trees_all_close(by_hand.params, by_autodiff.params, rtol=tol.rtol, atol=tol.atol)
    np.testing.assert_allclose(by_hand.params["w"], [1.0, -2.0, 0.5], atol=1e-3)
    # a dict batch works the same way
    as_dict = mcjax.Model(init, lambda p, b: weighted_loss(p, (b["x"], b["y"], b["weight"])))
    result = mcjax.train(as_dict, {"x": X, "y": Y, "weight": WEIGHTS}, **kw)
    chex.assert_trees_all_close(result.params, by_autodiff.params, rtol=tol.rtol, atol=tol.atol)


def _dropout_loss(params, batch, key):
    X, y = batch
    keep = jax.random.bernoulli(key, 0.8, X.shape)
    return jnp.mean((jnp.where(keep, X / 0.8, 0.0) @ params["w"] + params["b"] - y) ** 2)


def test_a_loss_that_takes_a_key_gets_a_fresh_one_every_step_and_resumes_exactly(tmp_path):
    draws = mcjax.Model(init, lambda p, b, key: jax.random.uniform(key, dtype=F64)
                        + 0.0 * p["b"])
    opt = mcjax.optimizer("sgd", learning_rate=0.1)
    params = init(jax.random.key(0))
    epoch = jax.jit(mcjax.steps.train_epoch(mcjax.objective(draws), opt, batch_size=8))
    losses = [epoch(params, opt.init(params), (X, Y), jax.random.key(e))[2]["loss"]
              for e in range(2)]
    assert len(set(np.concatenate(losses).tolist())) == 12  # 6 steps x 2 epochs, all different

    model = mcjax.Model(init, _dropout_loss)
    kw = dict(optimizer="adam", learning_rate=0.05, epochs=4, batch_size=8)
    straight = mcjax.train(model, (X, Y), **kw)
    again = mcjax.train(model, (X, Y), **kw)
    chex.assert_trees_all_equal(straight.params, again.params)
    assert mcjax.train(model, (X, Y), **{**kw, "seed": 1}).history != straight.history
    mcjax.train(model, (X, Y), checkpoint_dir=tmp_path, **{**kw, "epochs": 2})
    resumed = mcjax.train(model, (X, Y), checkpoint_dir=tmp_path, resume=True, **kw)
    chex.assert_trees_all_equal(straight.params, resumed.params)
    with pytest.raises(TypeError, match=r"has a loss that takes a key .*expected f\(params, "
                                        r"batch, key\)"):
        mcjax.objective(model)(straight.params, (X, Y))


SCALE = 0.0


def _scaled_loss(params, batch):
    X, y = batch
    return jnp.mean((X @ params["w"] + params["b"] - y) ** 2) + SCALE * jnp.sum(params["w"] ** 2)


def test_an_edited_global_compiles_anew_and_an_unchanged_call_compiles_nothing():
    global SCALE
    model = mcjax.Model(init, _scaled_loss)
    kw = dict(optimizer="sgd", learning_rate=0.01, epochs=2, batch_size=8)
    compiled = []

    def count(event, seconds, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(event)

    SCALE = 0.0
    plain = mcjax.train(model, (X, Y), **kw)
    SCALE = 10.0
    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        penalised = mcjax.train(model, (X, Y), **kw)
        assert compiled, "the edited loss was not compiled anew"
        del compiled[:]
        repeat = mcjax.train(model, (X, Y), **kw)
        assert not compiled, f"an unchanged call compiled {len(compiled)} programs"
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
        SCALE = 0.0
    assert float(jnp.sum(penalised.params["w"] ** 2)) < float(jnp.sum(plain.params["w"] ** 2))
    chex.assert_trees_all_equal(repeat.params, penalised.params)
