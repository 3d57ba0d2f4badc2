"""Compiling: mcjax's bounded cache of compiled programs, JAX's persistent compilation cache,
and jit for programs that run once.

Within a process mcjax reuses a compiled program only for the same traced program (the values
a function closes over are that program's arguments: a sweep over them compiles once), and
keeps at most ``mcjax.compilation.program_cache_size()`` of them
(``mcjax.compilation.set_program_cache_size``, ``$MCJAX_COMPILED_PROGRAMS``); across
processes ``mcjax.compilation.enable_compilation_cache`` lets JAX load compiled programs from
disk.  ``mcjax.compilation.quick_jit`` is ``jax.jit`` with the XLA options mcjax compiles its
own one-shot programs with (a check, a derivation in a test): compile time is what counts
there.
"""

from mcjax._program._compile import program_cache_size, quick_jit, set_program_cache_size
from mcjax._train._compiled import enable_compilation_cache

__all__ = ["enable_compilation_cache", "program_cache_size", "quick_jit",
           "set_program_cache_size"]
