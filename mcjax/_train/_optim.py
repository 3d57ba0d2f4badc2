r"""Optimizers and learning-rate schedules by name: thin names over optax.

The paper's three (§1, "picking w and b by gradient descent"):

- ``"sgd"``: $\theta \leftarrow \theta - \eta\,\nabla L$;
- ``"momentum"``: $v \leftarrow \mu v + \nabla L$, $\theta \leftarrow \theta - \eta v$
  (optax's ``sgd(momentum=mu)``, default $\mu = 0.9$);
- ``"adam"``: Kingma & Ba's adaptive moments.

Any other optax optimizer that takes a ``learning_rate`` is found by its optax name
(``"adamw"``, ``"rmsprop"``, ``"lamb"``, ...), with its hyper-parameters as keywords.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

import optax

_PAPER = ("sgd", "momentum", "adam")


def _optax_optimizers() -> dict[str, Callable[..., optax.GradientTransformation]]:
    """optax's public callables whose first parameter is ``learning_rate``."""
    found = {}
    for name in dir(optax):
        fn = getattr(optax, name)
        # scale_by_* are building blocks, lbfgs needs the loss in its update
        if name.startswith(("_", "scale_by")) or name == "lbfgs" or not inspect.isfunction(fn):
            continue
        try:
            params = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            continue
        if params[:1] == ["learning_rate"]:
            found[name] = fn
    return found


def optimizer(name: str | optax.GradientTransformation, *, learning_rate: Any = 1e-3,
              **hyper) -> optax.GradientTransformation:
    r"""An optax optimizer chosen by name.

    Args:
      name: ``"sgd"``, ``"momentum"``, ``"adam"`` or the name of any optax optimizer whose
        first parameter is ``learning_rate`` (``"adamw"``, ``"rmsprop"``, ...); an
        ``optax.GradientTransformation`` is returned as it is.
      learning_rate: $\eta$, a float or an optax schedule ``step -> rate`` (see
        :func:`schedule`).
      **hyper: the optimizer's other hyper-parameters, e.g. ``b1=0.9`` for Adam,
        ``momentum=0.95`` for ``"momentum"``.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: no optax optimizer has that name.
      TypeError: a hyper-parameter the optimizer does not take.

    Example:

        >>> opt = mcjax.optimizer("momentum", learning_rate=0.05, momentum=0.9)
        >>> params = {"w": jnp.ones(2)}
        >>> updates, state = opt.update({"w": jnp.ones(2)}, opt.init(params))
        >>> updates["w"]  # -learning_rate times the gradient, on the first step
        Array([-0.05, -0.05], dtype=float32)
    """
    if isinstance(name, optax.GradientTransformation):
        return name
    if name == "momentum":
        return optax.sgd(learning_rate, momentum=hyper.pop("momentum", 0.9), **hyper)
    known = _optax_optimizers()
    if name not in known:
        close = difflib.get_close_matches(name, list(known) + ["momentum"], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"mcjax.optimizer: {name!r} is not an optimizer; expected one of the paper's "
            f"{', '.join(_PAPER)} or an optax optimizer such as adamw, rmsprop{hint}"
        )
    fn = known[name]
    unknown = [k for k in hyper if k not in inspect.signature(fn).parameters]
    if unknown:
        raise TypeError(
            f"mcjax.optimizer: optax.{name} takes no hyper-parameter {', '.join(unknown)}; "
            f"it takes {', '.join(list(inspect.signature(fn).parameters)[1:])}"
        )
    return fn(learning_rate, **hyper)


def schedule(name: str, **kwargs) -> optax.Schedule:
    """An optax learning-rate schedule by name: ``schedule("cosine_decay", ...)`` is
    ``optax.cosine_decay_schedule(...)``.

    Args:
      name: ``"constant"``, ``"linear"``, ``"cosine_decay"``, ``"exponential_decay"``,
        ``"warmup_cosine_decay"``, ``"piecewise_constant"``, ... (optax's ``*_schedule``
        functions, with or without the suffix).
      **kwargs: the schedule's arguments, e.g. ``init_value=0.1, decay_steps=1000``.

    Returns:
      A function ``step -> learning rate`` to pass as ``learning_rate``.
    """
    known = _optax_schedules()
    fn = known.get(name.removesuffix("_schedule"))
    if fn is None:
        raise ValueError(
            f"mcjax.schedule: {name!r} is not an optax schedule; expected one of "
            f"{', '.join(known)}"
        )
    return fn(**kwargs)


def _optax_schedules() -> dict[str, Callable[..., optax.Schedule]]:
    """optax.schedules' schedule makers by short name (``"cosine_decay"``, ``"exponential_decay"``)."""
    skip = ("inject_hyperparams", "inject_stateful_hyperparams", "join_schedules")
    return {
        n.removesuffix("_schedule"): getattr(optax.schedules, n)
        for n in dir(optax.schedules)
        if n[:1].islower() and n not in skip and inspect.isfunction(getattr(optax.schedules, n))
    }
