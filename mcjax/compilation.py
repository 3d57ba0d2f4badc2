"""JAX's persistent compilation cache, for training runs that start again and again.

Within a process mcjax reuses a compiled program only for the same traced program
(``mcjax._program._trace``); across processes :func:`enable_compilation_cache` lets JAX load compiled
programs from disk.
"""

from mcjax._train._compiled import enable_compilation_cache

__all__ = ["enable_compilation_cache"]
