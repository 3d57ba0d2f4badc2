r"""Optimizers and learning-rate schedules by name: thin names over optax.

The paper's three (§1, "picking w and b by gradient descent"):

- ``"sgd"``: $\theta \leftarrow \theta - \eta\,\nabla L$;
- ``"momentum"``: $v \leftarrow \mu v + \nabla L$, $\theta \leftarrow \theta - \eta v$
  (optax's ``sgd(momentum=mu)``, default $\mu = 0.9$);
- ``"adam"``: Kingma & Ba's adaptive moments.

Any other optax optimizer that takes a ``learning_rate`` is found by its optax name
(``"adamw"``, ``"rmsprop"``, ``"lamb"``, ...), with its hyper-parameters as keywords; and
``"kfac"`` is mcjax's own K-FAC (:func:`mcjax.kfac`), whose update also needs the loss and the
batch (optax's extra arguments ``loss=`` and ``batch=``, passed by :func:`update`).

An optimizer object is anything optax-shaped: a pair of functions ``init(params) -> state``
and ``update(grads, state, params) -> (updates, state)`` (:class:`Transformation`).  It is
recognised by having them, not by its class: ``optax.MultiSteps`` or a wrapper of your own
are not ``optax.GradientTransformation`` subclasses, and train all the same.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar, overload

import jax
import optax

from mcjax._train._hyper import learning_rate_problem, parameters, problems_of
from mcjax._train._kfac import CHOICES as KFAC_CHOICES
from mcjax._train._kfac import kfac

_PAPER = ("sgd", "momentum", "adam")
MOMENTUM = 0.9  # the default of the paper's "momentum"

class Transformation(Protocol):
    """An optax-style optimizer: ``init(params) -> state`` and ``update(grads, state, params)
    -> (updates, state)`` (``optax.GradientTransformation``, ``optax.MultiSteps``, ...)."""

    @property
    def init(self) -> Callable[..., Any]: ...

    @property
    def update(self) -> Callable[..., Any]: ...


T = TypeVar("T", bound=Transformation)


def is_transformation(value) -> bool:
    """Whether ``value`` is an optax-style optimizer: an object (not a class, not a name) with
    callable ``init`` and ``update``."""
    return not isinstance(value, (str, type)) and callable(getattr(value, "init", None)) \
        and callable(getattr(value, "update", None))


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


def _mcjax_optimizers() -> dict[str, Callable[..., Any]]:
    """mcjax's own optimizers by name (beside optax's)."""
    return {"kfac": kfac}


_OWN_CHOICES = {"kfac": KFAC_CHOICES}
"""mcjax's own optimizers' hyper-parameters that name one of a few methods."""


def known_optimizers() -> dict[str, Callable[..., Any]]:
    """Every optimizer :func:`optimizer` finds by name ("momentum" aside): optax's with a
    ``learning_rate`` first, and mcjax's own (``"kfac"``)."""
    return {**_optax_optimizers(), **_mcjax_optimizers()}


def _maker(name: str) -> str:
    """How a message names the function behind optimizer ``name``."""
    return f"mcjax.{name}" if name in _mcjax_optimizers() else \
        f"optax.{'sgd' if name == 'momentum' else name}"


def update(optimizer: Transformation, grads, state, params, *, loss: Callable | None = None,
           batch: Any = None):
    """``optimizer.update(grads, state, params)``, with optax's extra arguments ``loss=`` (a
    function ``loss(params, batch)``) and ``batch=`` for a
    ``GradientTransformationExtraArgs`` (:func:`mcjax.kfac` needs them; optax's own ignore
    them): the one call of an optimizer's update that a step, its check and its fingerprint
    share."""
    if loss is not None and isinstance(optimizer, optax.GradientTransformationExtraArgs):
        return optimizer.update(grads, state, params, loss=loss, batch=batch)
    return optimizer.update(grads, state, params)


def reports(state) -> dict[str, float]:
    """What an optimizer's state reports for the history (``{name: number}``): the union of
    ``reports()`` of every node of ``state`` that has one (``mcjax.kfac(adaptive_damping=True)``
    reports its damping and reduction ratio); empty for optax's own."""
    found: dict[str, float] = {}
    has = lambda x: callable(getattr(x, "reports", None))  # noqa: E731
    for node in jax.tree.leaves(state, is_leaf=has):
        if has(node):
            found.update({k: float(v) for k, v in node.reports().items()})
    return found


def _signature(name: str) -> dict[str, inspect.Parameter]:
    """The hyper-parameters of optimizer ``name`` (a known one) and their optax defaults."""
    params = parameters(optax.sgd if name == "momentum" else known_optimizers()[name])
    if name == "momentum":
        params["momentum"] = params["momentum"].replace(default=MOMENTUM)
    return params


def hyper_parameter_problems(name: str, hyper: Mapping[str, Any],
                             spelled: Callable[[str, Any], str] = lambda k, v: f"{k}={v!r}"
                             ) -> list[str]:
    """Every problem with the hyper-parameters ``hyper`` of the optimizer ``name``: unknown
    names (listing the known ones) and values out of range (naming each one).

    Args:
      name: an optimizer name that :func:`optimizer` knows.
      hyper: the hyper-parameters given, learning rate excluded.
      spelled: how a message writes ``key=value`` (``--opt b1=2.0`` on the command line).
    """
    return problems_of(_maker(name), _signature(name), hyper,
                       choices=_OWN_CHOICES.get(name, {}), spelled=spelled)


