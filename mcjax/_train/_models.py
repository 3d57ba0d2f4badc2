r"""The models mcjax trains, and the source of their gradient: JAX autodiff or a hand derivation.

A :class:`Model` is what training needs from a researcher: how to initialise the parameters
and the loss $L(\theta; \text{batch})$; a hand-derived gradient $\partial L/\partial\theta$
(``backprop``) is optional.  :func:`objective` turns a model into the loss that the training
step differentiates: with ``grad="analytic"`` the loss is wrapped in :func:`jax.custom_vjp`
with ``backprop`` as its backward rule, so ``jax.grad``, ``jax.jit``, ``jax.vmap`` and
``jax.lax.scan`` all use the hand derivation and the step is the same code for both sources.
The vector-Jacobian product of a scalar loss with cotangent $\bar{L}$ is
$\bar{L}\,\partial L/\partial\theta$; the batch and the key get none (data are not trained).

The paper's two models, :func:`mcjax.neuron_model` and :func:`mcjax.mlp_model`, are in
``_paper_models``.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax

Params = Any  # a pytree of arrays
Batch = Any  # a pytree of arrays with a leading batch axis: (X, Y), (X, Y, weights), a dict ...

def count_problem(value, name: str, low: int = 1) -> str | None:
    """``name=value; expected an integer >= low`` unless ``value`` is one (NumPy's too; a bool
    or a float such as 3.0 is not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        return f"{name}={value!r}; expected an integer >= {low}"
    return None


GRAD_SOURCES = ("autodiff", "analytic")
"""``"autodiff"``: :func:`jax.grad` of the forward code; ``"analytic"``: the model's
hand-derived gradient (the ``backprop`` field of :class:`Model`)."""


class Model(NamedTuple):
    """A trainable model as pure functions; only ``init`` and ``loss`` are required.

    Every array argument may be traced (the functions run under ``jax.jit``).  A batch is any
    pytree of arrays with a leading batch axis of B rows: ``(X, Y)``, ``(X, Y, weights)``, a
    dict.  A ``loss`` (or ``backprop``) with a parameter named ``key`` gets a fresh
    ``jax.random`` key at every step (for dropout); training derives it from the seed, the
    epoch and the step, so a resumed run draws the same keys.

    Attributes:
      init: ``init(key) -> params``, a pytree of floating arrays, or a model as research
        code holds it (an Equinox module with its activation function, an nnx Module, linen
        variables): its parameters are trained (the inexact array leaves, as Equinox's
        ``eqx.filter(model, eqx.is_inexact_array)``; an nnx Module's ``nnx.Param``; linen's
        ``"params"``), its state (``nnx.BatchStat`` and the other nnx variables, an
        ``eqx.nn.State``, linen's other collections) is updated by the loss and carried from
        step to step (see ``returns_state``), the rest is carried along untouched, and
        ``TrainResult.params`` is the whole model.
      loss: ``loss(params, batch) -> scalar`` or ``loss(params, batch, key) -> scalar``,
        usually a mean over the batch's rows.
      backprop: optional, the hand-derived gradient ``backprop(params, batch[, key]) ->
        grads`` of ``loss`` with respect to ``params`` (same structure and shapes, or the
        model's own type with ``None`` at what is not trained, as ``eqx.filter_grad``), used by
        ``grad="analytic"``, which checks it with :func:`mcjax.check` at the first batch.
      apply: optional, ``apply(params, inputs) -> predictions`` (B, ...), for evaluation.
      check: optional, ``check(function, params, batch)`` raises :class:`~mcjax.ShapeError`
        (or ``ValueError``) naming ``function`` when the batch does not fit the parameters;
        :func:`mcjax.train` calls it on the whole data set before anything is compiled.
      config: optional, a JSON-serialisable description stored with checkpoints, so that a
        resumed run refuses another model (default: the names and closed-over settings of
        ``init`` and ``loss``); the traced loss is compared as well, whatever ``config`` says.
      name: a short name for messages, e.g. ``"neuron"`` or ``"mlp"``.
      returns_state: the loss returns ``(loss, new_state)``: the new values of the model's
        state, the part of ``init``'s output that is carried from step to step and not
        trained (an ``eqx.nn.State``; linen's collections besides ``"params"``, e.g.
        ``batch_stats``, as ``apply(..., mutable=[...])`` returns them).  An nnx Module
        needs no declaration: its ``nnx.BatchStat`` and RNG counts are read back from the
        module after the loss has run, as ``nnx.jit`` does.

    Example:

        >>> def init(key):
        ...     return {"w": jax.random.normal(key, (3,)), "b": jnp.zeros(())}
        >>> def loss(params, batch):
        ...     X, y = batch
        ...     return jnp.mean((X @ params["w"] + params["b"] - y) ** 2)
        >>> X = jax.random.normal(jax.random.key(1), (32, 3))
        >>> y = X @ jnp.array([1.0, -2.0, 0.5])
        >>> result = mcjax.train(mcjax.Model(init, loss), (X, y), epochs=5)
        >>> bool(result.history["loss"][-1] < result.history["loss"][0])
        True
    """

    init: Callable[[jax.Array], Params]
    loss: Callable[..., jax.Array]
    backprop: Callable[..., Params] | None = None
    apply: Callable[..., jax.Array] | None = None
    check: Callable[..., None] | None = None
    config: Mapping[str, Any] | None = None
    name: str = "model"
    returns_state: bool = False


class WithState(NamedTuple):
    """What training carries for a model with state: the trained ``params`` (differentiated,
    updated by the optimizer) and the model's ``state`` (running statistics, RNG counts:
    replaced at each step by the values the loss leaves).  Both keep the model's own
    containers, with ``None`` where a leaf belongs to the other part."""

    params: Params
    state: Any


def trained_part(params):
    """The part of what training carries that the optimizer updates."""
    return params.params if isinstance(params, WithState) else params


def takes_key(fn: Callable) -> bool:
    """Whether ``fn`` declares a parameter named ``key`` (it then gets a PRNG key per step)."""
    try:
        return "key" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or a callable without a signature
        return False


def check_grad_source(function: str, grad: str) -> str:
    if grad not in GRAD_SOURCES:
        raise ValueError(
            f"mcjax.{function}: grad={grad!r} is not a gradient source; expected one of "
            f"{', '.join(repr(g) for g in GRAD_SOURCES)}"
        )
    return grad


def check_model(function: str, model, grad: str = "autodiff") -> Model:
    """Refuse what is not a :class:`Model`, or a model without what ``grad`` needs."""
    if not isinstance(model, Model):
        raise TypeError(
            f"mcjax.{function}: model is a {type(model).__name__}; expected a mcjax.Model "
            "(at least init and loss), e.g. mcjax.Model(init, loss) or mcjax.mlp_model(...)")
    missing = [f for f in ("init", "loss") if not callable(getattr(model, f))]
    if grad == "analytic" and not callable(model.backprop):
        missing.append("backprop (grad='analytic' trains with it)")
    if missing:
        raise TypeError(f"mcjax.{function}: model {model.name!r} has no callable "
                        f"{', '.join(missing)}; expected functions there")
    return model


def objective(model: Model, *, grad: str = "autodiff") -> Callable[..., jax.Array]:
    """The loss ``f(params, batch, key=None) -> scalar`` whose gradient comes from ``grad``.

    Args:
      model: a :class:`~mcjax.Model`.
      grad: ``"autodiff"`` (JAX differentiates the forward code) or ``"analytic"`` (the
        model's hand-derived ``backprop``, wired in with :func:`jax.custom_vjp`).

    Returns:
      ``f(params, batch, key=None)``; ``jax.grad(f)(params, batch)`` has the structure and
      shapes of ``params``.  ``key`` reaches the model's loss when it declares one, and is
      then required.  A model that ``returns_state`` gives ``f -> (loss, new_state)``:
      differentiate it with ``jax.value_and_grad(f, has_aux=True)``.

    Example:

        >>> model = mcjax.neuron_model(3)
        >>> params = model.init(jax.random.key(0))
        >>> X, y = jnp.ones((4, 3)), jnp.zeros(4)
        >>> f = mcjax.objective(model, grad="analytic")
        >>> grads = jax.grad(f)(params, (X, y))  # 2/N sum_{z_i > 0} e_i x_i^T, from the rule
        >>> jax.tree.map(jnp.shape, grads)
        {'b': (), 'w': (3,)}
    """
    check_grad_source("objective", grad)
    check_model("objective", model, grad)
    wants_key = takes_key(model.loss)

    def loss(params, batch, key=None):
        if not wants_key:
            return model.loss(params, batch)
        if key is None:
            raise TypeError(f"mcjax.objective: model {model.name!r} has a loss that takes a key "
                            "(e.g. for dropout); expected f(params, batch, key)")
        return model.loss(params, batch, key=key)

    if grad == "autodiff":
        return loss
    backprop = model.backprop
    assert backprop is not None  # grad="analytic" is refused without one
    backprop_key = takes_key(backprop)

    @jax.custom_vjp
    def analytic(params, batch, key):
        return loss(params, batch, key)

    def forward(params, batch, key):
        return loss(params, batch, key), (params, batch, key)

    def backward(residuals, cotangent):
        params, batch, key = residuals
        grads = (backprop(params, batch, key=key) if backprop_key
                 else backprop(params, batch))
        # the cotangent is a scalar: multiplying broadcasts without rank promotion; None is the
        # zero cotangent of the batch (integer labels have no tangent space) and of the key
        return jax.tree.map(lambda g: cotangent * g, grads), None, None

    analytic.defvjp(forward, backward)

    def hand_derived(params, batch, key=None):
        return analytic(params, batch, key)

    hand_derived.__name__ = hand_derived.__qualname__ = f"{model.name}_loss_analytic"
    return hand_derived
