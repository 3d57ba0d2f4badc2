"""The rule record and the registry: the heart of mcjax.

A ``mcjax.registry.Rule`` is one identity of Parr & Howard: a forward function, its hand-derived
derivative with respect to each argument (a ``mcjax.Derivative``: the code, and the formula as
plain text and LaTeX), the paper section, and the symbolic shapes of its arguments, from which
tests, ``mcjax verify`` rows and docs rows are generated.

A rule is registered by one decorator beside its forward function::

    @rule(
        "multiply",
        section="4.2",
        shapes="x: n, y: n",
        wrt={
            "x": Derivative(lambda x, y: Diagonal(y), "diag(y)", r"\\operatorname{diag}(y)"),
            "y": Derivative(lambda x, y: Diagonal(x), "diag(x)", r"\\operatorname{diag}(x)"),
        },
    )
    def multiply(x, y):
        return x * y

The decorator returns the forward function unchanged.  ``mcjax.derivative(multiply, "y")``
gives the registered derivative back, with its argument checks.

A scalar rule may also carry hand-derived **second** derivatives, keyed by the pair of
arguments: ``hessian={("w", "w"): Derivative(fn, text, latex)}``, ``fn`` returning
$\\partial^2 f / \\partial a\\,\\partial b$ of shape ``a.shape + b.shape`` (the Jacobian with
respect to ``b`` of the gradient with respect to ``a``, numerator layout, as ``jax.hessian``).
``mcjax verify`` checks each as the derivative of ``jax.grad(forward, a)`` with respect to
``b``; ``Rule.second_derivative(a, b)`` gives it back.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import jax
import numpy as np
from jax.typing import DTypeLike

from mcjax._core._conventions import KINK_MARGIN
from mcjax._core._errors import require_floating

SECTIONS: dict[str, str] = {
    "2": "Review: Scalar derivative rules",
    "4.1": "Generalization of the Jacobian",
    "4.2": "Derivatives of vector element-wise binary operators",
    "4.3": "Derivatives involving scalar expansion",
    "4.4": "Vector sum reduction",
    "4.5.1": "Single-variable chain rule",
    "4.5.2": "Single-variable total-derivative chain rule",
    "4.5.3": "Vector chain rule",
    "5": "The gradient of neuron activation",
    "6": "The gradient of the neural network loss function",
    "6.1": "The gradient with respect to the weights",
    "6.2": "The derivative with respect to the bias",
    "8.1": "Matrix Calculus Reference: Gradients and Jacobians",
    "8.2": "Matrix Calculus Reference: Element-wise operations on vectors",
    "8.3": "Matrix Calculus Reference: Scalar expansion",
    "8.4": "Matrix Calculus Reference: Vector reductions",
    "8.5": "Matrix Calculus Reference: Chain rules",
    "beyond": "Beyond the paper: the same rules applied to a full network",
}
"""Sections of Parr & Howard, "The Matrix Calculus You Need For Deep Learning"
(arXiv:1802.01528), that rules cite."""


@dataclass(frozen=True)
class Derivative:
    """A hand-derived derivative with respect to one argument.

    Attributes:
      fn: takes the forward function's positional arguments and returns the derivative in
        numerator layout: a structured ``mcjax.Jacobian``, a dense array of shape
        ``out.shape + arg.shape``, or (for a scalar function of a pytree) a gradient pytree.
      text: the formula in plain text, e.g. ``diag(y)``.
      latex: the formula in LaTeX, e.g. ``\\operatorname{diag}(\\mathbf{y})``.
    """

    fn: Callable[..., Any]
    text: str
    latex: str


Sampler = Callable[[np.random.Generator, Mapping[str, int], Any], tuple]


@dataclass(frozen=True, eq=False)
class Rule:
    """One identity of the paper as code.

    Attributes:
      name: unique name, e.g. ``"multiply"``.
      forward: the pure forward function; hyper-parameters keyword-only with defaults.
      wrt: argument name -> ``mcjax.Derivative``.
      section: the paper section (a key of ``mcjax.registry.SECTIONS``).
      shapes: symbolic shapes per argument, e.g. ``{"W": ("m", "n"), "x": ("n",)}``; the
        dimension names are filled from ``mcjax._core._conventions.SHAPE_CASES``.
      sample: optional ``sample(rng, dims, dtype) -> args`` (``rng`` a NumPy ``Generator``)
        for rules whose arguments need a domain (positive, away from kinks, integer labels,
        pytrees).  The default draws every argument from a standard normal.  Verification
        points are drawn with NumPy: eager ``jax.random`` would compile once per shape.
      kinks: a description of where the rule is not differentiable ("" if nowhere).
      description: one line saying what the rule is.
      hessian: ``(a, b)`` argument-name pairs -> ``mcjax.Derivative`` of the second derivative
        $\\partial^2 f/\\partial a\\,\\partial b$ (shape ``a.shape + b.shape``) of a scalar rule.
      hyper: keyword arguments (hyper-parameters) this rule is *verified* with, passed
        explicitly to the forward function and the derivative by ``mcjax verify``, e.g.
        ``{"loss": "mse"}``: one function can back several rules.  ``mcjax.derivative`` does
        not apply them: it differentiates the function as called.
    """

    name: str
    forward: Callable[..., Any]
    wrt: Mapping[str, Derivative]
    section: str
    shapes: Mapping[str, tuple[str, ...]]
    sample: Sampler | None = None
    kinks: str = ""
    description: str = ""
    hyper: Mapping[str, Any] = field(default_factory=dict)
    arg_names: tuple[str, ...] = field(default=())
    hessian: Mapping[tuple[str, str], Derivative] = field(default_factory=dict)
    # one checked derivative per argument, made once: jax.jit caches compiled programs by
    # function identity, so a rule checked or jitted twice is compiled once
    _checked: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if self.section not in SECTIONS:
            raise ValueError(
                f"mcjax.registry.Rule {self.name!r}: section {self.section!r} is not one of "
                f"{', '.join(SECTIONS)}"
            )
        names = self.arg_names or tuple(self.shapes)
        object.__setattr__(self, "arg_names", names)
        unknown = [w for w in self.wrt if w not in names]
        if unknown:
            raise ValueError(
                f"mcjax.registry.Rule {self.name!r}: derivatives with respect to {unknown} but the "
                f"arguments are {list(names)}"
            )
        odd = [k for k in self.hessian if not (isinstance(k, tuple) and len(k) == 2
                                               and all(a in names for a in k))]
        if odd:
            raise ValueError(
                f"mcjax.registry.Rule {self.name!r}: second derivatives keyed {odd}; expected "
                f"pairs of the arguments {list(names)}, e.g. {(names[0], names[0])!r}"
            )

    def arg_index(self, wrt: str | int) -> int:
        """The position of argument ``wrt`` (a name or an index)."""
        if isinstance(wrt, int):
            return wrt
        return self.arg_names.index(wrt)

    def derivative(self, wrt: str | int) -> Callable[..., Any]:
        """The derivative with respect to ``wrt`` of the forward function *as called*.

        ``derivative(wrt)(*args, **kw)`` is the derivative of ``forward(*args, **kw)``: the
        keywords a call leaves out take the forward function's own defaults (never this
        rule's verification ``hyper``).  Integer arguments are refused.

        Returns a function of the forward function's positional arguments.
        """
        if isinstance(wrt, int):
            wrt = self.arg_names[wrt]
        if wrt in self._checked:
            return self._checked[wrt]
        if wrt not in self.wrt:
            raise KeyError(
                f"mcjax.derivative: rule {self.name!r} has no derivative with respect to "
                f"{wrt!r}; it has {list(self.wrt)}"
            )
        index = self.arg_index(wrt)
        fn = self.wrt[wrt].fn
        defaults = keyword_defaults(self.forward)

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            if index < len(args):
                for leaf in jax.tree_util.tree_leaves(args[index]):
                    require_floating(self.name, wrt, leaf)
            return fn(*args, **{**defaults, **kwargs})

        self._checked[wrt] = checked
        return checked

    def second_derivative(self, a: str, b: str) -> Callable[..., Any]:
        """The hand-derived second derivative $\\partial^2 f / \\partial a\\,\\partial b$ of the
        forward function *as called* (shape ``a.shape + b.shape``), with the checks of
        ``derivative``.

        Raises:
          KeyError: the rule has no second derivative for the pair (the message lists those
            it has).
        """
        key = ("second", a, b)
        if key in self._checked:
            return self._checked[key]
        if (a, b) not in self.hessian:
            raise KeyError(
                f"mcjax.registry: rule {self.name!r} has no second derivative with respect to "
                f"({a!r}, {b!r}); it has {list(self.hessian) or 'none'}"
            )
        indices, fn = (self.arg_index(a), self.arg_index(b)), self.hessian[a, b].fn
        defaults = keyword_defaults(self.forward)

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            for name, index in zip((a, b), indices):
                if index < len(args):
                    for leaf in jax.tree_util.tree_leaves(args[index]):
                        require_floating(self.name, name, leaf)
            return fn(*args, **{**defaults, **kwargs})

        self._checked[key] = checked
        return checked

    def __call__(self, *args, **kwargs):
        """The forward function with this rule's verification hyper-parameters (as
        ``mcjax verify`` checks it); call ``forward`` for the function as users call it."""
        return self.forward(*args, **{**self.hyper, **kwargs})

    def example(self, rng: np.random.Generator | int, dims: Mapping[str, int], dtype) -> tuple:
        """Random arguments for this rule with dimension sizes ``dims``, in ``dtype``.

        Args:
          rng: a NumPy ``Generator`` or a seed.
          dims: sizes of the symbolic dimensions, e.g. ``{"n": 3, "m": 4}``.
          dtype: the floating dtype of the arguments.
        """
        rng = np.random.default_rng(rng)
        if self.sample is not None:
            return tuple(self.sample(rng, dims, dtype))
        return tuple(
            normal(rng, tuple(dims[d] for d in dnames), dtype) for dnames in self.shapes.values()
        )


class Registry:
    """An ordered collection of rules, addressed by name.

    mcjax has one default registry (``mcjax.registry.REGISTRY``), filled by the modules under
    ``mcjax.rules``; tests make their own to hold deliberately wrong rules.
    """

    def __init__(self):
        self._rules: dict[str, Rule] = {}
        self._by_forward: dict[Callable, Rule] = {}

    def register(self, rule: Rule) -> Rule:
        """Add ``rule``; its name must be new. Returns the rule."""
        if rule.name in self._rules:
            raise ValueError(f"mcjax.register: a rule named {rule.name!r} is already registered")
        self._rules[rule.name] = rule
        self._by_forward.setdefault(rule.forward, rule)
        return rule

    def get(self, name_or_forward: str | Callable) -> Rule:
        """The rule with this name, or whose forward function this is.

        Raises:
          KeyError: no such rule (the message suggests close names).
        """
        if callable(name_or_forward) and not isinstance(name_or_forward, str):
            try:
                return self._by_forward[name_or_forward]
            except KeyError:
                raise KeyError(
                    f"mcjax.get: {getattr(name_or_forward, '__name__', name_or_forward)!r} "
                    "is not the forward function of a registered rule"
                ) from None
        try:
            return self._rules[name_or_forward]
        except KeyError:
            close = difflib.get_close_matches(name_or_forward, list(self._rules), n=5)
            hint = f"; did you mean {', '.join(close[:5])}?" if close else ""
            raise KeyError(f"mcjax.get: no rule named {name_or_forward!r}{hint}") from None

    def select(self, pattern: str = "*") -> list[Rule]:
        """The rules whose names match the glob ``pattern`` (``*`` for all)."""
        return [r for n, r in self._rules.items() if fnmatch.fnmatchcase(n, pattern)]

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules.values())

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, name: str) -> bool:
        return name in self._rules


REGISTRY = Registry()
"""The default registry that ``mcjax.rules`` fills and ``mcjax verify`` checks."""


def keyword_defaults(fn: Callable) -> dict[str, Any]:
    """The keyword-only parameters of ``fn`` that have defaults, with those defaults."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return {}
    return {p.name: p.default for p in parameters
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty}


