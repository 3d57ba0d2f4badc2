"""Reading the checkpoints ``mcjax.train`` writes (orbax, one folder per saved epoch).

``mcjax.checkpoints.latest_checkpoint`` finds the newest intact one in a run's folder and
``mcjax.checkpoints.restore_checkpoint`` reads it back onto any device layout.  Writing, run identity, the
lock and resuming are ``mcjax.train``'s (``checkpoint_dir=``, ``resume=``).
"""

from mcjax._core._errors import CheckpointError
from mcjax._train._checkpoint import latest_checkpoint, restore_checkpoint

__all__ = ["latest_checkpoint", "restore_checkpoint", "CheckpointError"]
