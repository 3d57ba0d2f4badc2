"""JSON descriptions of a run's settings, and the differences between two of them.

A checkpoint folder records what its run was made of (see ``_run_folder``), so that a resumed
run can be refused when anything differs.  Optimizers and schedules are closures (optax builds
``adam(1e-3)`` as a chain of functions that close over ``b1``, ``b2``, ``eps`` and the learning
rate), so :func:`describe` reads them the way Python holds them: a function becomes its name,
its closure's variables by name and its default arguments; containers, named tuples, NumPy and
JAX arrays (a digest when large) follow.  Two optimizers with any hyper-parameter apart, or a
schedule with another ``init_value``, describe differently (a function's description also
holds the module constants it reads, such as a loss's ``DELTA``), and :func:`differences` names the
path of each difference (``optimizer.learning_rate.init_value: 0.01 there, 100.0 now``).
Nothing is described by ``repr`` (it may hold a memory address, different in every process).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from mcjax._program._trace import digest

MAX_DEPTH = 12
SMALL_ARRAY = 16  # arrays up to this many elements are described by their values


def _number(x):
    x = x.item() if isinstance(x, np.generic) else x
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)  # JSON has no nan or inf
    return x


def _array(value) -> Any:
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):  # pyright: ignore[reportPrivateImportUsage]
        value = jax.random.key_data(value)
    array = np.asarray(value)
    if array.dtype.kind not in "biufc":  # e.g. a PRNG key's bits or bfloat16: keep the bits
        array = array.view(f"uint{8 * array.dtype.itemsize}") if array.dtype.itemsize else array
    if array.size <= SMALL_ARRAY and array.dtype.kind in "biuf":
        values = [_number(v) for v in array.ravel().tolist()]
        return {"array": values, "shape": list(array.shape), "dtype": np.asarray(value).dtype.name}
    return {"shape": list(array.shape), "dtype": np.asarray(value).dtype.name,
            "digest": digest(array)}


def _settings(value) -> bool:
    """A module-level value that reads as a setting (a number, a string, an array)."""
    return isinstance(value, (bool, int, float, str, np.generic, np.ndarray, jax.Array))


def _function(fn, depth: int, seen: set) -> dict:
    out: dict[str, Any] = {"function": f"{getattr(fn, '__module__', '?')}."
                                       f"{getattr(fn, '__qualname__', type(fn).__name__)}"}
    code = getattr(fn, "__code__", None)
    # the module constants it reads (a loss's DELTA or EPS), as well as what it closes over
    names = getattr(fn, "__globals__", {})
    for name in code.co_names if code else ():
        if name in names and _settings(names[name]):
            out[f"global {name}"] = describe(names[name], depth + 1, seen)
    for name, cell in zip(code.co_freevars if code else (), getattr(fn, "__closure__", None) or ()):
        try:
            out[name] = describe(cell.cell_contents, depth + 1, seen)
        except ValueError:  # an empty cell: a variable assigned after the function was made
            out[name] = None
    for name, value in (getattr(fn, "__kwdefaults__", None) or {}).items():
        out[name] = describe(value, depth + 1, seen)
    if code is not None and getattr(fn, "__defaults__", None):
        names = code.co_varnames[: code.co_argcount][-len(fn.__defaults__):]
        for name, value in zip(names, fn.__defaults__):
            out[name] = describe(value, depth + 1, seen)
    return out


def describe(value, depth: int = 0, seen: set | None = None) -> Any:
    """A JSON-serialisable description of ``value`` that differs when its settings differ.

    Args:
      value: a setting: a number, a string, an optax transformation or schedule, a function
        and what it closes over, a container of those, an array.

    Returns:
      Plain JSON values (dicts, lists, numbers, strings, None).
    """
    seen = set() if seen is None else seen
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float, np.generic)):
        return _number(value)
    if depth > MAX_DEPTH:
        return f"<{type(value).__name__} nested too deep>"
    if id(value) in seen:
        return f"<{type(value).__name__} seen above>"
    seen = seen | {id(value)}
    if isinstance(value, np.dtype) or inspect.isclass(value):
        return getattr(value, "name", None) or f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, (np.ndarray, jax.Array)):
        return _array(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple (optax's style)
        return {"type": type(value).__qualname__,
                **{f: describe(getattr(value, f), depth + 1, seen) for f in getattr(value, "_fields")}}
    if isinstance(value, (list, tuple)):
        return [describe(v, depth + 1, seen) for v in value]
    if isinstance(value, Mapping):
        return {str(k): describe(v, depth + 1, seen) for k, v in sorted(value.items(), key=str)}
    if isinstance(value, functools.partial):
        return {"partial": describe(value.func, depth + 1, seen),
                "args": describe(value.args, depth + 1, seen),
                "keywords": describe(value.keywords, depth + 1, seen)}
    wrapped = getattr(value, "__wrapped__", None)  # jax.jit, functools.wraps
    if wrapped is not None and callable(wrapped):
        return describe(wrapped, depth + 1, seen)
    if callable(value):
        return _function(value, depth, seen)
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def as_json(value) -> Any:
    """``value`` after a round trip through JSON (tuples become lists), as stored on disk."""
    return json.loads(json.dumps(value))


def _flatten(value, prefix: str, out: dict) -> dict:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value and not all(
            isinstance(v, (int, float, str, bool)) or v is None for v in value):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}.{i}" if prefix else str(i), out)
    else:
        out[prefix] = value
    return out


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def differences(there: Mapping, now: Mapping) -> list[str]:
    """Every path at which two descriptions differ, as ``path: X there, Y now``."""
    a, b = _flatten(as_json(there), "", {}), _flatten(as_json(now), "", {})
    found = []
    for path in sorted(set(a) | set(b)):
        if path not in a:
            found.append(f"{path}: absent there, {_short(b[path])} now")
        elif path not in b:
            found.append(f"{path}: {_short(a[path])} there, absent now")
        elif a[path] != b[path]:
            found.append(f"{path}: {_short(a[path])} there, {_short(b[path])} now")
    return found