def parse_shapes(spec: str) -> dict[str, tuple[str, ...]]:
    """``"W: m n, x: n, b: m"`` -> ``{"W": ("m", "n"), "x": ("n",), "b": ("m",)}``.

    A scalar argument has no dimensions (``"z:"``); a pytree argument is written ``*``.
    """
    shapes: dict[str, tuple[str, ...]] = {}
    for part in spec.split(","):
        name, _, dims = part.partition(":")
        shapes[name.strip()] = tuple(dims.split())
    return shapes


F = TypeVar("F", bound=Callable[..., Any])  # a forward function, returned unchanged


def rule(
    name: str,
    *,
    section: str,
    shapes: str,
    wrt: Mapping[str, Derivative],
    sample: Sampler | None = None,
    kinks: str = "",
    hyper: Mapping[str, Any] | None = None,
    hessian: Mapping[tuple[str, str], Derivative] | None = None,
    registry: Registry | None = None,
) -> Callable[[F], F]:
    """Register the decorated forward function as rule ``name``; return it unchanged.

    Args:
      name: unique rule name.
      section: the paper section (a key of ``mcjax.registry.SECTIONS``).
      shapes: symbolic argument shapes, see ``parse_shapes``.
      wrt: argument name -> ``mcjax.Derivative``.
      sample: optional argument sampler, see ``mcjax.registry.Rule``.
      kinks: where the function is not differentiable.
      hyper: keyword arguments this rule fixes (see ``mcjax.registry.Rule``).
      hessian: ``(a, b)`` -> ``mcjax.Derivative`` of a second derivative (scalar rules; see
        ``mcjax.registry.Rule``).
      registry: where to register (default: ``mcjax.registry.REGISTRY``).
    """

    def decorate(forward: F) -> F:
        doc = inspect.getdoc(forward) or ""
        (REGISTRY if registry is None else registry).register(
            Rule(
                name=name,
                forward=forward,
                wrt=dict(wrt),
                section=section,
                shapes=parse_shapes(shapes),
                sample=sample,
                kinks=kinks,
                hyper=dict(hyper or {}),
                hessian=dict(hessian or {}),
                description=doc.splitlines()[0] if doc else "",
            )
        )
        return forward

    return decorate


