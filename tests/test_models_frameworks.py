"""Models as researchers hold them: Equinox modules (whole, with a function-valued field, or
partitioned), flax.nnx Modules and their State, linen variables (dict or FrozenDict), in
mcjax.check, mcjax.derive and mcjax.train.

The trained leaves are differentiated: the inexact array leaves (eqx.filter's rule) except a
model's state (nnx.BatchStat, linen's batch_stats: tests/test_model_roles.py); functions,
integer arrays and the rest pass through untouched.  A gradient in the model's own type (a module from
eqx.filter_grad with None at the activation, one built with eqx.tree_at, nnx.grad's State for
a Module, a FrozenDict for a dict) is a gradient, never called as a VJP function; a VJP
function may be marked with mcjax.vjp.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax

eqx = pytest.importorskip("equinox", minversion="0.13")
flax = pytest.importorskip("flax", minversion="0.12")
from flax import linen, nnx  # noqa: E402
from flax.core import FrozenDict  # noqa: E402

F32 = jnp.float32
X = jnp.asarray([0.3, -1.2, 0.7], F32)


def loss(model, x):
    return jnp.sum(jnp.tanh(model(x)) ** 2)


@pytest.fixture(scope="module")
def mlp():
    """eqx.nn.MLP: its `activation` is a function-valued field (a pytree leaf)."""
    return eqx.nn.MLP(3, 2, 5, 2, activation=jax.nn.softplus, dtype=F32, key=jax.random.key(0))


def hand_gradient(model, x):
    """A hand gradient built as researchers build one: eqx.tree_at on the model itself (its
    activation stays a function)."""
    g = eqx.filter_grad(loss)(model, x)
    where = lambda m: [leaf for layer in m.layers for leaf in (layer.weight, layer.bias)]  # noqa: E731
    return eqx.tree_at(where, model, where(g))


def off_at_one_entry(model, x):
    g = hand_gradient(model, x)
    return eqx.tree_at(lambda m: m.layers[1].weight, g, g.layers[1].weight.at[3, 3].mul(1.5))


def without_bias_terms(model, x):  # a dropped term: the biases' gradients are zero
    g = eqx.filter_grad(loss)(model, x)
    return eqx.tree_at(lambda m: [layer.bias for layer in m.layers], g,
                       [jnp.zeros_like(layer.bias) for layer in g.layers])


def test_an_equinox_mlp_whole_its_activation_a_field(mlp):
    for derivative in (eqx.filter_grad(loss), hand_gradient):
        r = mcjax.check(loss, derivative, mlp, X)
        assert r.ok, r
    wrong = mcjax.check(loss, off_at_one_entry, mlp, X)
    assert not wrong.ok and wrong.worst[0].label == "model.layers[1].weight[3, 3]", wrong
    assert not mcjax.check(loss, without_bias_terms, mlp, X).ok
    fast = mcjax.check(loss, off_at_one_entry, mlp, X, mode="fast")
    assert not fast.ok and fast.mode == "fast", fast


def test_a_float_field_is_a_static_hyper_parameter_as_in_equinox():
    class Scaled(eqx.Module):  # eqx.nn.Dropout's p is such a field
        w: jax.Array
        temperature: float = 2.0

        def __call__(self, x):
            return jnp.tanh(self.w * x / self.temperature)

    model = Scaled(jnp.asarray([0.5, -1.0, 2.0], F32))
    hand = lambda m, x: eqx.tree_at(lambda g: g.w, m, (1 - m(x) ** 2) * x / m.temperature)  # noqa: E731
    assert mcjax.check(lambda m, x: jnp.sum(m(x)), hand, model, X).ok  # temperature kept
    assert mcjax.check(lambda m, x: jnp.sum(m(x)), eqx.filter_grad(lambda m, x: jnp.sum(m(x))),
                       model, X).ok  # temperature None


def test_a_partitioned_equinox_model_with_jax_grad(mlp):
    params, static = eqx.partition(mlp, eqx.is_array)

    def f(p, x):
        return loss(eqx.combine(p, static), x)

    r = mcjax.check(f, jax.grad(f), params, X)
    assert r.ok, r  # an eqx module is callable: the gradient, not a VJP function
    flipped = lambda p, x: eqx.tree_at(lambda g: g.layers[0].weight, jax.grad(f)(p, x),  # noqa: E731
                                       replace_fn=jnp.negative)
    wrong = mcjax.check(f, flipped, params, X)
    assert not wrong.ok and wrong.worst[0].label.startswith("p.layers[0].weight["), wrong


def test_jax_grad_of_a_model_with_a_function_field_says_what_to_use(mlp):
    with pytest.raises(mcjax.TraceError, match=r"holds functions \(a model's activation\).*"
                                               r"eqx.filter_grad"):
        mcjax.check(loss, jax.grad(loss), mlp, X)


def test_vjp_functions_recognised_without_guessing_from_callable(mlp):
    def pullback(m, x):  # eqx.filter_vjp's pullback returns a 1-tuple, as jax.vjp's
        return eqx.filter_vjp(lambda m: loss(m, x), m)[1]

    assert mcjax.check(loss, pullback, mlp, X).ok
    marked = lambda m, x: mcjax.vjp(lambda u: pullback(m, x)(u)[0])  # noqa: E731
    assert mcjax.check(loss, marked, mlp, X).ok
    doubled = lambda m, x: mcjax.vjp(lambda u: pullback(m, x)(2 * u))  # noqa: E731
    assert not mcjax.check(loss, doubled, mlp, X).ok
    assert "mcjax.vjp(<lambda>)" in repr(mcjax.vjp(lambda u: u))
    with pytest.raises(TypeError, match=r"mcjax.vjp: fn is a str, not a function"):
        mcjax.vjp("u")

    class Pullback(eqx.Module):  # a callable pytree of arrays: a gradient unless marked
        w: jax.Array

        def __call__(self, u):
            return jax.tree.map(lambda g: u * g, eqx.filter_grad(loss)(mlp, X))

    with pytest.raises(mcjax.ShapeError, match=r"returned a Pullback with leaves \.w \(\).*"
                                               r"wrap it: mcjax.vjp\(fn\)"):
        mcjax.check(loss, lambda m, x: Pullback(jnp.ones(())), mlp, X)
    assert mcjax.check(loss, lambda m, x: mcjax.vjp(Pullback(jnp.ones(()))), mlp, X).ok


def test_derive_over_an_equinox_mlp(mlp):
    J = mcjax.derive(loss)(mlp, X)
    assert isinstance(J, eqx.nn.MLP) and J.activation is None  # the static part: None
    dense = jax.tree.map(lambda j: j.dense(), J, is_leaf=lambda j: isinstance(j, mcjax.Jacobian))
    want = eqx.filter_grad(loss)(mlp, X)
    for got, ref in zip(jax.tree.leaves(dense), jax.tree.leaves(want)):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert isinstance(mcjax.derive(loss, argnums=1)(mlp, X), mcjax.Jacobian)  # model not derived
    assert mcjax.check(loss, mcjax.derive(loss), mlp, X).ok


def nnx_mlp():
    return nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.tanh,
                          nnx.Linear(4, 2, rngs=nnx.Rngs(1)))


def test_flax_nnx_module_and_state_with_nnx_grad():
    model = nnx_mlp()
    assert mcjax.check(loss, nnx.grad(loss), model, X).ok
    assert mcjax.check(loss, jax.grad(loss), model, X).ok
    doubled = lambda m, x: jax.tree.map(lambda g: 2 * g, nnx.grad(loss)(m, x))  # noqa: E731
    wrong = mcjax.check(loss, doubled, model, X)
    assert not wrong.ok and wrong.worst[0].label.startswith("model.layers["), wrong
    graph, state = nnx.split(model)

    def f(state, x):
        return loss(nnx.merge(graph, state), x)

    # nnx.grad of the Module gives a State: the Module's leaves, path for path
    via_module = lambda s, x: nnx.grad(loss)(nnx.merge(graph, s), x)  # noqa: E731
    assert mcjax.check(f, jax.grad(f), state, X).ok
    assert mcjax.check(f, via_module, state, X).ok
    no_bias = lambda s, x: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda p, g: 0 * g if "bias" in jax.tree_util.keystr(p) else g, jax.grad(f)(s, x))
    assert not mcjax.check(f, no_bias, state, X).ok


def test_linen_variables_as_a_dict_or_a_frozendict():
    dense = linen.Dense(2)
    variables = dense.init(jax.random.key(0), X)

    def f(v, x):
        return jnp.sum(jnp.tanh(dense.apply(v, x)) ** 2)

    frozen = FrozenDict(variables)
    assert isinstance(variables, dict)
    assert mcjax.check(f, jax.grad(f), variables, X).ok
    assert mcjax.check(f, jax.grad(f), frozen, X).ok
    # the same gradient in the other container: the leaves match by path and shape
    assert mcjax.check(f, lambda v, x: FrozenDict(jax.grad(f)(v, x)), variables, X).ok
    assert mcjax.check(f, lambda v, x: jax.grad(f)(v, x).unfreeze(), frozen, X).ok
    scaled = lambda v, x: FrozenDict(jax.tree.map(lambda g: 1.1 * g, jax.grad(f)(v, x)))  # noqa: E731
    assert not mcjax.check(f, scaled, variables, X).ok
    assert not mcjax.check(f, lambda v, x: jax.tree.map(lambda g: -g, jax.grad(f)(v, x)),
                           frozen, X).ok


def test_a_container_mismatch_names_both_structures():
    dense = linen.Dense(2)
    variables = dense.init(jax.random.key(0), X)

    def f(v, x):
        return jnp.sum(dense.apply(v, x) ** 2)

    renamed = lambda v, x: {"p": jax.grad(f)(v, x)["params"]}  # noqa: E731
    with pytest.raises(mcjax.ShapeError, match=(
            r"^mcjax.check: derivative returned a dict with leaves \['p'\]\['bias'\] \(2,\), "
            r"\['p'\]\['kernel'\] \(3, 2\) but the differentiated argument is a dict with leaves "
            r"\['params'\]\['bias'\] \(2,\), \['params'\]\['kernel'\] \(3, 2\): the same shapes "
            r"in another structure; expected the gradient in the argument's own structure")):
        mcjax.check(f, renamed, variables, X)


def test_a_model_without_floating_arrays_is_refused_in_one_sentence():
    class Counter(eqx.Module):
        n: jax.Array
        act: object = jax.nn.relu

    with pytest.raises(mcjax.DtypeError, match=r"args\[0\]\.n, which has dtype int"):
        mcjax.check(lambda c: jnp.sum(c.n * 1.0), lambda c: c, Counter(jnp.arange(3)))
    def activation(z):
        return jnp.tanh(z)

    with pytest.raises(TypeError, match=r"mcjax.derive: args\[0\] is a function; expected a "
                                        r"floating array \(or a pytree or model holding some\)"):
        mcjax.derive(lambda act: jnp.sum(act(X)))(activation)


def test_every_result_prints_whatever_container_it_sits_in(mlp, tmp_path):
    model = nnx_mlp()
    graph, state = nnx.split(model)
    variables = linen.Dense(2).init(jax.random.key(0), X)
    results = [
        mcjax.derive(loss)(mlp, X),
        mcjax.derive(loss)(model, X),
        mcjax.derive(lambda s, x: loss(nnx.merge(graph, s), x))(state, X),
        mcjax.derive(lambda v, x: jnp.sum(linen.Dense(2).apply(v, x)))(FrozenDict(variables), X),
        mcjax.check(loss, off_at_one_entry, mlp, X),
        [mcjax.check(loss, eqx.filter_grad(loss), mlp, X)],
    ]
    for result in results:
        assert repr(result) and str(result)


def test_train_an_equinox_mlp_from_its_init(tmp_path):
    rng = np.random.default_rng(0)
    inputs = jnp.asarray(rng.standard_normal((32, 3)), F32)
    targets = jnp.sin(inputs @ jnp.asarray([1.0, -2.0, 0.5], F32))[:, None]

    def init(key):
        return eqx.nn.MLP(3, 1, 6, 1, activation=jnp.tanh, dtype=F32, key=key)

    def mse(model, batch):
        x, y = batch
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)

    model = mcjax.Model(init, mse)
    kw = dict(epochs=4, batch_size=8, learning_rate=0.01)
    first = mcjax.train(model, (inputs, targets), checkpoint_dir=tmp_path, **{**kw, "epochs": 2})
    assert isinstance(first.params, eqx.nn.MLP) and first.params.activation is jnp.tanh
    resumed = mcjax.train(model, (inputs, targets), checkpoint_dir=tmp_path, resume=True, **kw)
    straight = mcjax.train(model, (inputs, targets), **kw)
    loss = straight.history["loss"]
    assert resumed.resumed_from is not None and loss[-1] < loss[0], loss
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(straight.params)):
        np.testing.assert_array_equal(a, b)  # the resumed run is the uninterrupted one
    assert repr(straight) and str(straight)
    relu = mcjax.Model(lambda key: eqx.nn.MLP(3, 1, 6, 1, activation=jax.nn.relu, dtype=F32,
                                              key=key), mse)
    with pytest.raises(mcjax.CheckpointError, match="relu where tanh was"):
        mcjax.train(relu, (inputs, targets), checkpoint_dir=tmp_path, resume=True, **kw)
    analytic = mcjax.train(mcjax.Model(init, mse, backprop=eqx.filter_grad(mse)),
                           (inputs, targets), grad="analytic", **kw)
    assert analytic.backprop_check.ok and analytic.history["loss"] == loss
