"""The defaults of a training run, in one place: :func:`mcjax.train`'s keyword arguments,
:class:`~mcjax._train._config.TrainConfig`'s fields and ``mcjax train``'s flags all read them
(``tests/test_train_visible.py`` checks that they agree), so that a run started from Python and
one started from the command line with the same settings are the same run.

Why these values:

- ``grad="autodiff"``: every model has a forward pass, not every model a hand-derived gradient;
  ask for ``"analytic"`` to train with yours (it is then checked at the first batch).
- ``epochs=10``: a first look; the command line's tasks reach their noise floor (the neuron,
  on its 4096 examples) or 97 % test accuracy (the digits) in 10 epochs.
- ``checkpoint_every=1``: a preempted run loses at most one epoch; checkpoint less often when
  an epoch is shorter than writing one.
- ``progress=None``: a bar when stderr is a terminal or a notebook, none in a log or a pipe.
- ``check_backprop=True``: a wrong hand-derived gradient trains silently otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainDefaults:
    """The default of every setting of :func:`mcjax.train` that ``mcjax train`` shares."""

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    grad: str = "autodiff"
    epochs: int = 10
    batch_size: int = 32
    shuffle: bool = True
    seed: int = 0
    checkpoint_every: int = 1
    keep_checkpoints: int = 3
    progress: bool | None = None
    check_backprop: bool = True


DEFAULTS = TrainDefaults()
