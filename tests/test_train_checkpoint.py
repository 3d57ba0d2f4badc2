"""Checkpoints, resume and failures of the training loop, in one process."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mcjax
from mcjax._train import _checkpoint

F64 = jnp.float64


def _state():
    params = mcjax.mlp_init(jax.random.key(0), (3, 4, 2), dtype=jnp.float32)
    opt_state = optax.adam(1e-3).init(params)
    return params, opt_state


def test_save_and_restore_round_trip_bit_for_bit(tmp_path):
    state = (*_state(), {"half": jnp.arange(3, dtype=jnp.bfloat16)})
    path = mcjax.save_checkpoint(tmp_path, state, epoch=7, metadata={"note": "x"})
    assert path.name == "ckpt-00000007.npz" and mcjax.latest_checkpoint(tmp_path) == path
    restored, meta = mcjax.restore_checkpoint(path, like=state)
    assert meta["epoch"] == 7 and meta["note"] == "x"
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype
        np.testing.assert_array_equal(got, np.asarray(want))


def test_checkpoints_cannot_run_code_and_refuse_another_state(tmp_path):
    path = mcjax.save_checkpoint(tmp_path, _state(), epoch=1)
    with np.load(path, allow_pickle=False) as f:  # readable without pickle
        assert all(f[name].dtype != object for name in f.files)
    other = (mcjax.mlp_init(jax.random.key(0), (3, 5, 2)), optax.adam(1e-3).init(_state()[0]))
    with pytest.raises(ValueError, match=r"mcjax.restore_checkpoint: .* has shape \(4, 3\) .* "
                                         r"expected shape \(5, 3\)"):
        mcjax.restore_checkpoint(path, like=other)
    with pytest.raises(TypeError, match="is a PRNG key"):
        mcjax.save_checkpoint(tmp_path, {"key": jax.random.key(0)}, epoch=2)


def test_old_checkpoints_are_pruned_and_torn_temporaries_ignored(tmp_path):
    for epoch in range(1, 6):
        mcjax.save_checkpoint(tmp_path, _state(), epoch=epoch, keep=2)
    # a writer killed mid-write leaves only a temporary file, never a torn checkpoint
    (tmp_path / ".tmp-ckpt-dead.npz").write_bytes(b"PK\x03\x04 torn")
    names = sorted(p.name for p in _checkpoint.checkpoints(tmp_path))
    assert names == ["ckpt-00000004.npz", "ckpt-00000005.npz"]
    assert mcjax.latest_checkpoint(tmp_path).name == "ckpt-00000005.npz"
    _checkpoint.remove_stale_temporaries(tmp_path)
    assert not list(tmp_path.glob(".tmp-*"))
    assert mcjax.latest_checkpoint(tmp_path / "none") is None


def _run(tmp_path, **kwargs):
    (X, y), _ = mcjax.neuron_data(jax.random.key(1), n_samples=40, n_features=3, dtype=F64)
    kw = dict(optimizer="momentum", learning_rate=0.02, grad="analytic", epochs=6,
              batch_size=8, checkpoint_dir=tmp_path, checkpoint_every=2)
    return mcjax.train(mcjax.neuron_model(3, dtype=F64), (X, y), **{**kw, **kwargs})


def test_resume_ends_with_the_parameters_of_an_uninterrupted_run(tmp_path):
    straight = _run(tmp_path / "a")
    _run(tmp_path / "b", epochs=3)  # stops after epoch 3: checkpoints at 2 and 3
    resumed = _run(tmp_path / "b", resume=True)
    assert resumed.resumed_from.name == "ckpt-00000003.npz"
    for x, y in zip(jax.tree.leaves((straight.params, straight.opt_state)),
                    jax.tree.leaves((resumed.params, resumed.opt_state))):
        np.testing.assert_array_equal(x, y)
    assert resumed.history == straight.history and resumed.step == straight.step


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    _run(tmp_path, epochs=2)
    with pytest.raises(ValueError, match=r"cannot resume from .*ckpt-00000002.npz.*"
                                         r"learning_rate: 0.02 there, 0.5 now"):
        _run(tmp_path, learning_rate=0.5, resume=True)
    assert _run(tmp_path / "empty", resume=True, epochs=1).resumed_from is None


def test_non_finite_loss_stops_at_once_without_a_checkpoint_to_keep(tmp_path):
    (X, y), _ = mcjax.neuron_data(jax.random.key(1), n_samples=40, n_features=3, dtype=F64)
    with pytest.raises(mcjax.NonFiniteLossError) as caught:
        mcjax.train(mcjax.neuron_model(3, dtype=F64), (X, y.at[5].set(jnp.nan)), epochs=3,
                    batch_size=40)
    error = caught.value
    assert (error.step, error.epoch, error.checkpoint) == (1, 1, None)
    assert "the loss is nan at step 1 (epoch 1, batch 1 of 1)" in str(error)
    assert "no checkpoint was written" in str(error)


def test_divergence_names_the_step_and_the_kept_checkpoint(tmp_path):
    # plain SGD with a huge step on the MLP diverges to inf/nan within a few epochs
    X = jax.random.normal(jax.random.key(0), (64, 4), F64)
    Y = 100.0 * jax.random.normal(jax.random.key(1), (64, 2), F64)
    model = mcjax.mlp_model((4, 16, 2), loss="mse", dtype=F64)
    with pytest.raises(mcjax.NonFiniteLossError) as caught:
        mcjax.train(model, (X, Y), optimizer="sgd", learning_rate=0.05, epochs=50, batch_size=16,
                    checkpoint_dir=tmp_path, checkpoint_every=1, keep_checkpoints=1)
    error = caught.value
    assert error.epoch > 1 and error.step > 4
    assert error.checkpoint == mcjax.latest_checkpoint(tmp_path)
    assert f"at step {error.step} (epoch {error.epoch}" in str(error)
    assert f"the last good checkpoint, kept, is {error.checkpoint}" in str(error)
    saved, meta = mcjax.restore_checkpoint(error.checkpoint, like=(model.init(jax.random.key(0)),
                                                                    optax.sgd(0.05).init(model.init(jax.random.key(0)))))
    assert meta["epoch"] == error.epoch - 1
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(saved))
    assert json.loads(json.dumps(meta["history"]))["loss"][-1] > 0
    assert os.path.exists(error.checkpoint)
