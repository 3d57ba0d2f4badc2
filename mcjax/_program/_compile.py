"""Compiling programs: one set of XLA options, and compiled programs reused by traced program.

- :func:`compiler_options` and :func:`quick_jit`: the XLA options of programs that run once
  (a check, a derivation in a test), where compile time is what counts;
- :func:`compile_keyed` compiles ``fn`` for given arguments through one jitted caller that
  takes the :class:`~mcjax._program._trace.Keyed` function as a static argument: a later call
  whose ``fn`` traces to the same program (at the same argument shapes, dtypes and shardings,
  with the same options) gets the compiled program from jit's cache and compiles nothing; an
  edited one compiles anew.  No cache of mcjax's own holds the programs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np

from mcjax._program._trace import Keyed, function_key


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


def _call(fn, *args):
    """``fn(*args)``: the one function that :func:`compile_keyed` jits, with ``fn`` static."""
    return fn(*args)


def compile_keyed(fn: Callable, *args, donate_argnums: tuple[int, ...] = (),
                  compiler_options: dict | None = None, out_shardings=None):
    """``fn`` compiled for ``args``, reusing a compiled program only for the same traced program.

    ``fn`` is traced afresh (:func:`fresh_jaxpr`, never a trace cached on its identity) and
    keyed by :func:`function_key` (the program and its output's tree structure); jit's own cache, keyed on that and on the arguments' shapes,
    dtypes and shardings, the donated arguments, ``compiler_options`` and ``out_shardings``,
    answers a repeat call without compiling.

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
    key, _, _ = function_key(fn, *args, differentiated=False)  # the program and its output tree
    keyed = Keyed(fn, key)
    placement = {} if out_shardings is None else {"out_shardings": out_shardings}
    jitted = jax.jit(_call, static_argnums=0, donate_argnums=tuple(1 + i for i in donate_argnums),
                     compiler_options=compiler_options, **placement)
    return jitted.lower(keyed, *args).compile()
