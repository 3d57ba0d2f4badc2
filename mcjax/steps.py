"""The training step and the epoch, for a loop of your own.

``mcjax.steps.train_step`` is gradient descent's update with an optax optimizer; ``mcjax.steps.train_epoch``
runs it over a shuffled epoch inside one ``lax.scan``.  The ``make_*`` forms return them
jitted (buffers donated), on one device or data-parallel over a mesh.  ``GRAD_SOURCES`` are
the gradient sources ``mcjax.objective`` knows.
"""

from mcjax._train._models import GRAD_SOURCES
from mcjax._train._step import make_train_epoch, make_train_step, train_epoch, train_step

__all__ = ["train_step", "train_epoch", "make_train_step", "make_train_epoch", "GRAD_SOURCES"]
