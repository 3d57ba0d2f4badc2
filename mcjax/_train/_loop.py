"""The training loop: prepare a run (every check, the folder, the compiled epoch), then run it.

:func:`prepare` does everything that can fail on a bad input, in order, before a single epoch
runs: the settings (:class:`TrainConfig`), the model, the data, the parameters, one traced
step, the checkpoint folder (its identity, its lock, the state to resume), and the compiled
epoch.  :func:`run_epochs` is then the algorithm: for each epoch, run the compiled scan,
stop at the first non-finite loss or state, record the history, checkpoint when due or when
a signal asked to stop.

Determinism: the initial parameters come from ``jax.random.key(seed)`` and epoch ``e``
shuffles (and draws its steps' keys) with ``fold_in(key, e)``, so an epoch's work depends only
on the state at its start and its number.  A run resumed from the checkpoint of epoch ``e``
therefore ends with the same parameters, bit for bit, as a run that was never interrupted.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._core._conventions import standard_promotion
from mcjax._core._errors import CheckpointError, Problems, ShapeError, shape_str
from mcjax._program._compile import compile_keyed
from mcjax._train import _history, _sharding
from mcjax._train._backprop_check import check_backprop
from mcjax._train._checkpoint import leaf_names
from mcjax._train._compiled import compiled_epoch
from mcjax._train._config import TrainConfig
from mcjax._train._data import check_data, fingerprint
from mcjax._train._describe import describe
from mcjax._train._models import Model, WithState, check_model, objective, takes_key, trained_part
from mcjax._train._optim import reports, update
from mcjax._train._programs import fingerprints
from mcjax._train._progress import EpochProgress
from mcjax._train._result import TrainResult
from mcjax._train._run_folder import RunFolder
from mcjax._train._static import carried, check_state, split_model, static_part, whole
from mcjax._train._step import loss_and_grad, value_only
from mcjax._train._stops import StopSignals, agreed, non_finite


@dataclass
class Run:
    """A prepared run: the compiled epoch, the state it starts from, where it checkpoints."""

    config: TrainConfig
    epoch_program: Callable
    params: Any
    opt_state: Any
    data: Any
    shuffle_key: jax.Array
    steps_per_epoch: int
    start: int
    folder: RunFolder | None
    evaluate: Callable | None
    compile_seconds: float
    history: dict[str, list[float]] = field(default_factory=lambda: {"loss": []})
    checkpoint: Path | None = None
    resumed_from: Path | None = None
    backprop_check: Any = None
    static: Any = None  # the model's part that is not trained (_static), None if none


def _params_template(model: Model, init_key, params):
    """The parameters' shapes and dtypes, from ``init`` (nothing is computed); given
    parameters must match them and be finite."""
    shapes = jax.eval_shape(model.init, init_key)
    if params is None:
        return shapes
    problems = Problems("train")
    want, got = leaf_names(shapes), leaf_names(params)
    for name in sorted(set(want) | set(got)):
        if name not in got or name not in want:
            problems.shape(f"params has {'no' if name not in got else 'an extra'} array {name}")
        elif (np.shape(got[name]), jnp.result_type(got[name])) != (want[name].shape,
                                                                    want[name].dtype):
            problems.shape(f"params {name} is {jnp.result_type(got[name])}"
                           f"{shape_str(np.shape(got[name]))} but model.init gives "
                           f"{want[name].dtype}{shape_str(want[name].shape)}")
    problems.raise_if_any()
    bad = [name for name, leaf in got.items() if not np.isfinite(np.asarray(leaf)).all()]
    if bad:
        raise ValueError(f"mcjax.train: params {', '.join(bad)} hold NaN or Inf; expected "
                         "finite initial parameters")
    return shapes


def _check_backprop(model: Model, params, batch, key) -> None:
    """A hand-derived gradient must have the parameters' structure, shapes and dtypes."""
    backprop = model.backprop
    assert backprop is not None  # checked only where there is one
    wants_key = takes_key(backprop)
    grads = leaf_names(jax.eval_shape(
        lambda p, b, k: backprop(p, b, key=k) if wants_key else backprop(p, b),
        params, batch, key))
    want = leaf_names(params)
    wrong = [f"{name}: {g.dtype}{shape_str(g.shape)}" if name in want else f"{name}: extra"
             for name, g in grads.items()
             if name not in want or (g.shape, g.dtype) != (want[name].shape, want[name].dtype)]
    wrong += [f"{name}: missing" for name in want if name not in grads]
    if wrong:
        raise ShapeError(f"mcjax.train: the backprop of model {model.name!r} returns gradients "
                         f"that do not match the parameters ({'; '.join(wrong)}); expected the "
                         "structure, shapes and dtypes of params")


def _step_inputs(data, batch_size: int):
    """The shapes of one step's minibatch and key."""
    batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct((batch_size, *np.shape(a)[1:]),
                                                        jnp.result_type(a)), data)
    return batch, jax.eval_shape(lambda: jax.random.key(0))


