r"""The training step and the epoch: pure functions, compiled once by XLA.

One step is gradient descent's update (§1 of the paper: "pick w and b by gradient descent")
with an optax optimizer:

$$\ell, \mathbf{g} = L(\theta_t; X_t, Y_t), \nabla_\theta L(\theta_t; X_t, Y_t);\quad
\mathbf{u}_t, s_{t+1} = \text{update}(\mathbf{g}, s_t, \theta_t);\quad
\theta_{t+1} = \theta_t + \mathbf{u}_t$$

An epoch shuffles the examples with ``jax.random``, cuts them into ``B``-sized minibatches
(the last ``N mod B`` examples of the shuffled order are left out of that epoch) and runs the
step over them inside :func:`jax.lax.scan`: one compiled call per epoch, so that Python does
not run once per step.

A loss that takes a ``key`` (dropout) gets one per step: the epoch's key shuffles the rows and,
folded with a constant, is split into one key per step, so that a step's key depends only on
the seed, the epoch and the step.  With ``check_finite`` the epoch also records, after each
update, whether every parameter is still finite, and at its end whether the optimizer state
is, so that training can stop at the first step that breaks them, even when the loss itself
stayed finite.  (The parameters are checked per step, the optimizer state once per epoch:
checking Adam's two moments per step too costs ~13% of a step of the 784-1024-1024-10 MLP,
the parameters alone ~3%.)

Both functions take and return plain pytrees (``params``, optax state, a ``batch`` of arrays
with a leading batch axis) and read no global state, so they are unchanged under
``jax.sharding`` (shard the batch axis) and on any device.  Their ``params`` and ``opt_state``
buffers are donated: XLA updates them in place, so don't use the arrays you passed in after
the call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mcjax._core._conventions import standard_promotion
from mcjax._train import _sharding
from mcjax._train._models import WithState, takes_key, trained_part
from mcjax._train._optim import Transformation, update

Batch = tuple  # (X, Y), (X, Y, weights), ...: a pytree of arrays with a leading batch axis
STEP_KEYS = 0x5EED  # folded into the epoch's key to draw the steps' keys apart from the shuffle


def loss_and_grad(loss: Callable, params, batch, **extra):
    """``(value, grads, state)``: the loss, its gradient with respect to the trained
    parameters, and the model's state after the loss ran.

    ``params`` is the trained parameters, or a :class:`~mcjax._train._models.WithState` pair
    whose loss returns ``(value, new_state)``: then only ``params.params`` is differentiated
    (``jax.value_and_grad(..., has_aux=True)``) and ``state`` is the new one; else ``state``
    is None.
    """
    if not isinstance(params, WithState):
        value, grads = jax.value_and_grad(loss)(params, batch, **extra)
        return value, grads, None
    (value, state), grads = jax.value_and_grad(
        lambda trained: loss(WithState(trained, params.state), batch, **extra),
        has_aux=True)(params.params)
    return value, grads, state


def value_only(loss: Callable, params) -> Callable:
    """``loss`` as a function of the trained parameters and the batch alone (the state held at
    ``params``' values), returning the scalar: what an optimizer that reads the loss gets."""
    if not isinstance(params, WithState):
        return loss
    state = params.state

    @functools.wraps(loss)
    def value(trained, batch, **extra):
        return loss(WithState(trained, state), batch, **extra)[0]

    return value


def train_step(loss: Callable, optimizer: Transformation) -> Callable:
    """The un-jitted step ``(params, opt_state, batch, key=None) -> (params, opt_state, metrics)``.

    Args:
      loss: ``loss(params, batch) -> scalar`` (e.g. :func:`mcjax.objective`), or
        ``loss(params, batch, key)`` to get the step's ``key`` (dropout); its gradient source
        is whatever ``jax.grad`` of it gives.  For a model with state, ``params`` is a
        ``WithState(params, state)`` pair and the loss returns ``(loss, new_state)``: the
        optimizer updates ``params`` and the step carries ``new_state`` to the next one.
      optimizer: an optax transformation (``init`` and ``update``: ``optax.adam(1e-3)``,
        ``optax.MultiSteps(...)``).

    Returns:
      ``step``; ``metrics`` is ``{"loss": scalar}``, the loss *before* the update.
    """
    wants_key = takes_key(loss)
    # an optimizer that reads the loss (mcjax.kfac) gets it without a mesh's batch constraint
    # (_sharding.constrain_batch): it may trace it at other batch shapes (one example)
    plain = getattr(loss, "unconstrained", loss)
    plain_key = takes_key(plain)

    def step(params, opt_state, batch, key=None):
        extra = {"key": key} if wants_key and key is not None else {}
        value, grads, state = loss_and_grad(loss, params, batch, **extra)
        read = value_only(plain, params)
        trained = trained_part(params)
        with standard_promotion():  # optax is written for JAX's standard promotion
            updates, opt_state = update(optimizer, grads, opt_state, trained,
                                        loss=functools.partial(read, **extra) if plain_key
                                        else read, batch=batch)
            trained = optax.apply_updates(trained, updates)
        params = trained if state is None else WithState(trained, state)
        return params, opt_state, {"loss": value}

    return step


def all_finite(tree) -> jax.Array:
    """True when no floating leaf of ``tree`` holds NaN or Inf (one boolean, on device)."""
    checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


@functools.cache
def compiler_options(backend: str) -> dict | None:
    """XLA options for the step and the epoch on ``backend`` (None: XLA's defaults).

    On the CPU, copy insertion with region analysis lets XLA write the updated parameters
    into their donated buffers without first copying the weights that the backward pass still
    reads (a copy of the largest weight matrix per step otherwise).  The option is probed once
    with a trivial program, so that a JAX that no longer knows it falls back to the defaults.
    """
    if backend != "cpu":
        return None
    options = {"xla_cpu_copy_insertion_use_region_analysis": True}
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(
            jax.ShapeDtypeStruct((), jnp.float32)).compile()
    except Exception:  # an unknown option is refused at compile time
        return None
    return options


def _jit(fn: Callable) -> Callable:
    return jax.jit(fn, donate_argnums=(0, 1),
                   compiler_options=compiler_options(jax.default_backend()))


def make_train_step(loss: Callable, optimizer: Transformation, *,
                    mesh=None) -> Callable:
    """The jitted step ``(params, opt_state, batch, key=None) -> (params, opt_state, metrics)``.

    ``params`` and ``opt_state`` are donated (updated in place).  With ``mesh`` (see
    :func:`mcjax.sharding.data_mesh`) the same step runs data-parallel: the batch is split along the
    mesh's ``"data"`` axis (pass it through :func:`mcjax.sharding.shard_batch`, or as NumPy arrays),
    ``params``, ``opt_state`` and ``metrics`` are replicated (:func:`mcjax.sharding.replicate`), and
    XLA all-reduces the gradient.  A batch whose rows do not divide among the devices raises
    :class:`~mcjax.ShapeError` (naming both numbers) before JAX places it.  A loss that takes
    a ``key`` gets the one passed to the step (on one device; the mesh's step takes three
    arguments).

    Example:

        >>> model = mcjax.neuron_model(3)
        >>> params = model.init(jax.random.key(0))
        >>> opt = mcjax.optimizer("adam", learning_rate=1e-3)
        >>> step = mcjax.steps.make_train_step(mcjax.objective(model, grad="analytic"), opt)
        >>> params, opt_state, metrics = step(params, opt.init(params),
        ...                                   (jnp.ones((4, 3)), jnp.zeros(4)))
        >>> sorted(metrics)
        ['loss']
    """
    if mesh is None:
        return _jit(train_step(loss, optimizer))
    return _sharding.jit_data_parallel(train_step(loss, optimizer), mesh, sharded_argnums=(2,),
                                       n_args=3, donate_argnums=(0, 1),
                                       function="steps.make_train_step")


def epoch_batches(data: Batch, key, *, batch_size: int, shuffle: bool = True) -> Batch:
    """``data`` (arrays of N rows) -> minibatches of shape ``(N // B, B, ...)``.

    The permutation is ``jax.random.permutation(key, N)``; without ``shuffle`` the rows keep
    their order.  The last ``N mod B`` rows (of the permuted order) are dropped.
    """
    n = jax.tree.leaves(data)[0].shape[0]
    steps = n // batch_size
    if shuffle:
        order = jax.random.permutation(key, n)[: steps * batch_size]
        data = jax.tree.map(lambda a: jnp.take(a, order, axis=0), data)
    return jax.tree.map(
        lambda a: a[: steps * batch_size].reshape((steps, batch_size) + a.shape[1:]), data
    )


def first_batch(data: Batch, key, *, batch_size: int, shuffle: bool = True):
    """The first minibatch that :func:`train_epoch` runs with ``key``, and that step's key.

    Computed eagerly, for a look at the first step from outside the compiled epoch (the check
    of a hand-derived gradient): the rows are those :func:`epoch_batches` puts first.
    """
    n = jax.tree.leaves(data)[0].shape[0]
    rows = jax.random.permutation(key, n)[:batch_size] if shuffle else jnp.arange(batch_size)
    rows = np.asarray(rows)
    batch = jax.tree.map(lambda a: a[rows], data)
    return batch, jax.random.split(jax.random.fold_in(key, STEP_KEYS), n // batch_size)[0]


def train_epoch(loss: Callable, optimizer: Transformation, *, batch_size: int,
                shuffle: bool = True, check_finite: bool = False) -> Callable:
    """The un-jitted epoch ``(params, opt_state, data, key) -> (params, opt_state, metrics)``.

    ``metrics["loss"]`` has shape ``(N // B,)``: one loss per step.  With ``check_finite``,
    ``metrics["finite"]`` (same shape, boolean) says whether the parameters were all finite
    after each step's update, and ``metrics["state_finite"]`` (a boolean) whether the
    optimizer state is at the end of the epoch.
    """
    step = train_step(loss, optimizer)

    def epoch(params, opt_state, data, key):
        batches = epoch_batches(data, key, batch_size=batch_size, shuffle=shuffle)
        steps = jax.tree.leaves(batches)[0].shape[0]
        keys = jax.random.split(jax.random.fold_in(key, STEP_KEYS), steps)

        def body(state, batch_and_key):
            params, opt_state, metrics = step(*state, *batch_and_key)
            if check_finite:
                metrics = {**metrics, "finite": all_finite(params)}
            return (params, opt_state), metrics

        (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), (batches, keys))
        if check_finite:
            metrics = {**metrics, "state_finite": all_finite(opt_state)}
        return params, opt_state, metrics

    return epoch


def make_train_epoch(loss: Callable, optimizer: Transformation, *,
                     batch_size: int, shuffle: bool = True, mesh=None) -> Callable:
    """The jitted epoch ``(params, opt_state, data, key) -> (params, opt_state, metrics)``.

    Args:
      loss: ``loss(params, batch) -> scalar``.
      optimizer: an optax transformation (``init`` and ``update``: ``optax.adam(1e-3)``,
        ``optax.MultiSteps(...)``).
      batch_size: B, the rows per step.
      shuffle: permute the rows with ``key`` first (``jax.random.permutation``).
      mesh: run data-parallel on this mesh (:func:`mcjax.sharding.data_mesh`): ``data``, ``params``,
        ``opt_state`` and ``key`` are replicated (:func:`mcjax.sharding.replicate`) and each minibatch
        is split along ``"data"`` inside the program; B must be a multiple of the devices.

    ``data`` is a tuple of arrays with N rows; the epoch runs ``N // B`` steps in one
    :func:`jax.lax.scan`.  ``params`` and ``opt_state`` are donated.
    """
    if mesh is None:
        return _jit(train_epoch(loss, optimizer, batch_size=batch_size, shuffle=shuffle))
    loss = _sharding.constrain_batch(loss, mesh, function="steps.make_train_epoch")
    return _sharding.jit_data_parallel(
        train_epoch(loss, optimizer, batch_size=batch_size, shuffle=shuffle), mesh,
        sharded_argnums=(), n_args=4, donate_argnums=(0, 1), function="steps.make_train_epoch")
