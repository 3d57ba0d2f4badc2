"""Compiled epochs, kept for the next :func:`mcjax.train` call with the same settings.

``train`` compiles its epoch ahead of time (to report the compile time apart from the
training time); jax's own jit cache does not cover ahead-of-time compilation, and every call
builds a new loss and optimizer, so without this a second ``train`` with the same model and
settings (another seed, a resumed run, a notebook cell run again) would compile again.  The
key is what decides the program: the model object, the gradient source, the optimizer's
name and hyper-parameters (or the optimizer object), the batch size, shuffling, and the
shapes, dtypes and shardings of the arguments.  It holds a few entries, least recently used
out first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import jax

MAX_ENTRIES = 8
_ENTRIES: OrderedDict[Hashable, tuple[Any, tuple]] = OrderedDict()


def optimizer_key(optimizer, learning_rate, options) -> tuple[Hashable, tuple]:
    """A hashable stand-in for an optimizer setting, and the objects it names by identity
    (kept alive with the entry, so that their ids cannot be reused)."""
    if not isinstance(optimizer, str):
        return ("object", id(optimizer)), (optimizer,)
    keep: list = []
    rate = learning_rate if isinstance(learning_rate, (int, float)) else id(learning_rate)
    if not isinstance(learning_rate, (int, float)):
        keep.append(learning_rate)
    described = []
    for name, value in sorted((options or {}).items()):
        try:
            hash(value)
            described.append((name, type(value).__name__, value))
        except TypeError:
            described.append((name, "id", id(value)))
            keep.append(value)
    return ("name", optimizer, rate, tuple(described)), tuple(keep)


def _signature(args) -> tuple:
    leaves, treedef = jax.tree.flatten(args)
    return treedef, tuple(
        (a.shape, a.dtype, getattr(a, "weak_type", False), getattr(a, "sharding", None))
        for a in leaves
    )


def compiled_epoch(key: tuple, keep: tuple, make: Callable[[], Callable], args) -> Callable:
    """The compiled ``make()(*args)``, from the cache when ``key`` and the arguments match."""
    full = (key, _signature(args))
    if full in _ENTRIES:
        _ENTRIES.move_to_end(full)
        return _ENTRIES[full][0]
    compiled = make().lower(*args).compile()
    _ENTRIES[full] = (compiled, keep)
    while len(_ENTRIES) > MAX_ENTRIES:
        _ENTRIES.popitem(last=False)
    return compiled