def hyper_parameters(name: str, hyper: Mapping[str, Any]) -> dict[str, Any]:
    """``hyper`` with every hyper-parameter it leaves out at its default: what the optimizer
    runs with, so that a default written out (Adam's ``eps=1e-8``) is the same setting as one
    left out.  An unknown ``name`` gives ``hyper`` as it is."""
    try:
        known = _signature(name)
    except KeyError:
        return dict(hyper)
    return {**{k: p.default for k, p in known.items() if p.default is not p.empty}, **hyper}


def described(identity: Mapping[str, Any]) -> dict[str, Any]:
    """An optimizer's description in a run's record (``{"name": ..., "learning_rate": ...,
    hyper-parameters}``) with the hyper-parameters it leaves out at their defaults, described:
    a record written before defaults were recorded compares equal to one written since."""
    from mcjax._train._describe import as_json, describe

    name = identity.get("name")
    if not isinstance(name, str):
        return dict(identity)
    defaults = hyper_parameters(name, {})
    return {**{k: as_json(describe(v)) for k, v in defaults.items()}, **identity}


@overload
def optimizer(name: str, *, learning_rate: Any = 1e-3, **hyper) -> optax.GradientTransformation:
    ...


@overload
def optimizer(name: T, *, learning_rate: Any = 1e-3, **hyper) -> T:
    ...


def optimizer(name, *, learning_rate: Any = 1e-3, **hyper):
    r"""An optax optimizer chosen by name.

    Args:
      name: ``"sgd"``, ``"momentum"``, ``"adam"``, ``"kfac"`` (:func:`mcjax.kfac`) or the name
        of any optax optimizer whose first parameter is ``learning_rate`` (``"adamw"``,
        ``"rmsprop"``, ...); an optax-style
        transformation (anything with ``init`` and ``update``, such as
        ``optax.MultiSteps``) is returned as it is.
      learning_rate: $\eta$, a float or an optax schedule ``step -> rate`` (see
        :func:`schedule`).
      **hyper: the optimizer's other hyper-parameters, e.g. ``b1=0.9`` for Adam,
        ``momentum=0.95`` for ``"momentum"``.

    Returns:
      An ``optax.GradientTransformation`` (or the transformation given).

    Raises:
      ValueError: no optax optimizer has that name, or a value is out of its range: the
        learning rate must be finite and > 0 (or a schedule), decay rates such as ``b1``,
        ``b2`` and ``momentum`` in [0, 1), ``eps`` > 0, ``weight_decay`` >= 0, switches such
        as ``nesterov`` True or False (every problem is listed).
      TypeError: a hyper-parameter the optimizer does not take (the message lists those it
        takes).

    Example:

        >>> opt = mcjax.optimizer("momentum", learning_rate=0.05, momentum=0.9)
        >>> params = {"w": jnp.ones(2)}
        >>> updates, state = opt.update({"w": jnp.ones(2)}, opt.init(params))
        >>> updates["w"]  # -learning_rate times the gradient, on the first step
        Array([-0.05, -0.05], dtype=float32)
    """
    if not isinstance(name, str) and is_transformation(name):
        return name
    known = known_optimizers()
    if not isinstance(name, str) or (name not in known and name != "momentum"):
        close = difflib.get_close_matches(name, list(known) + ["momentum"], n=3) \
            if isinstance(name, str) else []
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"mcjax.optimizer: {name!r} is not an optimizer; expected one of the paper's "
            f"{', '.join(_PAPER)} or an optax optimizer such as adamw, rmsprop{hint}"
        )
    problems = hyper_parameter_problems(name, hyper)
    unknown = [p for p in problems if " takes no hyper-parameter " in p]
    if unknown:
        raise TypeError(f"mcjax.optimizer: {unknown[0]}")
    rate = learning_rate_problem(learning_rate)
    problems = ([rate] if rate is not None else []) + problems
    if problems:
        raise ValueError(f"mcjax.optimizer: {'; and '.join(problems)}")
    if name == "momentum":
        return optax.sgd(learning_rate, momentum=hyper.pop("momentum", MOMENTUM), **hyper)
    return known[name](learning_rate, **hyper)


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

    Raises:
      ValueError: no optax schedule has that name, or optax refuses a value (a
        ``decay_steps`` of 0).
      TypeError: an argument the schedule does not take, or one it needs is missing.
    """
    known = _optax_schedules()
    fn = known.get(name.removesuffix("_schedule")) if isinstance(name, str) else None
    if fn is None:
        raise ValueError(
            f"mcjax.schedule: {name!r} is not an optax schedule; expected one of "
            f"{', '.join(known)}"
        )
    try:
        return fn(**kwargs)
    except (TypeError, ValueError) as error:  # optax's own sentence, said as ours
        kind = TypeError if isinstance(error, TypeError) else ValueError
        raise kind(f"mcjax.schedule: {error}") from None


def _optax_schedules() -> dict[str, Callable[..., optax.Schedule]]:
    """optax.schedules' schedule makers by short name (``"cosine_decay"``, ``"exponential_decay"``)."""
    skip = ("inject_hyperparams", "inject_stateful_hyperparams", "join_schedules")
    return {
        n.removesuffix("_schedule"): getattr(optax.schedules, n)
        for n in dir(optax.schedules)
        if n[:1].islower() and n not in skip and inspect.isfunction(getattr(optax.schedules, n))
    }
