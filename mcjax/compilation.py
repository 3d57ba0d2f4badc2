"""Compiling: JAX's persistent compilation cache, and jit for programs that run once.

Within a process mcjax reuses a compiled program only for the same traced program; across
processes ``mcjax.compilation.enable_compilation_cache`` lets JAX load compiled programs from disk.
``mcjax.compilation.quick_jit`` is ``jax.jit`` with the XLA options mcjax compiles its own one-shot programs
with (a check, a derivation in a test): compile time is what counts there.
"""

from mcjax._program._compile import quick_jit
from mcjax._train._compiled import enable_compilation_cache

__all__ = ["enable_compilation_cache", "quick_jit"]
