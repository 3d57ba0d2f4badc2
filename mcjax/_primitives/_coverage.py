"""What the installed JAX can differentiate, against the table: the coverage the tests assert
and the docs print."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from mcjax._primitives._table import TABLE, Primitive

# the custom-rule primitives carry their rule in their parameters: JAX lists no JVP for them
_CUSTOM_RULES = ("custom_jvp_call", "custom_vjp_call")


# the modules that register primitives of their own (importing one fills JAX's tables)
_MODULES = ("jax.numpy", "jax.scipy.special", "jax.scipy.linalg", "jax.nn", "jax.random",
            "jax.experimental.sparse", "jax.experimental.pallas", "jax.experimental.checkify",
            "jax.experimental.multihost_utils", "jax.experimental.compute_on",
            "jax.experimental.shard_alike", "jax.experimental.mpmd",
            "jax.experimental.buffer_callback", "jax.experimental.xla_metadata",
            "jax.experimental.fused")


def differentiable_primitives() -> list[str]:
    """The names of every primitive the installed JAX has a JVP rule for (its own table,
    ``ad.primitive_jvps``, after importing every module of JAX that registers primitives),
    plus the custom-rule calls."""
    import importlib

    from jax._src.interpreters import ad  # the one place JAX keeps its table

    for module in _MODULES:
        try:
            importlib.import_module(module)
        except ImportError:  # not in this JAX: its primitives are not either
            pass
    return sorted({p.name for p, rule in ad.primitive_jvps.items() if _from_jax(rule)}
                  | set(_CUSTOM_RULES))


def _from_jax(rule) -> bool:
    """Whether a JVP rule is JAX's own: a library imported in the same process (Equinox,
    lineax, Flax) registers primitives of its own in the same table."""
    while isinstance(getattr(rule, "func", None), Callable):  # functools.partial
        rule = rule.func
    module = getattr(rule, "__module__", None) or ""
    return not module or module.split(".")[0] in ("jax", "jaxlib")


class Row(NamedTuple):
    name: str
    entry: Primitive | None


def coverage() -> list[Row]:
    """One row per primitive the installed JAX can differentiate, with the table's entry (None:
    missing, a failure of ``tests/test_primitives.py``)."""
    return [Row(name, TABLE.get(name)) for name in differentiable_primitives()]
