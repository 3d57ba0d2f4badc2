"""``mcjax.train``: the settings in, a prepared run, its epochs, the result out."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import optax

from mcjax._train._config import TrainConfig
from mcjax._train._defaults import DEFAULTS
from mcjax._train._history import EpochRecord
from mcjax._train._loop import prepare, run_epochs
from mcjax._train._models import Model
from mcjax._train._optim import Transformation
from mcjax._train._result import TrainResult


def train(
    model: Model,
    data,
    *,
    params=None,
    optimizer: str | Transformation = DEFAULTS.optimizer,
    learning_rate: float | optax.Schedule | None = None,
    optimizer_options: Mapping[str, Any] | None = None,
    grad: str = DEFAULTS.grad,
    epochs: int = DEFAULTS.epochs,
    batch_size: int = DEFAULTS.batch_size,
    shuffle: bool = DEFAULTS.shuffle,
    seed: int = DEFAULTS.seed,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = DEFAULTS.checkpoint_every,
    keep_checkpoints: int | None = DEFAULTS.keep_checkpoints,
    resume: bool = False,
    overwrite: bool = False,
    evaluate: Callable[[Any], Mapping[str, float]] | None = None,
    progress: bool | None = DEFAULTS.progress,
    devices=None,
    callback: Callable[[EpochRecord], Any] | None = None,
    check_backprop: bool = DEFAULTS.check_backprop,
) -> TrainResult:
    r"""Train ``model`` on ``data`` by minibatch gradient descent, jitted, one scan per epoch.

    Each step computes $\nabla_\theta L$ on B examples, from JAX autodiff or from the model's
    hand-derived gradient (``grad``), and applies an optax optimizer.  Every input is checked
    before anything is compiled; a bad one raises an error that names it, what was expected
    and what arrived.  A hand-derived gradient is checked too, by :func:`mcjax.check` at the
    first batch.  ``mcjax train`` has the same defaults.

    Args:
      model: a :class:`~mcjax.Model`: your own ``Model(init, loss)``, or
        :func:`~mcjax.neuron_model`, :func:`~mcjax.mlp_model`.
      data: a pytree of arrays with N rows each (one example per row): ``(X, Y)``,
        ``(X, Y, weights)``, a dict; finite, and each minibatch is the same pytree with B rows.
      params: initial parameters (default: ``model.init`` with a key from ``seed``); they
        must have ``init``'s structure, shapes and dtypes, and be finite.
      optimizer: an optimizer name for :func:`mcjax.optimizer` (``"sgd"``, ``"momentum"``,
        ``"adam"``, the default, any optax name) or an optax transformation: any object
        with ``init`` and ``update`` (``optax.adam(1e-3)``, ``optax.MultiSteps(...)``).
      learning_rate: $\eta > 0$, a float or an optax schedule (with a name only; default 1e-3).
      optimizer_options: the optimizer's other hyper-parameters (with a name only).
      grad: ``"autodiff"`` (the default) or ``"analytic"`` (the model's ``backprop``, checked
        first: see ``check_backprop``).
      epochs: the total number of epochs (default 10; a resumed run counts those already done).
      batch_size: B (default 32); an epoch runs ``N // B`` steps.
      shuffle: reshuffle the rows every epoch (``jax.random``).
      seed: the seed of the initial parameters, the shuffling and the steps' keys (default 0).
      checkpoint_dir: the run's checkpoint folder (orbax; see docs/training.md for its
        layout): a new or empty folder for a new run.  It records the run's configuration
        and holds one lock, so another run never writes or prunes there.
      checkpoint_every: write one every this many epochs (default 1); the last epoch and an
        interrupted one always get one.
      keep_checkpoints: how many of the newest checkpoints to keep (>= 1; None: all).
      resume: continue the run in ``checkpoint_dir`` from its newest intact checkpoint (a
        damaged newer one is stepped over with a warning).  Its settings, data, model and
        arrays must be the ones it was started with, and so must what it computes: the
        traced loss (with its gradient) and optimizer, compared by fingerprint, so that an
        edited activation, literal or hyper-parameter held by an object is refused too.
      overwrite: start a new run in ``checkpoint_dir`` although another run's checkpoints are
        there: they are deleted (and only they).
      evaluate: called after every epoch with the parameters; the numbers it returns are
        appended to ``history`` (e.g. test accuracy).  Don't keep the parameters it gets:
        the next epoch updates their buffers in place.
      progress: show a progress bar (rich, on stderr), updated once per epoch; it stays at
        its last epoch when the run ends.  None (the default): when stderr is a terminal or
        a notebook's.
      devices: ``None`` (the default device) or data-parallel training on a mesh: a number
        of devices, ``"all"``, a sequence of ``jax.Device`` or a ``jax.sharding.Mesh`` with a
        ``"data"`` axis (see :func:`mcjax.sharding.data_mesh`).  Each minibatch is split along
        ``"data"``; parameters, optimizer state and the dataset are replicated.  The result
        equals the one-device run up to float32 reduction order, and checkpoints restore on
        any number of devices.  In a multi-process run (:func:`mcjax.sharding.init_distributed`) every
        process passes the same ``data``; all take part in saving checkpoints.
      callback: called after every epoch (and its checkpoint) with an
        :class:`~mcjax.EpochRecord`: epoch, step, loss, metrics, the epoch's per-step losses,
        the parameters; e.g. to write a log (docs/training.md).  It runs between two compiled
        epochs, so it changes no number of the run; what it raises stops the run.
      check_backprop: with ``grad="analytic"``, run :func:`mcjax.check` on the model's
        ``backprop`` against the gradient of its loss, at the initial (or resumed) parameters
        and the first step's minibatch, before training (default True); the passing report
        is ``result.backprop_check``.

    Returns:
      A :class:`~mcjax.TrainResult`.  SIGTERM or SIGINT (Ctrl-C) stop the run at the end of
      the epoch in progress, with a checkpoint, and ``interrupted=True``; a second signal
      changes nothing (it never cuts a checkpoint's save short).

    Raises:
      ValueError: a setting is out of range or of the wrong kind (all are listed), or the data
        hold NaN or Inf.
      ShapeError: the data do not fit the model, or ``batch_size`` is not a multiple of the
        number of devices (raised before anything is compiled).
      CheckpointError: ``checkpoint_dir`` cannot serve this run: a file, another run's folder,
        another process's, a missing or empty folder to resume, or a checkpoint written with
        other settings, data, model or arrays, or by code that traces to another loss or
        optimizer (every difference is listed, the program's first one in words), or an unreadable
        ``run.json``; or, during the run, its ``run.lock`` was removed (the next checkpoint is
        not written: another process may be writing there).
      OSError: a checkpoint could not be written (a full disk): the message names the last
        intact checkpoint, which the run resumes from.
      NonFiniteLossError: a loss, or the state after an update, was NaN or Inf; it names the
        step and the last good checkpoint, which is kept and finite.
      DerivativeError: ``backprop`` is not the gradient of the loss at the first batch; the
        message holds :func:`mcjax.check`'s report (``.report``).
    """
    if callback is not None and not callable(callback):
        raise TypeError(f"mcjax.train: callback={callback!r:.60}; expected a function "
                        "EpochRecord -> None, or None")
    config = TrainConfig(optimizer, learning_rate, optimizer_options, grad, epochs, batch_size,
                         shuffle, seed, checkpoint_dir, checkpoint_every, keep_checkpoints,
                         resume, overwrite, check_backprop)
    run = prepare(model, data, config, params=params, devices=devices, evaluate=evaluate)
    return run_epochs(run, progress=progress, callback=callback)
