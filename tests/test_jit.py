"""mcjax._program._trace: compiled programs reused only for the same traced program."""

import jax.numpy as jnp

from mcjax._program._compile import compile_keyed


def test_compile_keyed_keeps_each_functions_output_structure():
    """Two functions with one program but other output trees get their own compiled call."""
    x = jnp.arange(3.0)
    pair = compile_keyed(lambda x: (x + 1, x * 2), x)(x)
    named = compile_keyed(lambda x: {"p": x + 1, "q": x * 2}, x)(x)
    assert isinstance(pair, tuple)
    assert isinstance(named, dict) and set(named) == {"p", "q"}


def test_compile_keyed_follows_an_edit_of_what_the_function_reads():
    x = jnp.arange(3.0)
    scale = {"now": 2.0}

    def f(x):
        return x * scale["now"]

    first = compile_keyed(f, x)(x)
    scale["now"] = 3.0
    assert jnp.array_equal(compile_keyed(f, x)(x), 1.5 * first)
