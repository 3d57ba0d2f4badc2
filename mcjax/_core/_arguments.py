"""The arguments of mcjax's public functions, validated: one sentence per mistake.

``mcjax.check``, ``mcjax.derive`` and their command lines take the same kinds of argument (a
function, ``argnums`` as ``jax.grad`` takes it, counts, a seed, tolerances); each mistake is
a ``TypeError`` (wrong kind) or ``ValueError`` (out of range) whose message names the
function, the argument, what was expected and what arrived, e.g.
``mcjax.check: points=0; expected an int >= 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def describe(value) -> str:
    """What arrived, in words: ``a jax.Array of shape (3,)``, ``a str``, ``None``."""
    if value is None:
        return "None"
    shape = getattr(value, "shape", None)
    kind = ("a jax.Array" if isinstance(value, jax.Array) else "a NumPy array"
            if isinstance(value, np.ndarray) else f"{_article(type(value).__name__)}")
    return f"{kind} of shape {tuple(shape)}" if shape is not None else kind


def _article(name: str) -> str:
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def require_callable(function: str, what: str, fn, due: str) -> None:
    """Raise ``TypeError`` unless ``fn`` is callable (``due``: what was expected instead)."""
    if not callable(fn):
        raise TypeError(f"mcjax.{function}: {what} is {describe(fn)}, not a function; "
                        f"expected {due}")


def is_int(value) -> bool:
    """An int that is not a bool (``True`` is an int to Python, never a count to a person)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def argnums_spec(function: str, argnums) -> int | tuple[int, ...]:
    """``argnums`` as ``jax.grad`` takes it: an int, or a non-empty tuple (or list) of distinct
    ints; returned as an int or a tuple.  The range is checked when the arguments arrive
    (``positions``)."""
    if is_int(argnums):
        return int(argnums)
    if isinstance(argnums, (tuple, list)) and argnums and all(is_int(i) for i in argnums):
        spec = tuple(int(i) for i in argnums)
        if len(set(spec)) == len(spec):
            return spec
        raise ValueError(f"mcjax.{function}: argnums={argnums!r} names an argument twice; "
                         "expected distinct ints")
    raise TypeError(f"mcjax.{function}: argnums={argnums!r}; expected an int or a non-empty "
                    "tuple of ints, as jax.grad takes it")


def positions(function: str, argnums: int | Sequence[int], count: int) -> tuple[int, ...]:
    """The argument positions ``argnums`` names among ``count`` arguments (negative ones count
    from the end, as in ``jax.grad``)."""
    wanted = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not count:
        raise ValueError(f"mcjax.{function}: argnums={argnums!r} but f gets no arguments; "
                         "expected at least the argument to differentiate")
    if not all(-count <= i < count for i in wanted):
        kind = "an int" if isinstance(argnums, int) else "ints"
        raise ValueError(f"mcjax.{function}: argnums={argnums!r} but f gets {count} "
                         f"argument(s); expected {kind} in [0, {count})")
    found = tuple(i % count for i in wanted)
    if len(set(found)) != len(found):
        raise ValueError(f"mcjax.{function}: argnums={argnums!r} names an argument twice "
                         f"among {count}; expected distinct arguments")
    return found


def count(function: str, name: str, value, minimum: int = 1) -> int:
    """An int of at least ``minimum`` (a number of points, directions, a seed)."""
    if not is_int(value) or value < minimum:
        raise (ValueError if is_int(value) else TypeError)(
            f"mcjax.{function}: {name}={value!r}; expected an int >= {minimum}")
    return int(value)


def flag(function: str, name: str, value) -> bool:
    """``True`` or ``False`` (a string ``"no"`` is truthy to Python, so it is refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"mcjax.{function}: {name}={value!r}; expected True or False")
    return bool(value)


def tolerance(function: str, name: str, value) -> float | None:
    """``None`` (the policy's) or a finite number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"mcjax.{function}: {name}={value!r}; expected None (the tolerance "
                        "policy's) or a number >= 0")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"mcjax.{function}: {name}={value!r}; expected a finite number >= 0")
    return float(value)


def numbers_as_array(arg):
    """A Python list of numbers as an array (to JAX a list is a pytree of Python scalars, which
    ``jnp.sin`` refuses); anything else unchanged."""
    if isinstance(arg, list):
        leaves = jax.tree_util.tree_leaves(arg)
        if leaves and all(isinstance(v, (bool, int, float)) for v in leaves):
            try:
                return jnp.asarray(np.asarray(arg))
            except ValueError:  # ragged: leave it to f
                return arg
    return arg
