"""Why a run stops before its last epoch: a signal to stop, or a value that is not finite.

**Signals.**  SIGTERM is what a cluster scheduler sends before it preempts a job, SIGINT what
Ctrl-C sends.  The first of either sets a flag that the loop reads at the end of the epoch in
progress (an epoch is one compiled program, which Python cannot stop half-way): it writes a
checkpoint there and returns, and the ``mcjax train`` command exits with 128 + the signal's
number (143 for SIGTERM, 130 for SIGINT), the shell's convention.  A signal that arrives while
a checkpoint is being written stops the run as soon as it is written.  A second signal changes
nothing: the run is already stopping at the next safe point, and stopping anywhere else (in
the middle of a save, as a ``KeyboardInterrupt`` would) would leave a checkpoint without its
digests; SIGKILL remains for a process that must end now.  Signal handlers can only be set in
the main thread; elsewhere signals keep their usual effect.  In a multi-process run the
processes agree after every epoch (one tiny all-gather), so that all stop at the same epoch
even when the signal reached them at different times.

**Values.**  The compiled epoch reports each step's loss, whether the parameters were all
finite after its update, and whether the optimizer state is at the epoch's end.
:func:`non_finite` turns the first bad one into a :class:`~mcjax.NonFiniteLossError` that
names the step, its epoch and batch, and the last good checkpoint.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import jax
import numpy as np

from mcjax._core._errors import NonFiniteLossError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """``with StopSignals() as stop: ... stop.received`` is None, ``"SIGTERM"`` or ``"SIGINT"``."""

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        # never raise here: the handler runs wherever Python is, a checkpoint's save included;
        # a second signal keeps the first one's name
        if self.received is None:
            self.received = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
        return False


def agreed(name: str | None) -> str | None:
    """The signal any process received (all processes stop at the same epoch, or a collective
    save would wait forever for the ones that went on); this process's own when alone."""
    if jax.process_count() == 1:
        return name
    from jax.experimental import multihost_utils

    numbers = multihost_utils.process_allgather(np.int32(signal.Signals[name] if name else 0))
    number = int(np.max(numbers))
    return signal.Signals(number).name if number else None


def exit_status(name: str | None) -> int:
    """128 + the signal's number for a run a signal stopped (143 for SIGTERM), else 0."""
    return 128 + int(signal.Signals[name]) if name else 0


def non_finite(metrics, epoch: int, steps_per_epoch: int, checkpoint: Path | None, *,
               checkpointing: bool) -> NonFiniteLossError | None:
    """The error for the epoch's first non-finite loss or state, or None when all is finite.

    Args:
      metrics: the epoch's ``{"loss": (S,), "finite": (S,), "state_finite": ()}``; ``loss[i]``
        is step i's loss before its update, ``finite[i]`` whether the parameters were finite
        after it, ``state_finite`` whether the optimizer state was at the epoch's end.
      epoch: the 0-based epoch.
      checkpoint: the last checkpoint written (the last good one).
      checkpointing: whether the run writes checkpoints at all.
    """
    losses, finite = np.asarray(metrics["loss"]), np.asarray(metrics["finite"])
    bad_loss = np.flatnonzero(~np.isfinite(losses))
    bad_state = np.flatnonzero(~finite)
    if not bad_state.size and not bool(metrics["state_finite"]):
        bad_state = np.array([steps_per_epoch - 1])  # known at the epoch's end only
    first_loss = int(bad_loss[0]) if bad_loss.size else steps_per_epoch
    first_state = int(bad_state[0]) if bad_state.size else steps_per_epoch
    i = min(first_loss, first_state)
    if i == steps_per_epoch:
        return None
    step = epoch * steps_per_epoch + i + 1
    where = f"step {step} (epoch {epoch + 1}, batch {i + 1} of {steps_per_epoch})"
    if first_loss <= first_state:
        what = f"the loss is {losses[i]} at {where}"
    else:
        what = (f"the update of {where} left NaN or Inf in the parameters, although its loss "
                f"was finite ({losses[i]:.4g})" if not finite.all() else
                f"the optimizer state holds NaN or Inf at the end of epoch {epoch + 1} (after "
                f"{where}; it is checked once per epoch), although every loss and every "
                "parameter were finite")
    kept = (f"the last good checkpoint, kept, is {checkpoint}" if checkpoint is not None
            else "no checkpoint had been written yet" if checkpointing
            else "no checkpoint was written (pass checkpoint_dir to keep one)")
    return NonFiniteLossError(
        f"mcjax.train: {what}; training stopped; {kept}. Lower the learning rate or check the "
        "data and the model for overflow",
        step=step, epoch=epoch + 1, checkpoint=checkpoint, value=float(losses[i]))
