"""The settings of a training run, checked all at once before any work, and its identity.

:class:`TrainConfig` is frozen: :func:`mcjax.train` builds one from its keyword arguments,
and the ``mcjax train`` command builds one from its flags before it loads any data, so that a
bad setting costs nothing and every bad setting is named in one message.  :meth:`identity`
is what a checkpoint folder records about the run (see ``_run_folder``): what a resumed run
must share with the run that wrote the checkpoints.  ``epochs``, ``checkpoint_every`` and
``keep_checkpoints`` are not part of it: a run may be resumed for longer, or checkpointed
differently; nor is ``check_backprop``, which changes no number of the run.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import optax

from mcjax._core._errors import CheckpointError
from mcjax._train._defaults import DEFAULTS
from mcjax._train._describe import describe
from mcjax._train._hyper import learning_rate_problem
from mcjax._train._models import GRAD_SOURCES, count_problem
from mcjax._train._optim import (
    Transformation,
    described,
    hyper_parameter_problems,
    is_transformation,
)
from mcjax._train._optim import optimizer as make_optimizer
from mcjax._train._run_folder import preflight

DEFAULT_LEARNING_RATE = DEFAULTS.learning_rate


def _integer(value, name: str, low: int, problems: list[str], *, none: bool = False) -> None:
    problem = None if none and value is None else count_problem(value, name, low)
    if problem is not None:
        problems.append(problem + (" or None" if none else ""))


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of :func:`mcjax.train` but the model, the data and run-time callbacks.

    The fields are :func:`mcjax.train`'s arguments of the same names, with the same defaults
    (``_defaults.DEFAULTS``).  ``learning_rate=None`` is 1e-3 with an optimizer name, and
    must stay None with an optax transformation (which carries its own).

    Raises:
      ValueError: a setting is out of range or of the wrong kind (all are listed).
      CheckpointError: the checkpoint folder cannot serve this run (a file, a missing folder
        to resume, another run's folder).
    """

    optimizer: str | Transformation = DEFAULTS.optimizer
    learning_rate: float | optax.Schedule | None = None
    optimizer_options: Mapping[str, Any] | None = None
    grad: str = DEFAULTS.grad
    epochs: int = DEFAULTS.epochs
    batch_size: int = DEFAULTS.batch_size
    shuffle: bool = DEFAULTS.shuffle
    seed: int = DEFAULTS.seed
    checkpoint_dir: str | os.PathLike | None = None
    checkpoint_every: int = DEFAULTS.checkpoint_every
    keep_checkpoints: int | None = DEFAULTS.keep_checkpoints
    resume: bool = False
    overwrite: bool = False
    check_backprop: bool = DEFAULTS.check_backprop

    def __post_init__(self):
        problems = self._problems()
        # process 0 alone looks at the folder: in a multi-process run the others would race
        # it (they may look after it has written run.json); it checks again under the lock
        folder = preflight(self.checkpoint_dir, resume=self.resume, overwrite=self.overwrite) \
            if not problems and jax.process_index() == 0 else []
        if problems or folder:
            error = CheckpointError if folder else ValueError
            raise error("mcjax.train: " + "; and ".join(problems + folder))

    def _problems(self) -> list[str]:
        problems: list[str] = []
        if self.grad not in GRAD_SOURCES:
            problems.append(f"grad={self.grad!r}; expected one of "
                            f"{', '.join(repr(g) for g in GRAD_SOURCES)}")
        _integer(self.epochs, "epochs", 1, problems)
        _integer(self.batch_size, "batch_size", 1, problems)
        _integer(self.checkpoint_every, "checkpoint_every", 1, problems)
        _integer(self.keep_checkpoints, "keep_checkpoints", 1, problems, none=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) \
                or not -2**63 <= self.seed < 2**63:
            problems.append(f"seed={self.seed!r}; expected an integer from -2**63 to 2**63 - 1")
        for name in ("shuffle", "resume", "overwrite", "check_backprop"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name}={getattr(self, name)!r}; expected True or False")
        folder = self.checkpoint_dir
        if folder is not None and not isinstance(folder, (str, os.PathLike)):
            problems.append(f"checkpoint_dir={self.checkpoint_dir!r}; expected a path or None")
        return problems + self._optimizer_problems()

    def _optimizer_problems(self) -> list[str]:
        rate, options = self.learning_rate, self.optimizer_options
        if is_transformation(self.optimizer):
            extra = [f"{n}={v!r}" for n, v in (("learning_rate", rate), ("optimizer_options",
                                                                         options)) if v]
            return [f"{' and '.join(extra)} with an optax transformation as optimizer; expected "
                    "them inside the transformation (e.g. optax.adam(learning_rate))"
                    ] if extra else []
        if not isinstance(self.optimizer, str):
            hint = " (did you mean to call it?)" if callable(self.optimizer) else ""
            return [f"optimizer={self.optimizer!r:.60}; expected a name such as 'adam' or an "
                    f"optax transformation (an object with init and update, such as "
                    f"optax.adam(1e-3) or optax.MultiSteps(...)){hint}"]
        if options is not None and not isinstance(options, Mapping):
            return [f"optimizer_options={options!r:.60}; expected a mapping name -> value"]
        problems = [] if rate is None else [p for p in [learning_rate_problem(rate)] if p]
        if options and "learning_rate" in options:
            return problems + [f"optimizer_options holds learning_rate="
                               f"{options['learning_rate']!r}; expected it as the learning_rate "
                               "keyword (--lr on the command line)"]
        try:
            hyper = hyper_parameter_problems(self.optimizer, options or {})
        except KeyError:  # not an optimizer's name: the message says so below
            hyper = []
        if problems or hyper:
            return problems + hyper
        try:
            self.transformation()
        except (ValueError, TypeError) as error:
            return [str(error).removeprefix("mcjax.optimizer: ")]
        return []

    def transformation(self) -> Transformation:
        """The optax optimizer these settings name."""
        if not isinstance(self.optimizer, str):
            return self.optimizer
        rate = DEFAULT_LEARNING_RATE if self.learning_rate is None else self.learning_rate
        return make_optimizer(self.optimizer, learning_rate=rate, **(self.optimizer_options or {}))

    def identity(self) -> dict:
        """What a resumed run must share with the run that wrote the checkpoints (JSON)."""
        if not isinstance(self.optimizer, str):
            optimizer = {"transformation": describe(self.optimizer)}
        else:
            rate = DEFAULT_LEARNING_RATE if self.learning_rate is None else self.learning_rate
            optimizer = described({"name": self.optimizer, "learning_rate": describe(rate),
                                   **{k: describe(v) for k, v in
                                      (self.optimizer_options or {}).items()}})
        return {"optimizer": optimizer, "grad": self.grad, "batch_size": self.batch_size,
                "shuffle": self.shuffle, "seed": self.seed}
