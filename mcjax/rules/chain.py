r"""The chain rules as combinators (Parr & Howard §4.5, §8.5).

The derivative of a composition is *built* from the rules of its parts, never written again:

- ``mcjax.vector_chain_rule`` (§4.5.3):
  $\frac{\partial}{\partial\mathbf{x}}\mathbf{f}(\mathbf{g}(\mathbf{x})) =
  \frac{\partial\mathbf{f}}{\partial\mathbf{g}}\frac{\partial\mathbf{g}}{\partial\mathbf{x}}$,
  a product of (structured) Jacobians;
- ``mcjax.single_variable_chain_rule`` (§4.5.1): the same for scalars,
  $\frac{dy}{dx} = \frac{dy}{du}\frac{du}{dx}$;
- ``mcjax.total_derivative_chain_rule`` (§4.5.2): for $y = f(x, u_1(x), \dots, u_n(x))$,
  $\frac{dy}{dx} = \frac{\partial f}{\partial x} + \sum_i \frac{\partial f}{\partial u_i}\frac{\partial u_i}{\partial x}$.

A link is a registered unary function (``mcjax.sin``, or its name ``"sin"``) or a
``mcjax.Differentiable`` returned by another combinator, so compositions nest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Union

from mcjax._core._errors import Problems
from mcjax._jacobian import Jacobian
from mcjax._registry import REGISTRY, Derivative, Registry, Rule, as_array
from mcjax.rules import elementwise
from mcjax.rules.activations import sigmoid, tanh

__all__ = [
    "Differentiable",
    "vector_chain_rule",
    "single_variable_chain_rule",
    "total_derivative_chain_rule",
    "sin_of_square",
    "log_square_sin_exp",
    "total_derivative_sum",
    "total_derivative_product",
    "sigmoid_of_tanh",
]


class Differentiable(NamedTuple):
    """A function of one argument together with its derivative; calling it calls the function.

    Attributes:
      forward: ``x -> y``.
      derivative: ``x -> J``, the Jacobian of ``forward`` at ``x`` (numerator layout).
      links: for a composition, its links, innermost first (see ``mcjax.check_chain``).
      name: a name for reports.
    """

    forward: Callable[..., Any]
    derivative: Callable[..., Any]
    links: tuple[Differentiable, ...] = ()
    name: str = ""

    def __call__(self, x: Any) -> Any:
        """``forward(x)``: a Differentiable is used like the function it is."""
        return self.forward(x)


Link = Union[str, Callable[..., Any], Differentiable]
"""A link of a chain: a registered unary rule (its function or name) or a Differentiable."""


def as_differentiable(link: Link, registry: Registry | None = None) -> Differentiable:
    """A ``mcjax.Differentiable`` from a registered unary rule (function or name) or itself."""
    if isinstance(link, Differentiable):
        return link
    found: Rule = (REGISTRY if registry is None else registry).get(link)
    if len(found.arg_names) != 1:
        raise TypeError(
            f"mcjax.chain: rule {found.name!r} takes {len(found.arg_names)} arguments "
            f"({', '.join(found.arg_names)}); a link of a chain takes one. Bind the others "
            "with a Differentiable of your own."
        )
    return Differentiable(found.forward, found.derivative(found.arg_names[0]), name=found.name)


def vector_chain_rule(*links: Link, registry: Registry | None = None) -> Differentiable:
    """Compose unary links, outermost first: ``vector_chain_rule(f, g)`` is $f \\circ g$.

    The derivative at $\\mathbf{x}$ is the product of the links' Jacobians, each taken at its
    own input (§4.5.3); structured factors stay structured (diagonal @ diagonal is diagonal).

    Args:
      *links: registered unary functions, their names, or ``mcjax.Differentiable`` values.

    Returns:
      A ``mcjax.Differentiable`` for the composition.
    """
    if not links:
        raise TypeError("mcjax.vector_chain_rule: expected at least one link; got none")
    parts = [as_differentiable(link, registry) for link in reversed(links)]  # innermost first

    def forward(x):
        for part in parts:
            x = part.forward(x)
        return x

    def derivative(x) -> Jacobian:
        J = None
        for part in parts:
            J_part = part.derivative(x)
            J = J_part if J is None else J_part @ J
            x = part.forward(x)
        assert J is not None  # a chain has at least one link
        return J

    return Differentiable(forward, derivative, links=tuple(parts))


def single_variable_chain_rule(*links: Link, registry: Registry | None = None) -> Differentiable:
    """$\\frac{dy}{dx} = \\frac{dy}{du}\\frac{du}{dx}$ for scalar x (§4.5.1).

    The scalar case of ``mcjax.vector_chain_rule`` (the paper's point: the vector rule reduces to
    it); the derivative is returned as a scalar array of shape ().

    Raises:
      ShapeError: (when called) x is not a scalar.
    """
    chained = vector_chain_rule(*links, registry=registry)

    def derivative(x):
        problems = Problems("single_variable_chain_rule")
        problems.expect_ndim("x", x, 0)
        problems.raise_if_any()
        return chained.derivative(x).dense()

    return Differentiable(chained.forward, derivative)


def total_derivative_chain_rule(f: str | Callable[..., Any], *intermediates: Link,
                                registry: Registry | None = None) -> Differentiable:
    """$y = f(x, u_1(x), \\dots, u_n(x))$ and its total derivative (§4.5.2).

    Args:
      f: a registered rule (function or name) of ``1 + n`` arguments ``(x, u_1, ..., u_n)``
        with a derivative for each.
      *intermediates: the ``n`` unary links $u_i$.

    Returns:
      A ``mcjax.Differentiable`` whose derivative is
      $\\partial f/\\partial x + \\sum_i \\partial f/\\partial u_i \\; du_i/dx$.
    """
    outer: Rule = (REGISTRY if registry is None else registry).get(f)
    if len(outer.arg_names) != 1 + len(intermediates):
        raise TypeError(
            f"mcjax.total_derivative_chain_rule: rule {outer.name!r} takes "
            f"{len(outer.arg_names)} arguments ({', '.join(outer.arg_names)}) but "
            f"{len(intermediates)} intermediate(s) were given; expected "
            f"{len(outer.arg_names) - 1}"
        )
    us = [as_differentiable(u, registry) for u in intermediates]
    partials = [outer.derivative(name) for name in outer.arg_names]

    def forward(x):
        return outer.forward(x, *(u.forward(x) for u in us))

    def derivative(x) -> Jacobian:
        args = (x, *(u.forward(x) for u in us))
        J = partials[0](*args)
        for partial, u in zip(partials[1:], us):
            J = J + partial(*args) @ u.derivative(x)
        return J

    return Differentiable(forward, derivative)


# -- the paper's examples, registered so that `mcjax verify` checks the combinators ------------
def _register(forward, section, shapes, differentiable, text, latex, sample=None):
    """Register ``forward`` (which computes ``differentiable``) as rule ``chain.NAME``."""
    doc = (forward.__doc__ or "").strip().splitlines()[0]
    REGISTRY.register(Rule(
        name=f"chain.{forward.__name__}", forward=forward,
        wrt={"x": Derivative(differentiable.derivative, text, latex)}, section=section,
        shapes={"x": shapes}, sample=sample, description=doc))
    return forward


_SIN_OF_SQUARE = single_variable_chain_rule(elementwise.sin, elementwise.square)
_LOG_SQUARE_SIN_EXP = single_variable_chain_rule(elementwise.log, elementwise.square,
                                                 elementwise.sin, elementwise.exp)
_TOTAL_SUM = total_derivative_chain_rule(elementwise.add, elementwise.square)
_TOTAL_PRODUCT = total_derivative_chain_rule(elementwise.multiply, elementwise.square)
_SIGMOID_OF_TANH = vector_chain_rule(sigmoid, tanh)


def sin_of_square(x):
    """$y = \\sin(x^2)$, the paper's single-variable chain-rule example (§4.5.1). x: scalar."""
    return _SIN_OF_SQUARE.forward(x)


