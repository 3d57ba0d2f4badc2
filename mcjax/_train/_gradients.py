r"""The training objective with a chosen source of gradient: JAX autodiff or the paper's rules.

``objective(model, grad="analytic")`` is the model's loss as a function of
``(params, batch)`` whose derivative, as JAX sees it, is the registry's hand-derived
backpropagation: the loss is wrapped in :func:`jax.custom_vjp` with the model's ``backprop``
as the backward rule.  It is an ordinary JAX function, so ``jax.grad``, ``jax.jit``,
``jax.vmap`` (per-example gradients) and ``jax.lax.scan`` all use the hand-derived gradient;
the training step is the same code for both sources.

The vector-Jacobian product of a scalar loss with cotangent $\bar{L}$ is
$\bar{L}\,\partial L / \partial \theta$; the batch gets no cotangent (data are not trained).
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from mcjax._train._models import Model

GRAD_SOURCES = ("autodiff", "analytic")
"""``"autodiff"``: :func:`jax.grad` of the forward code; ``"analytic"``: the registry's
hand-derived gradient (the ``backprop`` field of :class:`Model`)."""


def check_grad_source(function: str, grad: str) -> str:
    if grad not in GRAD_SOURCES:
        raise ValueError(
            f"mcjax.{function}: grad={grad!r} is not a gradient source; expected one of "
            f"{', '.join(repr(g) for g in GRAD_SOURCES)}"
        )
    return grad


def objective(model: Model, *, grad: str = "autodiff") -> Callable[..., jax.Array]:
    """The loss ``f(params, batch) -> scalar`` whose gradient comes from ``grad``.

    Args:
      model: a :class:`~mcjax.Model`.
      grad: ``"autodiff"`` (JAX differentiates the forward code) or ``"analytic"`` (the
        registry's hand-derived gradient, wired in with :func:`jax.custom_vjp`).

    Returns:
      ``f(params, batch)`` with ``batch = (X, Y)``, arrays with a leading batch axis.
      ``jax.grad(f)(params, batch)`` has the shapes of ``params``.

    Example::

        f = mcjax.objective(mcjax.neuron_model(3), grad="analytic")
        grads = jax.grad(f)(params, (X, y))  # 2/N sum_{z_i > 0} e_i x_i^T, from the rule
    """
    check_grad_source("objective", grad)

    def loss(params, batch):
        X, Y = batch
        return model.loss(params, X, Y)

    if grad == "autodiff":
        return loss

    analytic = jax.custom_vjp(loss)

    def forward(params, batch):
        return loss(params, batch), (params, batch)

    def backward(residuals, cotangent):
        params, (X, Y) = residuals
        grads = model.backprop(params, X, Y)
        # the cotangent is a scalar (shape ()): multiplying by it broadcasts without rank
        # promotion; None is the batch's zero cotangent (integer labels have no tangent space)
        return jax.tree.map(lambda g: cotangent * g, grads), None

    analytic.defvjp(forward, backward)
    analytic.__name__ = analytic.__qualname__ = f"{model.name}_loss_analytic"
    return analytic