def derivative(f: str | Callable[..., Any], wrt: str | int = 0, *,
               registry: Registry | None = None) -> Callable[..., Any]:
    """The hand-derived derivative of a registered function with respect to one argument.

    Args:
      f: a registered forward function (``mcjax.relu``) or a rule name (``"relu"``).
      wrt: the argument, by name (``"W"``) or position.
      registry: where to look (default: the registry ``mcjax.rules`` fills).

    Returns:
      A function of ``f``'s positional arguments returning the derivative in numerator layout
      (usually a structured ``mcjax.Jacobian``; call ``.dense()`` for the array).

    Raises:
      KeyError: ``f`` is not registered, or has no derivative with respect to ``wrt``.
      DtypeError: (when called) the argument ``wrt`` is not floating point.

    Example:

        >>> J = mcjax.derivative(mcjax.relu, "x")(jnp.array([-1.0, 2.0]))
        >>> J.dense()  # diag(relu'(x))
        Array([[0., 0.],
               [0., 1.]], dtype=float32)
    """
    return (REGISTRY if registry is None else registry).get(f).derivative(wrt)


# -- samplers shared by rule families -------------------------------------------------------
def as_array(values, dtype) -> jax.Array:
    """A NumPy array as a JAX array of ``dtype``, cast by NumPy and put on the device as it is:
    a cast on the device, or ``jnp.asarray`` (which stages the copy), compiles a little
    program per shape."""
    return jax.device_put(np.asarray(values).astype(np.dtype(dtype)))


def normal(rng: np.random.Generator, shape: Sequence[int], dtype: DTypeLike,
           scale: float = 1.0) -> jax.Array:
    """Standard normal samples (times ``scale``) as a JAX array of ``dtype``."""
    return as_array(scale * rng.standard_normal(shape), dtype)


def away_from_zero(rng: np.random.Generator, shape: Sequence[int], dtype: DTypeLike,
                   margin: float = 4 * KINK_MARGIN) -> jax.Array:
    """Normal samples pushed at least ``margin`` away from 0 (kinks of relu, abs, ...)."""
    return as_array(away_from_zero_numpy(rng, shape, margin), dtype)


def away_from_zero_numpy(rng: np.random.Generator, shape, margin: float = 4 * KINK_MARGIN):
    """``mcjax.registry.away_from_zero`` as a float64 NumPy array, for samplers that compute with it
    first (a float64 JAX array would need ``jax_enable_x64``)."""
    z = rng.standard_normal(shape)
    return np.where(z >= 0, z + margin, z - margin)
