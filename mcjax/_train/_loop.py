"""The training loop: epochs of the compiled step, checkpoints, resume, progress, failures.

Python runs once per epoch (the epoch itself is one compiled :func:`jax.lax.scan`): there it
reads the epoch's losses back, stops on a NaN or Inf, updates the progress bar, writes a
checkpoint at the chosen interval, and honours Ctrl-C at the end of the epoch in progress.

Determinism: the initial parameters come from ``jax.random.key(seed)`` and epoch ``e``
shuffles with ``fold_in(key, e)``, so an epoch's work depends only on the state at its start
and its number.  A run resumed from the checkpoint of epoch ``e`` therefore ends with the
same parameters, bit for bit, as a run that was never interrupted.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mcjax._errors import NonFiniteLossError, Problems, shape_str
from mcjax._train import _checkpoint, _sharding
from mcjax._train._compiled import compiled_epoch, optimizer_key
from mcjax._train._gradients import check_grad_source, objective
from mcjax._train._models import Model
from mcjax._train._optim import optimizer as make_optimizer
from mcjax._train._progress import EpochProgress
from mcjax._train._step import make_train_epoch


class TrainResult(NamedTuple):
    """What :func:`mcjax.train` returns.

    Attributes:
      params: the trained parameters (device arrays).
      opt_state: the optimizer's state.
      history: per-epoch lists: ``"loss"`` (the mean of the epoch's minibatch losses) and
        one list per metric that ``evaluate`` returns.
      epoch: completed epochs.
      step: completed optimizer steps.
      compile_seconds: the time spent compiling the epoch in this call: near 0 when an
        earlier call with the same model and settings compiled it, or when JAX's persistent
        compilation cache holds it.
      seconds: wall time of the training loop in this call, compilation excluded.
      checkpoint: the last checkpoint written or restored, or None.
      resumed_from: the checkpoint this run resumed from, or None.
      interrupted: True when Ctrl-C stopped the run at the end of an epoch (a checkpoint
        was written if ``checkpoint_dir`` was given).
    """

    params: Any
    opt_state: Any
    history: dict[str, list[float]]
    epoch: int
    step: int
    compile_seconds: float
    seconds: float
    checkpoint: Path | None
    resumed_from: Path | None
    interrupted: bool


def _check_data(model: Model, params, data, batch_size: int) -> None:
    """Shapes of the data against each other and against the model, before anything runs."""
    problems = Problems("train")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        problems.shape(f"data is a {type(data).__name__}; expected a tuple (X, Y) of arrays")
        problems.raise_if_any()
    X, Y = data
    if np.ndim(X) < 1 or np.ndim(Y) < 1 or np.shape(X)[0] != np.shape(Y)[0]:
        problems.shape(
            f"X has shape {shape_str(np.shape(X))} but Y has shape {shape_str(np.shape(Y))}; "
            "expected one row of each per example (the same first dimension)"
        )
    problems.raise_if_any()
    model.check("train", params, X, Y)
    if np.shape(X)[0] < batch_size:
        problems.shape(
            f"batch_size={batch_size} but the data has only {np.shape(X)[0]} examples; expected "
            f"a batch_size of at most {np.shape(X)[0]}"
        )
    problems.raise_if_any()


def _config(model: Model, optimizer, learning_rate, options, grad, batch_size, shuffle, seed,
            n_examples) -> dict:
    """What a checkpoint must have been written with to be resumed by this run."""
    described = optimizer if isinstance(optimizer, str) else "custom optax transformation"
    rate = learning_rate if isinstance(learning_rate, (int, float)) else "schedule"
    return {**model.config, "grad": grad, "optimizer": described, "learning_rate": rate,
            "optimizer_options": {k: repr(v) for k, v in sorted((options or {}).items())},
            "batch_size": batch_size, "shuffle": shuffle, "seed": seed, "examples": n_examples}


def _resume(directory, config, like):
    latest = _checkpoint.latest_checkpoint(directory)
    if latest is None:
        return None
    meta = _checkpoint.read_metadata(latest)
    differ = sorted(k for k in set(config) | set(meta.get("config", {}))
                    if config.get(k) != meta.get("config", {}).get(k))
    if differ:
        listed = "; ".join(f"{k}: {meta.get('config', {}).get(k)!r} there, {config.get(k)!r} now"
                           for k in differ)
        raise ValueError(
            f"mcjax.train: cannot resume from {latest}: it was written by a different run "
            f"({listed}); use another checkpoint_dir or the same settings"
        )
    state, meta = _checkpoint.restore_checkpoint(latest, like)
    return latest, jax.device_put(state), meta


@contextmanager
def _deferred_interrupt():
    """The first Ctrl-C sets a flag that the loop reads at the end of the epoch; a second one
    interrupts at once.  (Signal handlers can only be set from the main thread.)"""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if flag.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        flag.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _non_finite(losses, epoch, steps_per_epoch, checkpoint) -> NonFiniteLossError:
    bad = int(np.flatnonzero(~np.isfinite(losses))[0])
    step = epoch * steps_per_epoch + bad + 1
    where = (f"the last good checkpoint, kept, is {checkpoint}" if checkpoint is not None
             else "no checkpoint was written (pass checkpoint_dir to keep one)")
    return NonFiniteLossError(
        f"mcjax.train: the loss is {losses[bad]} at step {step} (epoch {epoch + 1}, batch "
        f"{bad + 1} of {steps_per_epoch}); training stopped; {where}. Lower the learning rate "
        "or check the data for NaN/Inf",
        step=step, epoch=epoch + 1, checkpoint=checkpoint, value=float(losses[bad]),
    )


def train(
    model: Model,
    data: tuple,
    *,
    params=None,
    optimizer: str | optax.GradientTransformation = "adam",
    learning_rate: float | optax.Schedule = 1e-3,
    optimizer_options: Mapping[str, Any] | None = None,
    grad: str = "autodiff",
    epochs: int = 10,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    keep_checkpoints: int | None = 3,
    resume: bool = False,
    evaluate: Callable[[Any], Mapping[str, float]] | None = None,
    progress: bool = False,
    devices=None,
) -> TrainResult:
    r"""Train ``model`` on ``data`` by minibatch gradient descent, jitted, one scan per epoch.

    Each step computes $\nabla_\theta L$ on B examples, from JAX autodiff or from the
    registry's hand-derived rules (``grad``), and applies an optax optimizer.

    Args:
      model: a :class:`~mcjax.Model` (:func:`~mcjax.neuron_model`, :func:`~mcjax.mlp_model`).
      data: ``(X, Y)``, arrays with N rows: X (N, ...) inputs, Y (N, ...) targets.
      params: initial parameters (default: ``model.init`` with a key from ``seed``).
      optimizer: an optimizer name for :func:`mcjax.optimizer` (``"sgd"``, ``"momentum"``,
        ``"adam"``, any optax name) or an ``optax.GradientTransformation``.
      learning_rate: $\eta$, a float or an optax schedule (used with a name only).
      optimizer_options: the optimizer's other hyper-parameters (with a name only).
      grad: ``"autodiff"`` or ``"analytic"``.
      epochs: the total number of epochs (a resumed run counts those already done).
      batch_size: B; an epoch runs ``N // B`` steps.
      shuffle: reshuffle the rows every epoch (``jax.random``).
      seed: the seed of the initial parameters and of the shuffling.
      checkpoint_dir: write checkpoints there (see :func:`mcjax.save_checkpoint`).
      checkpoint_every: write one every this many epochs; the last epoch and an interrupted
        one always get one.
      keep_checkpoints: how many of the newest checkpoints to keep (None: all).
      resume: continue from the newest checkpoint in ``checkpoint_dir`` if there is one.
      evaluate: called after every epoch with the parameters; the floats it returns are
        appended to ``history`` (e.g. test accuracy).  Don't keep the parameters it gets:
        the next epoch updates their buffers in place.
      progress: show a progress bar (rich, on stderr), updated once per epoch.
      devices: ``None`` (the default device) or data-parallel training on a mesh: a number
        of devices, ``"all"``, a sequence of ``jax.Device`` or a ``jax.sharding.Mesh`` with a
        ``"data"`` axis (see :func:`mcjax.data_mesh`).  Each minibatch is split along
        ``"data"``; parameters, optimizer state and the dataset are replicated.  The result
        equals the one-device run up to float32 reduction order, and checkpoints restore on
        any number of devices.  In a multi-process run (:func:`mcjax.init_distributed`) every
        process passes the same ``data`` and process 0 writes the checkpoints.

    Returns:
      A :class:`~mcjax.TrainResult`.

    Raises:
      ShapeError: the data does not fit the model, or ``batch_size`` is not a multiple of
        the number of devices (raised before anything is compiled).
      NonFiniteLossError: a loss was NaN or Inf; it names the step and the last good
        checkpoint, which is kept.
      ValueError: ``resume`` found a checkpoint written with different settings.
    """
    check_grad_source("train", grad)
    if epochs < 0 or batch_size < 1 or checkpoint_every < 1:
        raise ValueError(
            f"mcjax.train: epochs={epochs}, batch_size={batch_size}, "
            f"checkpoint_every={checkpoint_every}; expected epochs >= 0 and the others >= 1"
        )
    init_key, shuffle_key = jax.random.split(jax.random.key(seed))
    # shapes first (eval_shape computes nothing), so that a misfit fails before any work
    _check_data(model, jax.eval_shape(model.init, init_key) if params is None else params,
                data, batch_size)
    mesh = None if devices is None else _sharding.data_mesh(devices, function="train")
    if mesh is not None:
        _sharding.check_divisible("train", batch_size, mesh, subject=f"batch_size={batch_size}",
                                  hint="")
    # one compiled init rather than one eager op per layer; the epoch donates (updates in
    # place) the buffers it gets, so the caller's parameters are copied
    params = jax.jit(model.init)(init_key) if params is None else jax.tree.map(jnp.copy, params)
    data = tuple(jax.device_put(data)) if mesh is None else _sharding.replicate(tuple(data), mesh)
    opt = make_optimizer(optimizer, learning_rate=learning_rate, **(optimizer_options or {}))
    loss = objective(model, grad=grad)
    # run every trace-time check of the rules (dtypes, shapes) on one batch, still before
    # anything is compiled
    jax.eval_shape(loss, params, tuple(a[:batch_size] for a in data))
    opt_state = opt.init(params)

    n_examples = int(data[0].shape[0])
    steps_per_epoch = n_examples // batch_size
    config = _config(model, optimizer, learning_rate, optimizer_options, grad, batch_size,
                     shuffle, seed, n_examples)
    history: dict[str, list[float]] = {"loss": []}
    start, checkpoint, resumed_from = 0, None, None
    if checkpoint_dir is not None:
        _checkpoint.remove_stale_temporaries(checkpoint_dir)
        if resume:
            found = _resume(checkpoint_dir, config, (params, opt_state))
            if found is not None:
                resumed_from, (params, opt_state), meta = found
                checkpoint, start, history = resumed_from, meta["epoch"], meta["history"]
    if mesh is not None:
        params, opt_state, shuffle_key = _sharding.replicate((params, opt_state, shuffle_key), mesh)

    opt_key, keep = optimizer_key(optimizer, learning_rate, optimizer_options)
    tic = time.perf_counter()
    compiled = compiled_epoch(
        (id(model), grad, opt_key, batch_size, shuffle, mesh), (model, *keep),
        lambda: make_train_epoch(loss, opt, batch_size=batch_size, shuffle=shuffle, mesh=mesh),
        (params, opt_state, data, shuffle_key),
    )
    compile_seconds = time.perf_counter() - tic

    def save(epoch):
        meta = {"step": epoch * steps_per_epoch, "history": history, "config": config}
        return _checkpoint.save_checkpoint(checkpoint_dir, (params, opt_state), epoch=epoch,
                                           metadata=meta, keep=keep_checkpoints)

    interrupted = False
    tic = time.perf_counter()
    with _deferred_interrupt() as stop, EpochProgress(progress, start, epochs) as bar:
        for epoch in range(start, epochs):
            key = jax.random.fold_in(shuffle_key, epoch)
            params, opt_state, metrics = compiled(params, opt_state, data, key)
            losses = np.asarray(metrics["loss"])
            if not np.isfinite(losses).all():
                raise _non_finite(losses, epoch, steps_per_epoch, checkpoint)
            history["loss"].append(float(losses.mean()))
            for name, value in (evaluate(params) if evaluate else {}).items():
                history.setdefault(name, []).append(float(value))
            bar.update(epoch + 1, history)
            interrupted = stop.is_set()
            done = epoch + 1
            if checkpoint_dir is not None and jax.process_index() == 0 and (
                done % checkpoint_every == 0 or done == epochs or interrupted
            ):
                checkpoint = save(done)
            if interrupted:
                break
    seconds = time.perf_counter() - tic
    done = len(history["loss"])
    return TrainResult(params, opt_state, history, done, done * steps_per_epoch,
                       compile_seconds, seconds, checkpoint, resumed_from, interrupted)

