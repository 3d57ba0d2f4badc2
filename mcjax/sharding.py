"""Data parallelism over devices and hosts with ``jax.sharding``.

``mcjax.sharding.data_mesh`` makes a mesh with a ``"data"`` axis; ``mcjax.sharding.shard_batch`` splits a batch's
leading axis over it and ``mcjax.sharding.replicate`` copies parameters to every device;
``mcjax.sharding.pad_batch`` and ``mcjax.sharding.masked_objective`` handle a batch that does not divide among the
devices.  ``mcjax.train(..., devices=N)`` does all of this itself; these are for a loop of
your own.  Several hosts join with ``mcjax.sharding.init_distributed``.
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