def _trace_one_step(model: Model, loss, optimizer, params, data, batch_size: int, *,
                    analytic: bool):
    """Trace (compute nothing) one step on one batch: every trace-time check of the model's
    loss, its hand gradient and the optimizer fires here, before anything is compiled."""
    batch, key = _step_inputs(data, batch_size)
    wants_key = takes_key(loss)

    def keyed(fn):  # the key as an argument: eval_shape traces it
        return lambda p, b, k: fn(p, b, **({"key": k} if wants_key else {}))

    value = jax.eval_shape(keyed(loss), params, batch, key)
    if isinstance(params, WithState):
        value = value[0]  # (loss, new_state)
    if value.shape != () or not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(f"mcjax.train: the loss of model {model.name!r} returns {value.dtype}"
                        f"{shape_str(value.shape)}; expected a floating scalar (e.g. the mean "
                        "over the batch)")
    if analytic:
        _check_backprop(model, params, batch, key)
    grads = jax.eval_shape(keyed(lambda p, b, **k: loss_and_grad(loss, p, b, **k)[1]),
                           params, batch, key)
    opt_state = jax.eval_shape(optimizer.init, trained_part(params))

    def step_update(g, s, p, b, k):  # p: what the step carries (the loss reads its state)
        read = value_only(loss, p)
        return update(optimizer, g, s, trained_part(p), batch=b,
                      loss=functools.partial(read, key=k) if wants_key else read)

    try:
        with standard_promotion():  # optax is written for JAX's standard promotion
            jax.eval_shape(step_update, grads, opt_state, params, batch, key)
    except Exception as error:  # noqa: BLE001 - a user's optimizer may raise anything
        raise ValueError(f"mcjax.train: the optimizer cannot update this model's parameters "
                         f"({type(error).__name__}: {error})") from error
    return opt_state


def _as_saved(params, opt_state) -> dict:
    """What a checkpoint holds: ``params`` and ``opt_state``, and the model's ``state`` apart
    from its parameters when it has one."""
    if isinstance(params, WithState):
        return {"params": params.params, "state": params.state, "opt_state": opt_state}
    return {"params": params, "opt_state": opt_state}


def _from_saved(saved) -> tuple[Any, Any]:
    params = WithState(saved["params"], saved["state"]) if "state" in saved else saved["params"]
    return params, saved["opt_state"]


def _placement(mesh):
    return (_sharding.replicated(mesh) if mesh is not None
            else jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))


def prepare(model: Model, data, config: TrainConfig, *, params=None, devices=None,
            evaluate: Callable | None = None) -> Run:
    """Check everything, open the checkpoint folder, restore or initialise the state, and
    compile the epoch; nothing has been trained when it returns."""
    check_model("train", model, config.grad)
    given = model  # an Equinox module's functions, say, are carried along, not trained
    static, sources = static_part(model.init, config.seed, params)
    check_state(model, sources)
    if sources and config.grad == "analytic":
        raise ValueError(f"mcjax.train: model {model.name!r} holds state ({', '.join(sources)}) "
                         "and grad='analytic' cannot carry it (a backprop returns no new "
                         "state); expected grad='autodiff'")
    model = split_model(model, static)
    params = None if params is None else carried(params)
    if evaluate is not None and not callable(evaluate):
        raise TypeError(f"mcjax.train: evaluate={evaluate!r:.60}; expected a function "
                        "params -> {name: number} or None")
    mesh = None if devices is None else _sharding.data_mesh(devices, function="train")
    n = check_data("train", data)
    if mesh is not None:
        _sharding.check_divisible("train", config.batch_size, mesh,
                                  subject=f"batch_size={config.batch_size}", hint="")
    shapes = _params_template(model, jax.eval_shape(lambda: jax.random.key(0)), params)
    if model.check is not None:
        model.check("train", shapes, data)
    if n < config.batch_size:
        raise ShapeError(f"mcjax.train: batch_size={config.batch_size} but the data has only {n} "
                         f"examples; expected a batch_size of at most {n}")
    optimizer, loss = config.transformation(), objective(model, grad=config.grad)
    opt_shapes = _trace_one_step(model, loss, optimizer, shapes, data, config.batch_size,
                                 analytic=config.grad == "analytic")
    folder = None if config.checkpoint_dir is None else RunFolder(
        config.checkpoint_dir, resume=config.resume, overwrite=config.overwrite,
        keep=config.keep_checkpoints, checkpoint_every=config.checkpoint_every, identity={
            **config.identity(), "data": fingerprint(data),
            "model": dict(model.config) if model.config is not None
            else {"name": model.name, "init": describe(given.init), "loss": describe(given.loss)}},
        programs=fingerprints(loss, optimizer, shapes,
                              *_step_inputs(data, config.batch_size), opt_shapes))
    try:
        run = _start(model, data, config, folder, params, mesh, optimizer, loss,
                     (shapes, opt_shapes), n, evaluate)
        run.static = static
        return run
    except BaseException:
        if folder is not None:
            folder.close()
        raise


