"""The training step, the epoch, the gradient sources and the optimizers (mcjax._train)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from compile_count import counting_compiles

import mcjax
from mcjax.conventions import tolerance

F64 = jnp.float64


def _neuron_case(key):
    model = mcjax.neuron_model(5, dtype=F64)
    (X, y), _ = mcjax.datasets.neuron_data(key, n_samples=24, n_features=5, noise=0.1, dtype=F64)
    return model, (X, y)


def _mlp_case(loss):
    def case(key):
        k_x, k_y = jax.random.split(key)
        model = mcjax.mlp_model((6, 7, 5, 3), loss=loss, dtype=F64)
        X = jax.random.normal(k_x, (9, 6), F64)
        if loss == "mse":
            Y = jax.random.normal(k_y, (9, 3), F64)
        else:
            Y = jax.random.randint(k_y, (9,), 0, 3)
        return model, (X, Y)

    return case


CASES = {
    "neuron": _neuron_case,
    "mlp_mse": _mlp_case("mse"),
    "mlp_softmax_cross_entropy": _mlp_case("softmax_cross_entropy"),
}


def _assert_close(got, reference, dtype=F64):
    # NumPy on the host: eager jnp would compile once per leaf shape
    tol = tolerance(dtype)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(reference), strict=True):
        g, r = np.asarray(g), np.asarray(r)
        assert np.max(np.abs(g - r)) <= tol.atol + tol.rtol * np.max(np.abs(r))


@pytest.mark.parametrize("case", CASES)
def test_analytic_gradient_equals_autodiff_in_float64(case):
    model, batch = CASES[case](jax.random.key(0))
    params = model.init(jax.random.key(1))
    analytic = jax.jit(jax.grad(mcjax.objective(model, grad="analytic")))(params, batch)
    autodiff = jax.jit(jax.grad(mcjax.objective(model, grad="autodiff")))(params, batch)
    assert jax.tree.structure(analytic) == jax.tree.structure(params)
    _assert_close(analytic, autodiff)


@pytest.mark.parametrize("case", ["neuron", "mlp_softmax_cross_entropy"])
def test_analytic_gradient_under_vmap_and_scan(case):
    model, (X, Y) = CASES[case](jax.random.key(2))
    params = model.init(jax.random.key(3))
    # per-example gradients: vmap over batches of one row
    batches = (X[:, None], Y[:, None])

    def per_example(grad):
        g = jax.grad(mcjax.objective(model, grad=grad))
        return jax.jit(jax.vmap(g, in_axes=(None, 0)))(params, batches)

    _assert_close(per_example("analytic"), per_example("autodiff"))

    def scanned(grad):
        g = jax.grad(mcjax.objective(model, grad=grad))
        return jax.lax.scan(lambda c, b: (c, g(params, b)), 0, batches)[1]

    _assert_close(jax.jit(lambda: scanned("analytic"))(), jax.jit(lambda: scanned("autodiff"))())


def test_analytic_source_really_uses_the_backprop_rule():
    model, batch = CASES["mlp_mse"](jax.random.key(4))
    wrong = model._replace(
        backprop=lambda p, batch: jax.tree.map(lambda g: 1.001 * g, model.backprop(p, batch))
    )
    params = model.init(jax.random.key(5))
    analytic = jax.jit(jax.grad(mcjax.objective(wrong, grad="analytic")))(params, batch)
    autodiff = jax.jit(jax.grad(mcjax.objective(wrong, grad="autodiff")))(params, batch)
    with pytest.raises(AssertionError):
        _assert_close(analytic, autodiff)


def test_unknown_grad_source_is_refused():
    with pytest.raises(ValueError, match=r"mcjax.objective: grad='numeric' .* 'autodiff', 'analytic'"):
        mcjax.objective(mcjax.neuron_model(2), grad="numeric")


@pytest.mark.parametrize("grad", mcjax.steps.GRAD_SOURCES)
def test_step_lowers_the_loss_and_donates_its_buffers(grad):
    model, batch = CASES["mlp_softmax_cross_entropy"](jax.random.key(6))
    params = model.init(jax.random.key(7))
    opt = mcjax.optimizer("adam", learning_rate=1e-2)
    step = mcjax.steps.make_train_step(mcjax.objective(model, grad=grad), opt)
    opt_state = opt.init(params)
    first = params
    losses = []
    for _ in range(5):
        params, opt_state, metrics = step(params, opt_state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0]
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(first))


def test_epoch_runs_every_minibatch_in_one_scan():
    model, (X, Y) = CASES["neuron"](jax.random.key(8))
    params = model.init(jax.random.key(9))
    opt = mcjax.optimizer("sgd", learning_rate=0.01)
    epoch = mcjax.steps.make_train_epoch(mcjax.objective(model), opt, batch_size=5)
    params, _, metrics = epoch(params, opt.init(params), (X, Y), jax.random.key(0))
    assert metrics["loss"].shape == (24 // 5,)


def test_epoch_without_shuffle_equals_the_steps_one_by_one():
    model, (X, Y) = CASES["mlp_mse"](jax.random.key(10))
    opt = mcjax.optimizer("momentum", learning_rate=0.05)
    loss = mcjax.objective(model, grad="analytic")
    p0 = model.init(jax.random.key(11))
    epoch = jax.jit(mcjax.steps.train_epoch(loss, opt, batch_size=3, shuffle=False))
    p_epoch, _, metrics = epoch(p0, opt.init(p0), (X, Y), jax.random.key(0))
    step = jax.jit(mcjax.steps.train_step(loss, opt))
    p, s = p0, opt.init(p0)
    for i in range(3):
        p, s, m = step(p, s, (X[3 * i: 3 * i + 3], Y[3 * i: 3 * i + 3]))
        np.testing.assert_allclose(m["loss"], metrics["loss"][i], rtol=1e-12)
    _assert_close(p_epoch, p)


# -- optimizers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw"])
def test_optimizers_by_name_train_the_neuron(name):
    (X, y), _ = mcjax.datasets.neuron_data(jax.random.key(0), n_samples=64, n_features=3, dtype=F64)
    result = mcjax.train(mcjax.neuron_model(3, dtype=F64), (X, y), optimizer=name,
                         learning_rate=0.02, grad="analytic", epochs=3, batch_size=16)
    assert result.history["loss"][-1] < result.history["loss"][0]


def test_optimizer_hyper_parameters_and_schedules():
    opt = mcjax.optimizer("momentum", learning_rate=mcjax.schedule("cosine_decay", init_value=0.1,
                                                                   decay_steps=10), momentum=0.5)
    assert isinstance(opt, optax.GradientTransformation)
    assert mcjax.schedule("exponential_decay", init_value=1.0, transition_steps=1,
                          decay_rate=0.5)(2) == pytest.approx(0.25)
    custom = optax.sgd(0.1)
    assert mcjax.optimizer(custom) is custom


def test_optimizer_errors_are_sentences():
    with pytest.raises(ValueError, match=r"mcjax.optimizer: 'adm' is not an optimizer.*did you mean adam"):
        mcjax.optimizer("adm")
    with pytest.raises(TypeError, match=r"optax.adam takes no hyper-parameter beta1; it takes b1"):
        mcjax.optimizer("adam", beta1=0.9)
    with pytest.raises(ValueError, match=r"mcjax.schedule: 'cosine' is not an optax schedule"):
        mcjax.schedule("cosine")


# -- the loop ------------------------------------------------------------------------------------
def _neuron_run(**kwargs):
    (X, y), _ = mcjax.datasets.neuron_data(jax.random.key(0), n_samples=48, n_features=3, dtype=F64)
    kw = dict(optimizer="adam", learning_rate=0.05, grad="analytic", epochs=4, batch_size=8)
    return mcjax.train(mcjax.neuron_model(3, dtype=F64), (X, y), **{**kw, **kwargs})


def test_one_seed_gives_the_same_result_twice():
    a, b, c = _neuron_run(seed=3), _neuron_run(seed=3), _neuron_run(seed=4)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    assert a.history == b.history
    assert a.history != c.history


def test_train_copies_the_callers_params_and_reports_history():
    model = mcjax.neuron_model(3, dtype=F64)
    params = model.init(jax.random.key(0))
    result = _neuron_run(params=params, evaluate=lambda p: {"w0": p["w"][0]}, progress=True)
    assert not params["w"].is_deleted()
    assert (result.epoch, result.step) == (4, 4 * 6)
    assert len(result.history["loss"]) == len(result.history["w0"]) == 4


def test_mismatched_features_fail_before_training():
    model = mcjax.mlp_model((8, 4, 3))
    X, Y = np.zeros((10, 7), np.float32), np.zeros((10,), np.int32)
    with pytest.raises(mcjax.ShapeError, match=(
            r"mcjax.train: X has shape \(10, 7\) but the first layer's W has shape \(4, 8\); "
            r"expected X of shape \(B, 8\)")):
        mcjax.train(model, (X, Y), epochs=1, batch_size=2)
    with pytest.raises(mcjax.ShapeError, match=r"mcjax.train: X has shape \(10, 8\) but Y has shape \(9,\)"):
        mcjax.train(model, (np.zeros((10, 8), np.float32), Y[:9]))
    with pytest.raises(mcjax.ShapeError, match=r"Y has shape \(10, 2\); expected Y of shape \(10, 3\)"):
        mcjax.train(mcjax.mlp_model((8, 3), loss="mse"), (np.zeros((10, 8), np.float32),
                                                          np.zeros((10, 2), np.float32)))
    with pytest.raises(mcjax.ShapeError, match=r"X has shape \(10, 2\) but the neuron's w has shape \(3,\)"):
        mcjax.train(mcjax.neuron_model(3), (np.zeros((10, 2)), np.zeros(10)))
    with pytest.raises(mcjax.ShapeError, match=r"batch_size=64 but the data has only 10 examples"):
        mcjax.train(model, (np.zeros((10, 8), np.float32), Y), batch_size=64)


def test_model_rejects_unknown_loss_and_activation():
    with pytest.raises(ValueError, match=r"mcjax.mlp_model: .*no rule named 'hinge'"):
        mcjax.mlp_model((3, 2), loss="hinge")
    with pytest.raises(ValueError, match=r"mcjax.mlp_model: .*no rule named 'gelu'"):
        mcjax.mlp_model((3, 2), activation="gelu")


def test_a_second_run_with_the_same_model_and_settings_does_not_compile_again():
    (X, y), _ = mcjax.datasets.neuron_data(jax.random.key(0), n_samples=48, n_features=3, dtype=F64)
    model = mcjax.neuron_model(3, dtype=F64)
    first = mcjax.train(model, (X, y), optimizer="sgd", learning_rate=0.01, epochs=1, seed=0)
    with counting_compiles() as again_compiles:
        again = mcjax.train(model, (X, y), optimizer="sgd", learning_rate=0.01, epochs=1, seed=1)
    with counting_compiles() as other_compiles:
        mcjax.train(model, (X, y), optimizer="sgd", learning_rate=0.02, epochs=1, seed=1)
    assert again_compiles.count == 0
    assert other_compiles.count > 0  # another learning rate is another program
    assert again.history != first.history  # another seed, the same program
