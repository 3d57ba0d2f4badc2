"""Compiling programs: one set of XLA options, and a bounded cache of compiled programs.

- :func:`compiler_options` and :func:`quick_jit`: the XLA options of programs that run once
  (a check, a derivation in a test), where compile time is what counts;
- :func:`run_compiled` runs ``fn(static, *args)`` from a compiled program kept in
  :data:`PROGRAMS`, a least-recently-used cache keyed on ``static`` (whose functions are
  :class:`~mcjax._program._trace.Keyed`: known by their traced program, never by identity),
  the arguments' shapes, dtypes and shardings, the options and JAX's numerics settings.  A
  later call whose functions trace to the same program compiles nothing; an edited one
  compiles anew.  The cache holds at most :func:`program_cache_size` programs (default 32,
  ``$MCJAX_COMPILED_PROGRAMS``, :func:`mcjax.compilation.set_program_cache_size`); an
  evicted program is released (XLA frees its code once nothing refers to it: each program is
  compiled from its own ``jax.jit`` object, which JAX's own caches hold only weakly);
- :func:`compile_keyed` compiles a function for given arguments through the same cache,
  keyed by its traced program.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import jax
import numpy as np
from jax.extend import core

from mcjax._program._trace import function_key


@functools.cache
def compiler_options() -> dict:
    """XLA options for programs that run once on small arrays: compile time is what counts.

    ``xla_backend_optimization_level=0`` skips LLVM's optimisations; on a CPU the classic
    elemental emitters (``xla_cpu_use_fusion_emitters=False``) compile a full-mode check 2-3x
    faster than the fusion emitters, and one LLVM module per program
    (``xla_cpu_parallel_codegen_split_count=1``) another 25-35%; the values are bitwise the
    same (measured with jax 0.10 on the registry's rules).  An option a jaxlib does not know
    is left out.
    """
    options = {"xla_backend_optimization_level": 0}
    for name, value in (("xla_cpu_use_fusion_emitters", False),
                        ("xla_cpu_parallel_codegen_split_count", 1)):
        trial = {**options, name: value}
        try:
            jax.jit(lambda x: x + 1).lower(np.float32(0)).compile(trial)
        except Exception as e:  # noqa: BLE001 - jaxlib raises its own runtime error type
            if "option" not in str(e):
                raise
            continue
        options = trial
    return options


def quick_jit(fn, **kwargs):
    """``jax.jit`` with :func:`compiler_options`, for a program that runs once."""
    return jax.jit(fn, compiler_options=compiler_options(), **kwargs)


# -- the cache of compiled programs ---------------------------------------------------------
_DEFAULT_SIZE = 32


def _size_from_environment() -> int:
    text = os.environ.get("MCJAX_COMPILED_PROGRAMS", "")
    if not text:
        return _DEFAULT_SIZE
    try:
        size = int(text)
    except ValueError:
        size = -1
    if size < 1:
        raise ValueError(f"mcjax: MCJAX_COMPILED_PROGRAMS={text!r}; expected a whole number "
                         "of compiled programs to keep, at least 1")
    return size


class Programs:
    """A least-recently-used cache of compiled programs, at most ``size`` of them."""

    def __init__(self, size: int):
        self.size = size
        self._programs: OrderedDict[Hashable, Callable[..., Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.compiled = 0  # programs compiled (misses), for tests and benchmarks

    def __len__(self) -> int:
        return len(self._programs)

    def get(self, key: Hashable, build: Callable[[], Callable[..., Any]]) -> Any:
        with self._lock:
            program = self._programs.get(key)
            if program is not None:
                self._programs.move_to_end(key)
                return program
        program = build()
        with self._lock:
            self.compiled += 1
            self._programs[key] = program
            self._programs.move_to_end(key)
            while len(self._programs) > self.size:
                self._programs.popitem(last=False)
        return program

    def resize(self, size: int) -> None:
        with self._lock:
            self.size = size
            while len(self._programs) > size:
                self._programs.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._programs.clear()


PROGRAMS = Programs(_size_from_environment())


def program_cache_size() -> int:
    """How many compiled programs mcjax keeps (least recently used first out)."""
    return PROGRAMS.size


def set_program_cache_size(size: int) -> None:
    """Keep at most ``size`` compiled programs (checks, training epochs) in this process.

    Each compiled program holds its machine code (on a CPU about 1-3 MB for a check); the
    least recently used one is released when a new one would exceed ``size``.  The default
    is 32, or ``$MCJAX_COMPILED_PROGRAMS`` when set.  A program evicted and needed again is
    compiled again (or loaded from JAX's persistent cache, see
    :func:`mcjax.compilation.enable_compilation_cache`).
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"mcjax.compilation.set_program_cache_size: size={size!r}; expected "
                         "a whole number of compiled programs to keep, at least 1")
    PROGRAMS.resize(int(size))


def _cache_key(value) -> Hashable:
    """``value`` as a cache key: a function known by its traced program
    (:meth:`~mcjax._program._trace.Keyed.cache_key`) keeps its key alone, not the user's
    function or the arrays it closes over."""
    if hasattr(value, "cache_key"):
        return value.cache_key()
    if isinstance(value, tuple):
        return (type(value), tuple(_cache_key(v) for v in value))
    return value


def _leaf_key(a) -> Hashable:
    if isinstance(a, (bool, int, float, complex)):  # a Python scalar: weakly typed in JAX
        return type(a)
    if not hasattr(a, "dtype"):  # a list of numbers, say: as NumPy reads it
        a = np.asarray(a)
    placed = isinstance(a, (jax.Array, jax.ShapeDtypeStruct))
    return (tuple(a.shape), str(a.dtype), bool(getattr(a, "weak_type", False)),
            a.sharding if placed else None)


