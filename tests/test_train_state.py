"""A model's state in mcjax.train: running statistics and RNG counts are carried from step to
step, checkpointed, and never trained.

nnx updates a BatchNorm's statistics and an Rngs' counts in place: they are read back after
the loss; an eqx.nn.State and linen's batch_stats come back from the loss, which returns
(loss, new_state) (Model(..., returns_state=True)).  Each is compared with the framework's own
training loop written with optax on the same batches.  What cannot be carried is refused in
one sentence.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mcjax
from mcjax._core._conventions import tolerance

eqx = pytest.importorskip("equinox", minversion="0.13")
flax = pytest.importorskip("flax", minversion="0.12")
from flax import linen, nnx  # noqa: E402

F32 = jnp.float32
TOL = tolerance(F32)
_rng = np.random.default_rng(0)
X = jnp.asarray(_rng.standard_normal((64, 3)) * 2.0 + 5.0, F32)  # far from BatchNorm's init
Y = jnp.asarray(_rng.standard_normal((64, 1)), F32)
B, EPOCHS, LR = 16, 3, 0.01
SETTINGS = dict(epochs=EPOCHS, batch_size=B, learning_rate=LR, optimizer="sgd", shuffle=False,
                progress=False)
STEPS = EPOCHS * (64 // B)


def init_key():
    return jax.random.split(jax.random.key(0))[0]  # the key mcjax.train initialises with


def same_batches():
    return [(X[i:i + B], Y[i:i + B]) for _ in range(EPOCHS) for i in range(0, 64, B)]


def assert_close(got, want):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=TOL.rtol, atol=TOL.atol)


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(3, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, momentum=0.5, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(nnx.relu(self.bn(self.lin(x)))))


def nnx_init(key):
    return NnxNet(nnx.Rngs(params=key, dropout=jax.random.fold_in(key, 1)))


def nnx_loss(model, batch):
    x, y = batch
    model.train()  # batch statistics, dropout on
    return jnp.mean((model(x) - y) ** 2)


def bits(tree):  # nnx.Rngs' keys compared by their bits
    return [jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a
            for a in jax.tree.leaves(tree)]


def test_nnx_batchnorm_and_dropout_as_nnx_trains_them(tmp_path):
    result = mcjax.train(mcjax.Model(nnx_init, nnx_loss), (X, Y), **SETTINGS)
    reference = nnx_init(init_key())
    opt = nnx.Optimizer(reference, optax.sgd(LR), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, batch):
        opt.update(model, nnx.grad(nnx_loss)(model, batch))

    for batch in same_batches():
        step(reference, opt, batch)
    trained = result.params
    assert isinstance(trained, NnxNet)
    # the running mean moved from its init (0) to the batches' (~ -5..6 here), as nnx's
    assert float(jnp.max(jnp.abs(trained.bn.mean[...]))) > 1.0
    assert_close(nnx.state(trained, nnx.BatchStat), nnx.state(reference, nnx.BatchStat))
    # one dropout mask per step: the stream's count advanced once a step, as in nnx's loop,
    # and the parameters trained under those masks are nnx's
    assert int(trained.drop.rngs.count[...]) == STEPS == int(reference.drop.rngs.count[...])
    assert_close(nnx.state(trained, nnx.Param), nnx.state(reference, nnx.Param))
    # the statistics are not trained: the optimizer's state holds no BatchStat
    assert not any(a.shape == (8,) for a in jax.tree.leaves(result.opt_state))

    given = mcjax.train(mcjax.Model(nnx_init, nnx_loss), (X, Y), params=nnx_init(init_key()),
                        **SETTINGS)  # a module passed in is carried as init's is
    for a, b in zip(bits(given.params), bits(trained), strict=True):
        np.testing.assert_array_equal(a, b)

    halfway = dict(SETTINGS, epochs=1)
    mcjax.train(mcjax.Model(nnx_init, nnx_loss), (X, Y), checkpoint_dir=tmp_path, **halfway)
    resumed = mcjax.train(mcjax.Model(nnx_init, nnx_loss), (X, Y), checkpoint_dir=tmp_path,
                          resume=True, **SETTINGS)
    assert resumed.resumed_from is not None
    for a, b in zip(bits(resumed.params), bits(trained), strict=True):
        np.testing.assert_array_equal(a, b)  # statistics and counts restored, bit for bit


class EqxNet(eqx.Module):
    lin: eqx.nn.Linear
    bn: eqx.nn.BatchNorm
    out: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.lin = eqx.nn.Linear(3, 8, key=k1, dtype=F32)
        self.bn = eqx.nn.BatchNorm(8, axis_name="batch", momentum=0.5, mode="ema", dtype=F32)
        self.out = eqx.nn.Linear(8, 1, key=k2, dtype=F32)

    def __call__(self, x, state):
        h, state = self.bn(self.lin(x), state)
        return self.out(jax.nn.relu(h)), state


def eqx_init(key):
    return eqx.nn.make_with_state(EqxNet)(key)  # (model, state)


def eqx_loss(model_and_state, batch):
    model, state = model_and_state
    x, y = batch
    pred, state = jax.vmap(model, axis_name="batch", in_axes=(0, None),
                           out_axes=(0, None))(x, state)
    return jnp.mean((pred - y) ** 2), state


def test_an_equinox_batchnorm_state_comes_back_from_the_loss():
    result = mcjax.train(mcjax.Model(eqx_init, eqx_loss, returns_state=True), (X, Y),
                         **SETTINGS)
    model, state = eqx_init(init_key())
    opt = optax.sgd(LR)
    opt_state = opt.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, state, opt_state, batch):  # the Equinox tutorial's stateful step
        (_, state), grads = eqx.filter_value_and_grad(
            lambda m: eqx_loss((m, state), batch), has_aux=True)(model)
        updates, opt_state = opt.update(grads, opt_state)
        return eqx.apply_updates(model, updates), state, opt_state

    for batch in same_batches():
        model, state, opt_state = step(model, state, opt_state, batch)
    got_model, got_state = result.params
    assert isinstance(got_state, eqx.nn.State)
    assert float(jnp.max(jnp.abs(got_state.get(got_model.bn.ema_state_index)[0]))) > 0.5
    assert_close(got_state.get(got_model.bn.ema_state_index), state.get(model.bn.ema_state_index))
    assert_close(eqx.filter(got_model, eqx.is_inexact_array),
                 eqx.filter(model, eqx.is_inexact_array))


class LinenNet(linen.Module):
    @linen.compact
    def __call__(self, x, train: bool):
        h = linen.BatchNorm(use_running_average=not train, momentum=0.5)(linen.Dense(4)(x))
        return linen.Dense(1)(linen.relu(h))


def linen_init(key):
    return LinenNet().init(key, X[:2], train=False)  # {"params": ..., "batch_stats": ...}


def linen_loss(variables, batch):
    x, y = batch
    pred, updates = LinenNet().apply(variables, x, train=True, mutable=["batch_stats"])
    return jnp.mean((pred - y) ** 2), updates


def test_linen_batch_stats_come_back_from_the_loss():
    result = mcjax.train(mcjax.Model(linen_init, linen_loss, returns_state=True), (X, Y),
                         **SETTINGS)
    variables = linen_init(init_key())
    params, stats = variables["params"], {"batch_stats": variables["batch_stats"]}
    for batch in same_batches():  # linen's own loop: grad of params, batch_stats from apply
        (_, stats), grads = jax.value_and_grad(
            lambda p, s: linen_loss({"params": p, **s}, batch), has_aux=True)(params, stats)
        params = jax.tree.map(lambda p, g: p - LR * g, params, grads)
    assert_close(result.params["batch_stats"], stats["batch_stats"])
    assert_close(result.params["params"], params)


def test_state_that_cannot_be_carried_is_refused_in_one_sentence():
    with pytest.raises(ValueError, match=(
            r"^mcjax.train: model 'model' holds state \(eqx.nn.State\) that its loss cannot "
            r"update in place; expected a loss that returns \(loss, new_state\), declared with "
            r"mcjax.Model\(init, loss, returns_state=True\)$")):
        mcjax.train(mcjax.Model(eqx_init, lambda m, b: eqx_loss(m, b)[0]), (X, Y), **SETTINGS)
    with pytest.raises(ValueError, match=r"holds state \(linen collection 'batch_stats'\)"):
        mcjax.train(mcjax.Model(linen_init, lambda v, b: linen_loss(v, b)[0]), (X, Y),
                    **SETTINGS)
    with pytest.raises(ValueError, match=(
            r"^mcjax.train: model 'm' declares returns_state=True but its init returns no "
            r"state .*; expected returns_state=False$")):
        mcjax.train(mcjax.Model(lambda k: {"w": jnp.zeros((3, 1), F32)},
                                lambda p, b: (jnp.mean(b[0] @ p["w"]), {}), returns_state=True,
                                name="m"), (X, Y), **SETTINGS)
    with pytest.raises(ValueError, match=(
            r"holds state \(nnx.BatchStat, nnx.RngCount\) and grad='analytic' cannot carry it.*"
            r"expected grad='autodiff'$")):
        mcjax.train(mcjax.Model(nnx_init, nnx_loss, backprop=nnx.grad(nnx_loss)), (X, Y),
                    grad="analytic", **SETTINGS)
    with pytest.raises(TypeError, match=(
            r"^mcjax.train: the loss of model 'model' returns float32\(\); expected \(loss, "
            r"new_state\), as it declares returns_state=True")):
        mcjax.train(mcjax.Model(eqx_init, lambda m, b: eqx_loss(m, b)[0], returns_state=True),
                    (X, Y), **SETTINGS)
    with pytest.raises(mcjax.ShapeError, match=(
            r"returns a new state of float32\(8,\) but the model's state holds bool\(\), "
            r"float32\(8,\), float32\(8,\); expected the same arrays")):
        mcjax.train(mcjax.Model(eqx_init, lambda m, b: (eqx_loss(m, b)[0], jnp.zeros(8, F32)),
                                returns_state=True), (X, Y), **SETTINGS)


def test_an_nnx_module_that_gains_variables_in_its_loss_is_refused():
    class Grows(nnx.Module):
        def __init__(self, rngs):
            self.norm = nnx.BatchNorm(3, rngs=rngs)
            self.out = nnx.Linear(3, 1, rngs=rngs)

        def __call__(self, x):
            h = self.norm(x)
            self.last = nnx.BatchStat(h)  # a variable the module did not have at init
            return self.out(h)

    with pytest.raises(mcjax.ShapeError, match=(
            r"^mcjax.train: the loss of model 'model' leaves the module's state \(its variables "
            r"other than nnx.Param\) as float32\(16, 3\), float32\(3,\), float32\(3,\) but the "
            r"model's state holds float32\(3,\), float32\(3,\); expected the same arrays")):
        mcjax.train(mcjax.Model(lambda k: Grows(nnx.Rngs(k)), nnx_loss), (X, Y), **SETTINGS)
