"""A resumed run knows what it computes: a change that changes the traced loss or optimizer is
refused, with a sentence that names it, wherever the change hides (an Equinox module's static
part, a linen module's class, a global function, optax.MultiSteps' k, a literal in a
hand-written optax update, a hyper-parameter held by a bound method); the same code resumes.
Optax-style transformations that are no GradientTransformation train and resume."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import chex
import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mcjax
from mcjax._program._fingerprint import Fingerprint, change, stable_digest
from mcjax._program._trace import function_key

F32 = jnp.float32
X = np.random.default_rng(0).standard_normal((32, 3)).astype(np.float32)
Y = np.sin(X[:, :1] - X[:, 1:2]).astype(np.float32)  # (32, 1): an MLP's targets
y = Y[:, 0]  # (32,): a linear model's


def _refusal(folder, first: mcjax.Model, second: mcjax.Model, *, optimizers=("adam", "adam"),
             data=(X, y)) -> str:
    """Train ``first`` for an epoch in ``folder``, then resume it with ``second``: the error."""
    kw = dict(batch_size=8, checkpoint_dir=folder)
    mcjax.train(first, data, epochs=1, optimizer=optimizers[0], **kw)
    with pytest.raises(mcjax.CheckpointError) as refused:
        mcjax.train(second, data, epochs=2, optimizer=optimizers[1], resume=True, **kw)
    message = str(refused.value)
    assert message.startswith(f"mcjax.train: cannot resume the run in {folder}")
    return message


# -- equinox: the activation lives in the static part, which the loss closes over ------------
def _mlp(key, activation=jax.nn.relu):
    return eqx.nn.MLP(3, 1, 8, 1, activation=activation, dtype=F32, key=key)


def _equinox_model(activation) -> mcjax.Model:
    static = eqx.partition(_mlp(jax.random.key(0), activation), eqx.is_inexact_array)[1]

    def init(key):  # the arrays do not depend on the activation
        return eqx.partition(_mlp(key), eqx.is_inexact_array)[0]

    def loss(params, batch):
        model = eqx.combine(params, static)
        return jnp.mean((jax.vmap(model)(batch[0]) - batch[1]) ** 2)

    return mcjax.Model(init, loss)


def test_another_activation_in_an_equinox_static_part_is_refused(tmp_path):
    message = _refusal(tmp_path, _equinox_model(jax.nn.relu), _equinox_model(jnp.tanh),
                       data=(X, Y))
    assert "the traced loss (and its gradient) differs: tanh where relu was" in message
    assert "model." not in message  # the settings are the same: only the program tells


def test_the_same_equinox_model_resumes_bit_identically(tmp_path):
    kw = dict(batch_size=8, optimizer="adam", learning_rate=0.01)
    straight = mcjax.train(_equinox_model(jax.nn.relu), (X, Y), epochs=3, **kw)
    mcjax.train(_equinox_model(jax.nn.relu), (X, Y), epochs=1, checkpoint_dir=tmp_path, **kw)
    resumed = mcjax.train(_equinox_model(jax.nn.relu), (X, Y), epochs=3, resume=True,
                          checkpoint_dir=tmp_path, **kw)
    assert resumed.resumed_from == tmp_path / "epoch_00000001"
    chex.assert_trees_all_equal((straight.params, straight.opt_state),
                                (resumed.params, resumed.opt_state))
    record = json.loads((tmp_path / "run.json").read_text())
    assert set(record["programs"]) == {"jax", "numerics", "loss", "optimizer"}


# -- flax linen: two module classes of one name, with the same shapes -------------------------
def _linen_class(activation):
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(activation(nn.Dense(8)(x)))

    return Net


def _linen_model(cls) -> mcjax.Model:
    net = cls()
    return mcjax.Model(lambda key: net.init(key, X[:1]),
                       lambda params, batch: jnp.mean((net.apply(params, batch[0])
                                                       - batch[1]) ** 2))


def test_another_linen_module_class_with_the_same_shapes_is_refused(tmp_path):
    message = _refusal(tmp_path, _linen_model(_linen_class(nn.relu)),
                       _linen_model(_linen_class(nn.tanh)), data=(X, Y))
    assert "the traced loss (and its gradient) differs: tanh where relu was" in message
    assert "model." not in message  # the settings are the same: only the program tells


# -- a global activation function ------------------------------------------------------------
ACTIVATION = jax.nn.relu


def _init(key):
    return {"w": 0.3 * jax.random.normal(key, (3,), F32), "b": jnp.zeros((), F32)}


def _global_loss(params, batch):
    return jnp.mean((ACTIVATION(batch[0] @ params["w"] + params["b"]) - batch[1]) ** 2)


def test_another_global_activation_is_refused_naming_the_users_line(tmp_path, monkeypatch):
    model = mcjax.Model(_init, _global_loss)
    mcjax.train(model, (X, y), epochs=1, batch_size=8, checkpoint_dir=tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "ACTIVATION", jnp.tanh)
    with pytest.raises(mcjax.CheckpointError) as refused:
        mcjax.train(model, (X, y), epochs=2, batch_size=8, checkpoint_dir=tmp_path, resume=True)
    message = str(refused.value)
    assert "the traced loss (and its gradient) differs: tanh where relu was (`ACTIVATION(" \
           "batch[0] @ params[\"w\"] + params[\"b\"])` (test_train_identity.py:" in message
    assert "model." not in message


# -- optax.MultiSteps: accepted, trains, resumes; its k is part of the run --------------------
def test_optax_multisteps_trains_and_resumes_bit_identically(tmp_path):
    model = mcjax.Model(_init, _global_loss)
    every_two = optax.MultiSteps(optax.sgd(0.1), every_k_schedule=2)
    assert not isinstance(every_two, optax.GradientTransformation)  # why it used to be refused
    kw = dict(optimizer=every_two, batch_size=8)
    straight = mcjax.train(model, (X, y), epochs=4, **kw)
    assert straight.history["loss"][-1] < straight.history["loss"][0]
    # two minibatches make one update: the parameters after one epoch (4 minibatches) are
    # those of plain SGD's two steps on the mean gradient of each pair
    one = mcjax.train(model, (X, y), epochs=1, shuffle=False, **kw)
    params = _init(jax.random.split(jax.random.key(0))[0])
    for pair in (slice(0, 16), slice(16, 32)):
        grads = [jax.grad(_global_loss)(params, (X[s], y[s]))
                 for s in (slice(pair.start, pair.start + 8), slice(pair.start + 8, pair.stop))]
        params = jax.tree.map(lambda p, a, b: p - 0.1 * (a + b) / 2, params, *grads)
    chex.assert_trees_all_close(one.params, params, rtol=1e-5, atol=1e-6)
    mcjax.train(model, (X, y), epochs=2, checkpoint_dir=tmp_path, **kw)
    resumed = mcjax.train(model, (X, y), epochs=4, checkpoint_dir=tmp_path, resume=True, **kw)
    chex.assert_trees_all_equal((straight.params, straight.opt_state),
                                (resumed.params, resumed.opt_state))


def test_another_k_of_optax_multisteps_is_refused(tmp_path):
    model = mcjax.Model(_init, _global_loss)
    message = _refusal(tmp_path, model, model, optimizers=(
        optax.MultiSteps(optax.adam(1e-2), every_k_schedule=2),
        optax.MultiSteps(optax.adam(1e-2), every_k_schedule=3)))
    assert "the traced optimizer (its init and update) differs: " in message
    assert "the traced loss" not in message and "optimizer.transformation" not in message


def test_a_class_or_a_name_is_no_optimizer():
    with pytest.raises(ValueError, match=r"optimizer=<class .*MultiSteps'>; expected a name such "
                                         r"as 'adam' or an optax transformation \(an object "
                                         r"with init and update"):
        mcjax.train(mcjax.Model(_init, _global_loss), (X, y), optimizer=optax.MultiSteps)


# -- a literal inside a hand-written optax update: the same function, edited ---------------------
HAND_SGD = '''
import jax
import optax


def update(updates, state, params=None):
    return jax.tree.map(lambda g: -{rate} * g, updates), state


sgd = optax.GradientTransformation(lambda params: optax.EmptyState(), update)
'''


def _module(folder, name: str, source: str):
    """``source`` imported as the module ``name`` from ``folder`` (a file edited between two
    runs is a new module of the same name)."""
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_another_literal_in_a_hand_written_optax_update_is_refused(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    before = _module(tmp_path / "v1", "hand_sgd", HAND_SGD.format(rate=0.1))
    after = _module(tmp_path / "v2", "hand_sgd", HAND_SGD.format(rate=0.2))
    model = mcjax.Model(_init, _global_loss)
    message = _refusal(tmp_path / "run", model, model, optimizers=(before.sgd, after.sgd))
    assert "the traced optimizer (its init and update) differs: `mul -0.2` where `mul -0.1` " \
           "was (`-0.2 * g` (hand_sgd.py:7))" in message
    assert "optimizer.transformation" not in message  # the same function's name, no closure


# -- a hyper-parameter held by a bound method ----------------------------------------------------
class Penalised:
    def __init__(self, weight: float):
        self.weight = weight

    def loss(self, params, batch):
        fit = jnp.mean((batch[0] @ params["w"] + params["b"] - batch[1]) ** 2)
        return fit + self.weight * jnp.sum(params["w"] ** 2)


def test_another_hyper_parameter_of_a_bound_method_is_refused(tmp_path):
    message = _refusal(tmp_path, mcjax.Model(_init, Penalised(0.1).loss),
                       mcjax.Model(_init, Penalised(0.5).loss))
    assert "the traced loss (and its gradient) differs: `mul 0.5` where `mul 0.1` was " \
           "(`self.weight * jnp.sum(params[\"w\"] ** 2)` (test_train_identity.py:" in message
    assert "model." not in message


def test_a_run_resumed_with_float64_switched_off_is_refused_saying_so(tmp_path):
    """Float64 on or off changes what JAX traces (Adam's bias correction is computed in the
    widest float), so the same code under other numerics settings is another program."""
    model = mcjax.Model(_init, _global_loss)
    mcjax.train(model, (X, y), epochs=1, batch_size=8, checkpoint_dir=tmp_path)
    with jax.enable_x64(False), pytest.raises(mcjax.CheckpointError) as refused:
        mcjax.train(model, (X, y), epochs=2, batch_size=8, checkpoint_dir=tmp_path, resume=True)
    message = str(refused.value)
    assert "the traced optimizer (its init and update) differs: convert_element_type gone" \
        in message and "the traced loss" not in message
    assert "(the run was traced with jax_enable_x64=True, this process has " \
           "jax_enable_x64=False: these settings change what JAX traces)" in message


# -- the record -----------------------------------------------------------------------------
def test_a_run_recorded_before_fingerprints_resumes_and_gains_them(tmp_path):
    model = mcjax.Model(_init, Penalised(0.1).loss)
    mcjax.train(model, (X, y), epochs=1, batch_size=8, checkpoint_dir=tmp_path)
    record = json.loads((tmp_path / "run.json").read_text())
    programs = record.pop("programs")
    (tmp_path / "run.json").write_text(json.dumps(record))
    resumed = mcjax.train(model, (X, y), epochs=2, batch_size=8, checkpoint_dir=tmp_path,
                          resume=True)
    assert resumed.resumed_from == tmp_path / "epoch_00000001"
    assert json.loads((tmp_path / "run.json").read_text())["programs"] == programs
    with pytest.raises(mcjax.CheckpointError, match="differs: `mul 0.5` where `mul 0.1` was"):
        mcjax.train(mcjax.Model(_init, Penalised(0.5).loss), (X, y), epochs=3, batch_size=8,
                    checkpoint_dir=tmp_path, resume=True)


def _trace(fn, *args):
    return Fingerprint.of(function_key(fn, *args, differentiated=False))


def test_a_fingerprint_says_what_changed_and_survives_its_record():
    x = jax.ShapeDtypeStruct((3,), F32)
    relu = _trace(lambda v: jnp.sum(jax.nn.relu(v)), x)
    assert Fingerprint.from_json(json.loads(json.dumps(relu.to_json()))) == relu
    assert change(relu, _trace(lambda v: jnp.sum(jax.nn.relu(v)), x)) == ""
    assert re.fullmatch(r"tanh where relu was \(`jnp.tanh\(v\)` \(test_train_identity.py:\d+\)\)",
                        change(relu, _trace(lambda v: jnp.sum(jnp.tanh(v)), x)))
    assert change(relu, _trace(lambda v: jnp.sum(jnp.sin(jax.nn.relu(v))), x)).startswith(
        "sin added (`jnp.sin(jax.nn.relu(v))` (test_train_identity.py:")
    assert change(_trace(lambda v: jnp.sum(jnp.sin(jax.nn.relu(v))), x), relu) == "sin gone"
    # closed-over constants: the same program text, other values
    one, two = np.ones(3, np.float32), np.full(3, 2.0, np.float32)
    assert change(_trace(lambda v: jnp.sum(v * one), x), _trace(lambda v: jnp.sum(v * two), x)) \
        == "a constant it closes over (float32[3]) holds other values"
    # a record without an account of the operations still refuses, in general words
    digest_only = Fingerprint(relu.digest, None, relu.constants)
    assert change(digest_only, _trace(lambda v: jnp.sum(jnp.tanh(v)), x)) == \
        "its program is another (the record keeps no account of its operations)"


class _Node:
    """A pytree node whose static data prints with its memory address."""

    def __init__(self, x, aux):
        self.x, self.aux = x, aux


jax.tree_util.register_pytree_node(_Node, lambda n: ((n.x,), n.aux),
                                   lambda aux, children: _Node(children[0], aux))


def test_a_digest_does_not_depend_on_memory_addresses():
    def key_of(aux):
        return function_key(lambda x: _Node(x, aux), jax.ShapeDtypeStruct((2,), F32),
                            differentiated=False).key

    a, b = key_of(object()), key_of(object())
    assert a != b and "object at 0x" in repr(a)
    assert stable_digest(a) == stable_digest(b)
    assert stable_digest(key_of(1)) != stable_digest(key_of(2))


# the fingerprints of an Equinox, a linen and a MultiSteps run, as this process and a new one
# (another hash seed, other object addresses) trace them, under the suite's settings
FINGERPRINTS = '''
import json
import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import mcjax
from mcjax._train._models import objective
from mcjax._train._programs import fingerprints

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
f32 = jnp.float32
batch = (jax.ShapeDtypeStruct((8, 3), f32), jax.ShapeDtypeStruct((8, 1), f32))
mlp = eqx.nn.MLP(3, 1, 8, 2, activation=jax.nn.gelu, dtype=f32, key=jax.random.key(0))
params, static = eqx.partition(mlp, eqx.is_inexact_array)


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.tanh(nn.Dense(8)(x)))


def run(init, loss, optimizer):
    shapes = jax.eval_shape(init, jax.random.key(0))
    state = jax.eval_shape(optimizer.init, shapes)
    found = fingerprints(objective(mcjax.Model(init, loss)), optimizer, shapes, batch,
                         jax.eval_shape(lambda: jax.random.key(0)), state)
    return {name: fp.digest for name, fp in found.items()}


DIGESTS = {
    "equinox": run(lambda key: params, lambda p, b: jnp.mean(
        (jax.vmap(eqx.combine(p, static))(b[0]) - b[1]) ** 2), optax.adamw(1e-3)),
    "linen": run(lambda key: Net().init(key, jnp.zeros((1, 3), f32)), lambda p, b: jnp.mean(
        (Net().apply(p, b[0]) - b[1]) ** 2), optax.chain(optax.clip_by_global_norm(1.0),
                                                        optax.adam(1e-3))),
    "multisteps": run(lambda key: {"w": jnp.zeros((3, 1), f32)}, lambda p, b: jnp.mean(
        (b[0] @ p["w"] - b[1]) ** 2), optax.MultiSteps(optax.sgd(0.1), every_k_schedule=4)),
}
if __name__ == "__main__":
    print(json.dumps(DIGESTS))
'''


def test_the_same_code_has_the_same_fingerprints_in_a_new_process():
    here: dict = {}
    exec(compile(FINGERPRINTS, "fingerprints.py", "exec"), here)
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONHASHSEED": "12345",
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", FINGERPRINTS], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == here["DIGESTS"]
    assert len({d for run in here["DIGESTS"].values() for d in run.values()}) == 6
