"""The hypothesis strategies of ``mcjax.testing`` (see there): sizes for symbolic
dimensions, then values, for a registered rule or for arrays of given symbolic shapes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np

from mcjax._core._conventions import SHAPE_CASES
from mcjax._registry import REGISTRY, Registry, Rule, parse_shapes

if TYPE_CHECKING:  # hypothesis is optional: imported when a strategy is made
    import jax
    from hypothesis.strategies import SearchStrategy

MIN_SIZES: dict[str, int] = {name: min(case[name] for case in SHAPE_CASES)
                             for name in SHAPE_CASES[0]}
"""The smallest size of each conventional dimension (``k``, the number of classes, is 2: a
one-class softmax is constant); any other dimension starts at 1."""


def _hypothesis():
    try:
        import hypothesis.extra.numpy as hnp
        import hypothesis.strategies as st
    except ImportError as error:
        raise ImportError(
            "mcjax.testing draws examples with hypothesis, which is not installed; "
            "install it with `pip install hypothesis` (or mcjax's test extra, "
            "`pip install 'mcjax[test]'`)") from error
    return st, hnp


def dimensions(names: Iterable[str], *, max_size: int = 4,
               fixed: Mapping[str, int] | None = None) -> SearchStrategy[dict[str, int]]:
    """A strategy of ``{name: size}`` for symbolic dimension names.

    Args:
      names: dimension names, e.g. ``("m", "n")``; repeats are drawn once.  A name made of
        digits (``"3"``) is that size.
      max_size: the largest size drawn.
      fixed: sizes not to draw, e.g. ``{"k": 10}``.

    Returns:
      A hypothesis strategy of dicts; each size independently from
      ``mcjax.testing.MIN_SIZES`` (else 1) to ``max_size``.
    """
    st, _ = _hypothesis()
    fixed = dict(fixed or {})
    sizes = {}
    for name in dict.fromkeys(names):
        if name in fixed or name.isdigit():
            sizes[name] = st.just(int(fixed.get(name, name)))
        else:
            low = MIN_SIZES.get(name, 1)
            sizes[name] = st.integers(low, max(low, max_size))
    return st.fixed_dictionaries(sizes)


def _dtypes(dtype):
    st, _ = _hypothesis()
    return dtype if isinstance(dtype, st.SearchStrategy) else st.just(jnp.dtype(dtype))


def rule_arguments(rule: str | Callable | Rule, *, dtype: Any = "float32", max_size: int = 4,
                   fixed: Mapping[str, int] | None = None, registry: Registry | None = None
                   ) -> SearchStrategy[tuple[Any, ...]]:
    """A strategy of valid positional arguments for a registered rule.

    Sizes are drawn for the rule's symbolic shapes (``Rule.shapes``) and for the
    conventional dimensions its sampler may use (``n``, ``m``, ``B``, ``k``); the values come
    from the rule's own sampler (``mcjax.registry.Rule.example``) with a seed hypothesis draws, so
    they keep to the rule's domain.

    Args:
      rule: a rule name (``"affine"``), its forward function (``mcjax.affine``) or a
        ``mcjax.registry.Rule``.
      dtype: the floating dtype of the arguments, or a strategy of dtypes.
      max_size: the largest size of a dimension.
      fixed: sizes not to draw, e.g. ``{"n": 1}``.
      registry: where to look the rule up (default: mcjax's registry).

    Returns:
      A hypothesis strategy of tuples, the rule's arguments in order: ``rule(*args)`` runs.

    Raises:
      KeyError: no such rule.
      ImportError: hypothesis is not installed.
    """
    st, _ = _hypothesis()
    if not isinstance(rule, Rule):
        rule = (REGISTRY if registry is None else registry).get(rule)
    names = [d for dims in rule.shapes.values() for d in dims if d != "*"] + list(MIN_SIZES)
    return st.builds(lambda sizes, seed, dt: rule.example(seed, sizes, dt),
                     dimensions(names, max_size=max_size, fixed=fixed),
                     st.integers(0, 2**32 - 1), _dtypes(dtype))


def shaped_arrays(shapes: str | Mapping[str, Iterable[str]], *, dtype: Any = "float32",
                  max_size: int = 4, fixed: Mapping[str, int] | None = None,
                  elements: SearchStrategy[float] | None = None
                  ) -> SearchStrategy[tuple[jax.Array, ...]]:
    """A strategy of arrays with the given symbolic shapes, sizes shared between them.

    Args:
      shapes: ``"W: m n, x: n, b: m"`` (as ``mcjax.rule`` takes them; ``"z:"`` is a
        scalar) or ``{"W": ("m", "n"), ...}``.
      dtype: the floating dtype of the arrays, or a strategy of dtypes.
      max_size: the largest size of a dimension.
      fixed: sizes not to draw, e.g. ``{"n": 1}``.
      elements: a strategy of the entries (Python floats, cast to ``dtype``); default
        finite floats in [-4, 4].  hypothesis likes 0.0: pass a strategy that keeps away
        from your function's kinks.

    Returns:
      A hypothesis strategy of tuples of JAX arrays, one per named argument, in order.

    Raises:
      ValueError: a shape is a pytree (``*``); draw those with ``mcjax.testing.rule_arguments``.
      ImportError: hypothesis is not installed.
    """
    st, hnp = _hypothesis()
    spec = parse_shapes(shapes) if isinstance(shapes, str) else {k: tuple(v)
                                                                   for k, v in shapes.items()}
    pytrees = [name for name, dims in spec.items() if "*" in dims]
    if pytrees:
        raise ValueError(f"mcjax.testing.shaped_arrays: {', '.join(pytrees)} is a pytree "
                         "(*); draw a rule's pytree arguments with rule_arguments")

    entries = elements if elements is not None else st.floats(
        -4, 4, allow_nan=False, allow_infinity=False, allow_subnormal=False)

    def draw(sizes_and_dtype):
        sizes, dt = sizes_and_dtype
        # drawn in float64, then cast: an element strategy need not fit the dtype exactly
        arrays = st.tuples(*(hnp.arrays(np.float64, tuple(sizes[d] for d in dims),
                                        elements=entries) for dims in spec.values()))
        return arrays.map(lambda drawn: tuple(jnp.asarray(a, dtype=dt) for a in drawn))

    names = [d for dims in spec.values() for d in dims]
    return st.tuples(dimensions(names, max_size=max_size, fixed=fixed),
                     _dtypes(dtype)).flatmap(draw)
