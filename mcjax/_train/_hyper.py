"""The hyper-parameters of an optimizer: the range of each, and the problems of given values.

An optimizer is a function ``maker(learning_rate, **hyper)`` (optax's ``adam``, mcjax's
``kfac``); its hyper-parameters are its parameters after the learning rate, with their
defaults.  A value is judged by its name's range (``RANGES``, shared by optax's optimizers),
by its default's kind (a bool, None allowed where the default is None, an integer), or as one
of a few methods (``choices``).  The registry of optimizers by name (``mcjax.optimizer``) and
the optimizers themselves (``mcjax.kfac``) both judge their values here.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

# The range of each hyper-parameter that optax's optimizers share by name: (what the message
# says, the test).  Decay rates of moving averages are in [0, 1) (1 would never forget, so
# Adam's bias correction divides by zero); step sizes, epsilons and trust ratios are > 0;
# weight decays and initial accumulators >= 0.  A hyper-parameter whose optax default is None
# may also be None; one whose default is a bool must be a bool; any other number must be
# finite.
_UNIT = ("a number in [0, 1)", lambda v: 0 <= v < 1)
_POSITIVE = ("a number > 0", lambda v: v > 0)
_NON_NEGATIVE = ("a number >= 0", lambda v: v >= 0)
RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    **dict.fromkeys(("b1", "b2", "b3", "decay", "rho", "momentum"), _UNIT),
    **dict.fromkeys(("eps", "min_norm", "trust_coefficient", "clipping_threshold",
                     "min_step_size", "max_step_size"), _POSITIVE),
    **dict.fromkeys(("eps_root", "weight_decay", "weight_decay_rate",
                     "initial_accumulator_value", "initial_scale", "eta", "gamma",
                     "decay_offset", "min_dim_size_to_factor"), _NON_NEGATIVE),
    "eta_minus": ("a number in (0, 1)", lambda v: 0 < v < 1),
    "eta_plus": ("a number > 1", lambda v: v > 1),
    "damping": _POSITIVE,
    "kl_clip": _POSITIVE,
    "factor_decay": _UNIT,
    "refresh_every": ("a number >= 1", lambda v: v >= 1),
    "damping_adaptation_interval": ("a number >= 1", lambda v: v >= 1),
    "seed": _NON_NEGATIVE,
    "damping_adaptation_decay": ("a number in (0, 1)", lambda v: 0 < v < 1),
}


def learning_rate_problem(rate, spelled: str = "learning_rate") -> str | None:
    """What is wrong with a learning rate (a finite number > 0 or a schedule), or None."""
    if callable(rate) or (isinstance(rate, numbers.Real) and not isinstance(rate, bool)
                          and math.isfinite(float(rate)) and float(rate) > 0):
        return None
    return f"{spelled}={rate!r}; expected a finite number > 0 or an optax schedule"


def _value_problem(key: str, value, default, choices: Mapping[str, tuple]) -> str | None:
    """What is wrong with one hyper-parameter's value (``expected ...``), or None
    (``default``: the optimizer's; ``choices``: the values of those that name a method)."""
    if value is None and default is None:
        return None
    if key in choices:
        return None if value in choices[key] else \
            f"expected one of {', '.join(map(repr, choices[key]))}"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if key not in RANGES and not isinstance(default, numbers.Real):
        return None  # a dtype, a mask, a key: optax's own business
    what, test = RANGES.get(key, ("a finite number", lambda v: True))
    if isinstance(default, numbers.Real) and not test(float(default)):
        what, test = _NON_NEGATIVE  # optax's own default is never refused (lars: eps=0.0)
    integer = isinstance(default, numbers.Integral) and key in RANGES
    kind = numbers.Integral if integer else numbers.Real
    also = " or None" if default is None else ""
    expected = f"expected {what.replace('a number', 'an integer') if integer else what}{also}"
    if isinstance(value, bool) or not isinstance(value, kind):
        return expected
    return None if math.isfinite(float(value)) and test(float(value)) else expected


def parameters(maker: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The hyper-parameters of the optimizer ``maker`` (its parameters after the learning
    rate) and their defaults."""
    return dict(list(inspect.signature(maker).parameters.items())[1:])


def problems_of(maker: str, known: Mapping[str, inspect.Parameter], hyper: Mapping[str, Any], *,
                choices: Mapping[str, tuple] | None = None,
                spelled: Callable[[str, Any], str] = lambda k, v: f"{k}={v!r}") -> list[str]:
    """Every problem with the hyper-parameters ``hyper`` of an optimizer: unknown names
    (listing the known ones) and values out of range (naming each one).

    Args:
      maker: how a message names the optimizer (``optax.adam``, ``mcjax.kfac``).
      known: its hyper-parameters and their defaults (``parameters``).
      hyper: the hyper-parameters given, learning rate excluded.
      choices: the values of each hyper-parameter that names one of a few methods
        (``{"inverse": ("eigh", "cholesky")}``).
      spelled: how a message writes ``key=value`` (``--opt b1=2.0`` on the command line).
    """
    unknown = [k for k in hyper if k not in known]
    found = [f"{maker} takes no hyper-parameter "
             f"{', '.join(unknown)}; it takes {', '.join(known)}"] if unknown else []
    for key, value in hyper.items():
        if key in known:
            why = _value_problem(key, value, known[key].default, choices or {})
            if why is not None:
                found.append(f"{spelled(key, value)}; {why}")
    return found
