r"""Data parallelism with JAX's own machinery: a 1-D ``Mesh``, ``NamedSharding``, ``jax.jit``.

mcjax invents no distribution of its own.  A data-parallel step is the single-device step
(:func:`mcjax.steps.train_step`, unchanged) compiled by ``jax.jit`` with shardings: the batch is
split along the mesh axis ``"data"`` (``PartitionSpec("data")``: each of the D devices holds
B/D rows), the parameters and the optimizer state are replicated (``PartitionSpec()``).  XLA's
SPMD partitioner then runs the same program on every device and inserts the one collective
that data parallelism needs: the loss is a mean over the batch, so its gradient is

$$\nabla_\theta L = \frac{1}{B}\sum_{d=1}^{D} \sum_{i \in \text{shard}_d} \nabla_\theta \ell_i ,$$

a per-device partial sum followed by an all-reduce (``psum``) over ``"data"``.  The result
equals the single-device step up to the order of that floating-point sum (bounded in
:func:`mcjax._core._conventions.data_parallel_tolerance`).  The same jitted program runs on one CPU,
on the GPUs of one host, on a TPU pod slice and across hosts (after
:func:`mcjax.sharding.init_distributed`): the mesh is the only thing that changes.

Why replicate the parameters: mcjax's models are at most a few million parameters (the
largest benchmarked MLP, 784-1024-1024-10 with Adam, holds 1.9 M parameters and 2 x 1.9 M
moments: 22 MB in float32), far less than one device's memory, and a replicated state needs
no all-gather before the forward pass: the only communication per step is the gradient
all-reduce.  Sharding the state (ZeRO / FSDP, ``PartitionSpec("data")`` on the parameters'
largest axis) pays off only when the state no longer fits one device; it is one change of
``PartitionSpec`` in :func:`replicated`'s place, with the same step function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mcjax._core._errors import Problems, ShapeError, shape_str
from mcjax._train._models import takes_key

DATA_AXIS = "data"
"""The name of the mesh axis the batch is split along."""


def _device_list(function: str, devices) -> list:
    available = jax.devices()
    if devices is None or (isinstance(devices, str) and devices == "all"):
        return list(available)
    if isinstance(devices, np.ndarray):  # e.g. mesh_utils.create_device_mesh's
        devices = list(devices.flat)
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        n = int(devices)
        if n < 1:
            raise ValueError(f"mcjax.{function}: devices={n}; expected at least 1")
        if n > len(available):
            hint = (" (on CPU, set XLA_FLAGS=--xla_force_host_platform_device_count="
                    f"{n} before JAX starts)" if available[0].platform == "cpu" else "")
            raise ValueError(
                f"mcjax.{function}: devices={n} but {len(available)} "
                f"{available[0].platform} device{'s are' if len(available) != 1 else ' is'} "
                f"visible; expected at most {len(available)}{hint}"
            )
        if jax.process_count() > 1 and n != len(available):
            raise ValueError(
                f"mcjax.{function}: devices={n} but {jax.process_count()} processes hold "
                f"{len(available)} devices; in a multi-process run use them all (devices='all')"
            )
        return list(available[:n])
    if isinstance(devices, Sequence) and not isinstance(devices, str) and devices and all(
            isinstance(d, jax.Device) for d in devices):
        return list(devices)
    raise TypeError(
        f"mcjax.{function}: devices={devices!r}; expected None, 'all', a number of devices, "
        "a sequence of jax.Device or a jax.sharding.Mesh with a 'data' axis"
    )


def data_mesh(devices=None, *, function: str = "sharding.data_mesh") -> Mesh:
    """A 1-D :class:`jax.sharding.Mesh` with the axis ``"data"``, for data parallelism.

    Args:
      devices: ``None`` or ``"all"`` (every device of every process, ``jax.devices()``), a
        number D (the first D devices), a sequence of ``jax.Device``, or a ``Mesh``, returned
        as it is if it has a ``"data"`` axis (other axes, e.g. ``"model"``, are allowed: the
        batch is split along ``"data"`` and everything is replicated along the others).
      function: the name errors are reported under.

    Returns:
      A ``Mesh`` whose ``"data"`` axis has D devices: a sequence keeps its order; all the
      devices, asked for by number or ``"all"``, are ordered by
      ``mesh_utils.create_device_mesh`` (a ring on TPUs).

    Raises:
      ValueError: more devices asked for than there are, or a mesh without a ``"data"`` axis.
      TypeError: ``devices`` is none of the above.

    Example:

        >>> mesh = mcjax.sharding.data_mesh(1)  # on four devices: data_mesh(4)
        >>> dict(mesh.shape)
        {'data': 1}
        >>> # mcjax.train(model, data, devices=mesh) trains on it
    """
    if isinstance(devices, Mesh):
        if DATA_AXIS not in devices.axis_names:
            raise ValueError(
                f"mcjax.{function}: the mesh has axes {tuple(devices.axis_names)}; expected "
                f"one named {DATA_AXIS!r} to split the batch along"
            )
        return devices
    chosen = _device_list(function, devices)
    listed = not isinstance(devices, (type(None), str, int, np.integer))
    if not listed and len(chosen) == len(jax.devices()):
        from jax.experimental import mesh_utils

        return Mesh(mesh_utils.create_device_mesh((len(chosen),), chosen), (DATA_AXIS,))
    return Mesh(np.array(chosen), (DATA_AXIS,))


def data_size(mesh: Mesh) -> int:
    """D, the number of devices along ``"data"`` (how many parts a batch is split into)."""
    return int(mesh.shape[DATA_AXIS])


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array: parameters, optimizer state, keys, metrics."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis split along ``"data"``; the other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_divisible(function: str, rows: int, mesh: Mesh, *, subject: str | None = None,
                    hint: str = ", or pad it with mcjax.sharding.pad_batch") -> None:
    """Raise :class:`~mcjax.ShapeError` unless ``rows`` splits evenly over the ``"data"`` axis.

    The message names both numbers: ``mcjax.sharding.shard_batch: the batch of 30 rows does not
    divide among the 4 devices of the mesh's 'data' axis; expected a multiple of 4 (e.g. 28
    or 32), or pad it with mcjax.sharding.pad_batch``.
    """
    d = data_size(mesh)
    if rows % d:
        lower, upper = rows - rows % d, rows - rows % d + d
        examples = f"{lower} or {upper}" if lower else f"{upper}"
        subject = subject or f"the batch of {rows} rows"
        raise ShapeError(
            f"mcjax.{function}: {subject} does not divide among the {d} devices of the "
            f"mesh's 'data' axis; expected a multiple of {d} (e.g. {examples}){hint}"
        )


def _batch_rows(function: str, batch) -> int:
    leaves = jax.tree.leaves(batch)
    rows = {int(np.shape(a)[0]) if np.ndim(a) else None for a in leaves}
    if len(rows) != 1 or None in rows:
        problems = Problems(function)
        listed = ", ".join(shape_str(np.shape(a)) for a in leaves)
        problems.shape(f"the batch has arrays of shapes {listed}; expected one leading batch "
                       "axis of the same length in each")
        problems.raise_if_any()
    (row,) = rows
    assert row is not None  # refused above
    return row


def _place(tree, sharding: NamedSharding):
    """Global arrays with ``sharding`` from values every process holds in full.

    ``jax.make_array_from_callback`` asks each process only for the slices its own devices
    hold, so this is the same call on one host and across hosts.
    """

    def put(leaf):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):  # pyright: ignore[reportPrivateImportUsage]
            # a typed key travels as its raw bits and is re-typed on the devices
            return jax.random.wrap_key_data(put(jax.random.key_data(leaf)),
                                            impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def replicate(tree, mesh: Mesh):
    """Copies of ``tree``'s arrays, whole on every device of ``mesh`` (parameters, optimizer
    state); the originals stay valid when a step donates the copies.

    Args:
      tree: a pytree of arrays (device or host), the same on every process.
      mesh: the mesh (see :func:`data_mesh`).
    """
    return _place(tree, replicated(mesh))


def shard_batch(batch, mesh: Mesh):
    """Split ``batch``'s leading axis over the ``"data"`` axis of ``mesh``.

    Args:
      batch: a pytree of arrays with B rows each (e.g. ``(X, Y)``), the whole global batch,
        the same on every process (each process keeps only its devices' rows).  For a data
        loader that reads only this process's rows, use
        ``jax.make_array_from_process_local_data(mcjax.sharding.batch_sharding(mesh), rows)`` instead.
      mesh: the mesh (see :func:`data_mesh`) with D devices along ``"data"``.

    Returns:
      The batch as global arrays; device d holds rows ``d B/D .. (d+1) B/D - 1``.

    Raises:
      ShapeError: B is not a multiple of D (the message names both; see :func:`pad_batch`).
    """
    check_divisible("sharding.shard_batch", _batch_rows("sharding.shard_batch", batch), mesh)
    return _place(batch, batch_sharding(mesh))


def pad_batch(batch, multiple: int | Mesh):
    """Pad ``batch`` to a multiple of ``multiple`` rows and say which rows are real.

    The padding repeats the last row (so that it stays in the loss's domain: a valid label,
    a finite input); the mask gives those rows weight 0 in :func:`masked_objective`.

    Args:
      batch: a pytree of arrays with B rows each.
      multiple: D, or a mesh (its ``"data"`` size).

    Returns:
      ``(padded, mask)``: arrays of ``ceil(B / D) D`` rows, and ``mask`` of that length,
      ``True`` for the B real rows.
    """
    d = data_size(multiple) if isinstance(multiple, Mesh) else int(multiple)
    rows = _batch_rows("sharding.pad_batch", batch)
    extra = -rows % d

    def pad(a):
        a = jnp.asarray(a)
        return jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)]) if extra else a

    return jax.tree.map(pad, batch), jnp.arange(rows + extra) < rows


def masked_objective(loss: Callable) -> Callable:
    r"""The mean loss over the rows a mask keeps: ``f(params, (X, Y, mask))``.

    $$L_{\text{masked}} = \frac{\sum_i m_i\,\ell_i}{\sum_i m_i},\qquad
    \ell_i = L(\theta; X_{i:i+1}, Y_{i:i+1})$$

    so that a batch padded by :func:`pad_batch` has exactly the loss (and the gradient) of
    the unpadded batch, for any loss that is a mean over rows (all of mcjax's models).  The
    per-row losses are ``jax.vmap`` of ``loss`` over one-row batches.

    Args:
      loss: ``loss(params, (X, Y)) -> scalar``, a mean over rows (e.g.
        :func:`mcjax.objective`).

    Returns:
      ``f(params, (X, Y, mask)) -> scalar`` with ``mask`` (B,) boolean or 0/1.
    """

    def masked(params, batch):
        X, Y, mask = batch
        rows = jax.vmap(lambda x, y: loss(params, (x[None], y[None])))(X, Y)
        weight = jnp.asarray(mask, rows.dtype)
        return jnp.sum(weight * rows) / jnp.sum(weight)

    return masked


def constrain_batch(loss: Callable, mesh: Mesh, *, function: str) -> Callable:
    """``loss`` whose batch is split along ``"data"`` inside a jitted program.

    The constraint is what turns the epoch's scan data-parallel: its minibatches are cut from
    the (replicated) dataset inside the program, then each device computes on its rows.  The
    divisibility check runs at trace time, before anything is compiled.  The result's
    ``unconstrained`` is ``loss`` itself: what an optimizer that reads the loss gets
    (:func:`mcjax.kfac` traces it at one example's shapes, which no mesh divides; under
    ``jax.jit`` its means over the sharded batch are the global batch's all the same).
    """
    sharding = batch_sharding(mesh)
    wants_key = takes_key(loss)

    def sharded_loss(params, batch, key=None):
        check_divisible(function, _batch_rows(function, batch), mesh)
        batch = jax.lax.with_sharding_constraint(batch, sharding)
        return loss(params, batch, key=key) if wants_key else loss(params, batch)

    sharded_loss.unconstrained = loss  # type: ignore[attr-defined]
    return sharded_loss


class _DataParallel:
    """A jitted data-parallel function: checks its batch, and on CPU keeps one call in flight.

    ``jax.jit`` places its arguments before it traces, so a batch of the wrong length would
    fail inside JAX's placement; this names the function, both numbers and the remedy
    instead.  On a mesh of several CPU devices (``--xla_force_host_platform_device_count``)
    it waits for each call's result: with two collective programs in flight, XLA:CPU's
    shared thread pool can deadlock in the all-reduce (seen with JAX 0.10.2 on 2 cores: the
    process aborts after 40 s in ``rendezvous.cc``).  GPUs and TPUs keep asynchronous
    dispatch.  Everything else (``lower``, ``trace``, ``eval_shape``) is the jitted
    function's own.
    """

    def __init__(self, jitted: Callable, mesh: Mesh, argnums: tuple[int, ...], function: str):
        self._jitted, self._mesh, self._argnums, self._function = jitted, mesh, argnums, function
        self._wait = mesh.devices.size > 1 and mesh.devices.flat[0].platform == "cpu"

    def _check(self, args) -> None:
        for i in self._argnums:
            check_divisible(self._function, _batch_rows(self._function, args[i]), self._mesh)

    def __call__(self, *args):
        self._check(args)
        out = self._jitted(*args)
        return jax.block_until_ready(out) if self._wait else out

    def lower(self, *args, **kwargs):
        self._check(args)
        return self._jitted.lower(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._jitted, name)


def jit_data_parallel(fn: Callable, mesh: Mesh, *, sharded_argnums: tuple[int, ...],
                      n_args: int, donate_argnums: tuple[int, ...], function: str) -> Callable:
    """``jax.jit(fn)`` with the arguments in ``sharded_argnums`` split along ``"data"`` and
    every other argument and every output replicated (see :class:`_DataParallel`)."""
    rep, rows = replicated(mesh), batch_sharding(mesh)
    jitted = jax.jit(fn, in_shardings=tuple(rows if i in sharded_argnums else rep
                                            for i in range(n_args)),
                     out_shardings=rep, donate_argnums=donate_argnums)
    return _DataParallel(jitted, mesh, sharded_argnums, function)