def log_square_sin_exp(x):
    """$y = \\ln(\\sin(e^x)^2)$: four links, one product of four derivatives (§4.5.1). x: scalar."""
    return _LOG_SQUARE_SIN_EXP.forward(x)


def total_derivative_sum(x):
    """$\\mathbf{y} = \\mathbf{x} + \\mathbf{x}^2$ as $f(x, u) = x + u$, $u = x^2$: the paper's
    total-derivative example (§4.5.2). x: shape s -> shape s."""
    return _TOTAL_SUM.forward(x)


def total_derivative_product(x):
    """$\\mathbf{y} = \\mathbf{x} \\cdot \\mathbf{x}^2$ as $f(x, u) = x u$, $u = x^2$ (§4.5.2).
    x: shape s -> shape s."""
    return _TOTAL_PRODUCT.forward(x)


def sigmoid_of_tanh(x):
    """$\\mathbf{y} = \\sigma(\\tanh \\mathbf{x})$: a vector chain of two element-wise functions
    (§4.5.3). x: shape s -> shape s."""
    return _SIGMOID_OF_TANH.forward(x)


_register(sin_of_square, "4.5.1", (), _SIN_OF_SQUARE, "cos(x^2) 2x", r"\cos(x^2)\,2x")
_register(log_square_sin_exp, "4.5.1", (), _LOG_SQUARE_SIN_EXP, "2 cos(e^x) e^x / sin(e^x)",
          r"\frac{2\cos(e^x)\,e^x}{\sin(e^x)}",
          # keep sin(e^x) away from 0, where the log is undefined
          sample=lambda rng, dims, dtype: (as_array(rng.uniform(-1.0, 0.9), dtype),))
_register(total_derivative_sum, "4.5.2", ("n",), _TOTAL_SUM, "I + diag(2x)",
          r"I + \operatorname{diag}(2\mathbf{x})")
_register(total_derivative_product, "4.5.2", ("n",), _TOTAL_PRODUCT,
          "diag(x^2) + diag(x) diag(2x) = diag(3x^2)", r"\operatorname{diag}(3\mathbf{x}^2)")
_register(sigmoid_of_tanh, "4.5.3", ("n",), _SIGMOID_OF_TANH,
          "diag(s (1 - s)) diag(1 - tanh(x)^2), s = sigmoid(tanh(x))",
          r"\operatorname{diag}(\sigma'(\tanh\mathbf{x}))\operatorname{diag}(1-\tanh^2\mathbf{x})")