def _start(model, data, config, folder, params, mesh, optimizer, loss, shapes, n,
           evaluate) -> Run:
    init_key, shuffle_key = jax.random.split(jax.random.key(config.seed))
    place = _placement(mesh)
    resumed = None
    if folder is not None and config.resume:
        like = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=place),
                            _as_saved(shapes[0], shapes[1]))
        start, state, meta = folder.resume_state(like)
        if start > config.epochs:
            raise CheckpointError(
                f"mcjax.train: epochs={config.epochs} but the run in {folder.directory} has "
                f"completed {start}; expected epochs >= {start} to resume it")
        params, opt_state = _from_saved(state)
        resumed = (start, meta["history"], folder.store.path(start))
    else:
        # one compiled init rather than one eager op per layer; the caller's parameters are
        # copied, because the epoch updates the buffers it gets in place
        params = compile_keyed(model.init, init_key)(init_key) if params is None \
            else jax.tree.map(jnp.copy, params)
        opt_state = optimizer.init(trained_part(params))
        # placed as a restored state is, so that both compile to (and reuse) one program
        params, opt_state = (jax.device_put((params, opt_state), place) if mesh is None
                             else _sharding.replicate((params, opt_state), mesh))
    report = None
    if config.grad == "analytic" and config.check_backprop:
        start = resumed[0] if resumed is not None else 0
        report = check_backprop(model, params, data, jax.random.fold_in(shuffle_key, start),
                                epoch=start, batch_size=config.batch_size,
                                shuffle=config.shuffle)
    data = _sharding.replicate(data, mesh) if mesh is not None else jax.device_put(data)
    if mesh is not None:
        shuffle_key = _sharding.replicate(shuffle_key, mesh)
    tic = time.perf_counter()
    program = compiled_epoch(loss, optimizer, (params, opt_state, data, shuffle_key),
                             batch_size=config.batch_size, shuffle=config.shuffle, mesh=mesh)
    run = Run(config, program, params, opt_state, data, shuffle_key, n // config.batch_size,
              0, folder, evaluate, time.perf_counter() - tic, backprop_check=report)
    if resumed is not None:
        run.start, run.history, run.checkpoint = resumed
        run.resumed_from = run.checkpoint
    return run


def _record(history: dict, losses, evaluate, params, opt_state) -> None:
    history["loss"].append(float(np.mean(losses)))
    for name, value in reports(opt_state).items():  # K-FAC's adapted damping, say
        history.setdefault(name, []).append(value)
    metrics = evaluate(params) if evaluate is not None else {}
    if not isinstance(metrics, Mapping):
        raise TypeError(f"mcjax.train: evaluate returned {type(metrics).__name__}; expected a "
                        "mapping name -> number")
    for name, value in metrics.items():
        history.setdefault(name, []).append(float(value))


def run_epochs(run: Run, *, progress: bool | None = False,
               callback: Callable[[_history.EpochRecord], Any] | None = None) -> TrainResult:
    """Train a prepared run to its last epoch, or until a signal or a non-finite value.

    ``callback`` gets an :class:`EpochRecord` after each epoch (and its checkpoint); what it
    raises stops the run.
    """
    config, stopped = run.config, None
    tic = time.perf_counter()
    try:
        with StopSignals() as stop, EpochProgress(progress, run.start, config.epochs) as bar:
            for epoch in range(run.start, config.epochs):
                run.params, run.opt_state, metrics = run.epoch_program(
                    run.params, run.opt_state, run.data, run.shuffle_key, np.int32(epoch))
                error = non_finite(metrics, epoch, run.steps_per_epoch, run.checkpoint,
                                   checkpointing=run.folder is not None)
                if error is not None:
                    raise error
                _record(run.history, metrics["loss"], run.evaluate, whole(run.params, run.static),
                        run.opt_state)
                bar.update(epoch + 1, run.history)
                stopped, done = agreed(stop.received), epoch + 1
                before = run.checkpoint
                if run.folder is not None and (done % config.checkpoint_every == 0
                                               or done == config.epochs or stopped):
                    run.checkpoint = run.folder.save(
                        done, _as_saved(run.params, run.opt_state),
                        {"step": done * run.steps_per_epoch, "history": run.history})
                    if not stopped and done < config.epochs:  # a signal during the save:
                        stopped = agreed(stop.received)  # stop by this fresh checkpoint
                if callback is not None:
                    _history.notify(callback, _history.EpochRecord(
                        done, done * run.steps_per_epoch, run.history["loss"][-1],
                        {k: v[-1] for k, v in run.history.items() if k != "loss" and v},
                        np.asarray(metrics["loss"]), whole(run.params, run.static),
                        run.checkpoint if run.checkpoint != before else None,
                        time.perf_counter() - tic), run.checkpoint)
                if stopped:
                    break
    finally:
        if run.folder is not None:
            run.folder.close()
    done = len(run.history["loss"])
    return TrainResult(whole(run.params, run.static), run.opt_state, run.history, done,
                       done * run.steps_per_epoch, run.compile_seconds, time.perf_counter() - tic, run.checkpoint,
                       run.resumed_from, stopped is not None, stopped, run.backprop_check)
