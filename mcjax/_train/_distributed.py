"""Several processes, one program: the launcher path to multi-host training.

JAX runs one Python process per host (per GPU, on some clusters); ``jax.distributed.initialize``
connects them through a coordinator (process 0 listens on ``host:port``) so that
``jax.devices()`` lists the devices of every process and one jitted program spans them all.
After that, :func:`mcjax.train` with ``devices="all"`` (or a mesh over ``jax.devices()``) is
data-parallel across hosts with no other change: each process runs the same script on the
same data and feeds its own devices.

:func:`init_distributed` takes the three numbers from its arguments, else from the
environment (``JAX_COORDINATOR_ADDRESS``, which JAX itself reads, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``), else lets JAX detect the cluster (Cloud TPU pod slices, SLURM, Open MPI).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


class Processes(NamedTuple):
    """Where this process stands in a (possibly one-process) run.

    Attributes:
      process_index: this process's id, 0 ... process_count - 1 (0 writes checkpoints).
      process_count: the number of processes.
      local_device_count: the devices this process drives.
      device_count: the devices of all processes (what ``devices="all"`` trains on).
      platform: ``"cpu"``, ``"gpu"`` or ``"tpu"``.
      initialized: whether ``jax.distributed.initialize`` ran (False for a lone process
        without a coordinator, which needs none).
    """

    process_index: int
    process_count: int
    local_device_count: int
    device_count: int
    platform: str
    initialized: bool


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"mcjax.sharding.init_distributed: ${name}={value!r}; expected an integer") from None


def _is_initialized() -> bool:
    is_initialized = getattr(jax.distributed, "is_initialized", None)
    if is_initialized is not None:
        return bool(is_initialized())
    from jax._src import distributed  # older JAX: the same flag, not yet public

    return distributed.global_state.client is not None


def processes() -> Processes:
    """This process's :class:`Processes` record (starts JAX's backend if it has not started)."""
    return Processes(jax.process_index(), jax.process_count(), jax.local_device_count(),
                     jax.device_count(), jax.devices()[0].platform, _is_initialized())


def init_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, *, local_device_ids=None,
                     initialization_timeout: int = 300) -> Processes:
    """Join a multi-process JAX run (``jax.distributed.initialize``); call it first.

    Every process calls it with the same coordinator and process count and its own id,
    before any other JAX call (JAX refuses to connect a process whose backend already runs).

    Args:
      coordinator_address: ``host:port`` of process 0, reachable from every process (default
        ``$JAX_COORDINATOR_ADDRESS``).
      num_processes: how many processes (default ``$JAX_NUM_PROCESSES``).
      process_id: this process's id, 0 ... num_processes - 1 (default ``$JAX_PROCESS_ID``).
      local_device_ids: the local devices this process drives (default: all; JAX picks one
        GPU per process under SLURM and Open MPI).
      initialization_timeout: seconds to wait for the other processes.

    With none of the three given or set, JAX detects them on a Cloud TPU pod slice, under
    SLURM or Open MPI.  One process without a coordinator (``num_processes=1``) needs no
    coordination: nothing is initialised and the run is an ordinary one-process run.

    Returns:
      This process's :class:`Processes` record.

    Raises:
      ValueError: the numbers are inconsistent, or missing outside a cluster JAX detects.
      RuntimeError: JAX's backend already runs in this process.

    Example (two GPU hosts; the second runs the same with ``process_id=1``)::

        mcjax.sharding.init_distributed("10.0.0.1:1234", num_processes=2, process_id=0)
        mcjax.train(model, data, devices="all")
    """
    if _is_initialized():
        return processes()
    address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    count = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    index = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    if count is not None and (count < 1 or (index is not None and not 0 <= index < count)):
        raise ValueError(
            f"mcjax.sharding.init_distributed: num_processes={count} and process_id={index}; expected "
            "num_processes >= 1 and 0 <= process_id < num_processes"
        )
    if count == 1 and address is None:
        return processes()
    if count == 1 and index is None:
        index = 0
    try:
        jax.distributed.initialize(address, count, index, local_device_ids=local_device_ids,
                                   initialization_timeout=initialization_timeout)
    except RuntimeError as error:
        raise RuntimeError(
            "mcjax.sharding.init_distributed: JAX's backend already runs in this process; call "
            f"init_distributed first, before any other JAX call ({error})"
        ) from None
    except ValueError as error:
        raise ValueError(
            f"mcjax.sharding.init_distributed: coordinator_address={address!r}, num_processes={count}, "
            f"process_id={index} and no cluster (TPU pod, SLURM, Open MPI) was detected to "
            f"fill the missing ones ({error}); pass them, or set ${ENV_COORDINATOR}, "
            f"${ENV_NUM_PROCESSES} and ${ENV_PROCESS_ID}"
        ) from None
    return processes()