def _argument_key(args) -> Hashable:
    leaves, tree = jax.tree_util.tree_flatten(args)
    return tree, tuple(_leaf_key(a) for a in leaves)


NUMERICS = ("jax_enable_x64", "jax_numpy_dtype_promotion", "jax_default_matmul_precision",
            "jax_numpy_rank_promotion")
"""The JAX settings a traced program depends on beyond its arguments."""


def _numerics() -> tuple:
    return tuple(getattr(jax.config, name) for name in NUMERICS)


def run_compiled(fn: Callable, static, *args, compiler_options: dict | None = None,
                 donate_argnums: tuple[int, ...] = (), out_shardings=None,
                 call: bool = True, forward_inputs: bool = False) -> Any:
    """``fn(static, *args)``, from a compiled program in :data:`PROGRAMS`.

    ``static`` (hashable: functions in it are :class:`~mcjax._program._trace.Keyed`) is
    compiled into the program; ``args`` (pytrees of arrays) are its inputs.  With
    ``call=False`` the compiled program itself is returned, called as ``program(*args)``.
    With ``forward_inputs``, an output that is one of the inputs as it came (a structured
    result holding the caller's data matrix) is handed back as the caller's own array instead
    of a copy: XLA writes every output of a program into a buffer of its own.
    """
    if forward_inputs and donate_argnums:  # a forwarded input is the caller's, still in use
        raise ValueError("run_compiled: forward_inputs and donate_argnums exclude each other")
    options = compiler_options or {}
    key = (_cache_key(fn), _cache_key(static), _argument_key(args), tuple(sorted(options.items())),
           tuple(donate_argnums), out_shardings, _numerics(), forward_inputs)

    def build():
        def program(*a):
            return fn(static, *a)

        placement = {} if out_shardings is None else {"out_shardings": out_shardings}
        if forward_inputs:
            return _Forwarding.build(program, args, options, placement)
        return jax.jit(program, donate_argnums=tuple(donate_argnums),
                       compiler_options=options or None, **placement).lower(*args).compile()

    compiled = PROGRAMS.get(key, build)
    return compiled(*args) if call else compiled


class _Forwarding:
    """A compiled program whose outputs that are inputs (the same variable of the traced
    program) are not computed: :meth:`__call__` puts the caller's arrays there."""

    def __init__(self, compiled, forwarded: list, out_tree):
        self.compiled, self.forwarded, self.out_tree = compiled, forwarded, out_tree

    @classmethod
    def build(cls, program: Callable, args: tuple, options: dict, placement: dict):
        closed, out_shape = jax.make_jaxpr(program, return_shape=True)(*args)
        jaxpr = closed.jaxpr
        position = {id(v): k for k, v in enumerate(jaxpr.invars)}
        forwarded = [position.get(id(v)) for v in jaxpr.outvars]
        kept = [v for v, k in zip(jaxpr.outvars, forwarded) if k is None]
        pruned = core.ClosedJaxpr(jaxpr.replace(outvars=kept), closed.consts)
        flat = jax.tree_util.tree_leaves(args)
        compiled = jax.jit(core.jaxpr_as_fun(pruned), compiler_options=options or None,
                           **placement).lower(*flat).compile()
        return cls(compiled, forwarded, jax.tree_util.tree_structure(out_shape))

    def __call__(self, *args):
        flat = jax.tree_util.tree_leaves(args)
        computed = iter(self.compiled(*flat))
        outs = [next(computed) if k is None else
                flat[k] if isinstance(flat[k], jax.Array) else jax.numpy.asarray(flat[k])
                for k in self.forwarded]
        return jax.tree_util.tree_unflatten(self.out_tree, outs)


def compile_keyed(fn: Callable, *args, donate_argnums: tuple[int, ...] = (),
                  compiler_options: dict | None = None, out_shardings=None):
    """``fn`` compiled for ``args``, reusing a compiled program only for the same traced program.

    ``fn`` is traced afresh (:func:`~mcjax._program._trace.fresh_jaxpr`, never a trace cached
    on its identity) and keyed by :func:`~mcjax._program._trace.function_key` (the program,
    the values it closes over and its output's tree structure); :data:`PROGRAMS`, keyed on
    that and on the arguments' shapes, dtypes and shardings, the donated arguments,
    ``compiler_options`` and ``out_shardings``, answers a repeat call without compiling.

    Args:
      fn: a function of ``args`` (arrays, pytrees of arrays).
      *args: example arguments (arrays or ``jax.ShapeDtypeStruct``s, with their shardings).
      donate_argnums: which of ``args`` the program may update in place.
      compiler_options: XLA options (e.g. ``{"xla_cpu_copy_insertion_use_region_analysis":
        True}``).
      out_shardings: the outputs' shardings (default: what XLA chooses).

    Returns:
      A ``jax.stages.Compiled``, called as ``compiled(*args)``.
    """
    key = function_key(fn, *args, differentiated=False).key  # the program and its output tree
    return run_compiled(_Called(fn, key), None, *args, compiler_options=compiler_options,
                        donate_argnums=donate_argnums, out_shardings=out_shardings, call=False)


class _Called:
    """``fn`` (called without the static part), compared and hashed by its traced program."""

    def __init__(self, fn: Callable, key: Hashable):
        self.fn, self.key = fn, key

    def __call__(self, static, *args):
        return self.fn(*args)

    def cache_key(self) -> Hashable:
        return ("_Called", self.key)
