"""Data parallelism over devices and hosts with ``jax.sharding``.

:func:`data_mesh` makes a mesh with a ``"data"`` axis; :func:`shard_batch` splits a batch's
leading axis over it and :func:`replicate` copies parameters to every device;
:func:`pad_batch` and :func:`masked_objective` handle a batch that does not divide among the
devices.  ``mcjax.train(..., devices=N)`` does all of this itself; these are for a loop of
your own.  Several hosts join with :func:`init_distributed`.
"""

from mcjax._train._distributed import Processes, init_distributed
from mcjax._train._sharding import (
    batch_sharding,
    data_mesh,
    masked_objective,
    pad_batch,
    replicate,
    shard_batch,
)

__all__ = [
    "data_mesh",
    "shard_batch",
    "replicate",
    "batch_sharding",
    "pad_batch",
    "masked_objective",
    "init_distributed",
    "Processes",
]
