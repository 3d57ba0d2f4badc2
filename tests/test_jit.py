"""mcjax._program._trace: compiled programs reused only for the same traced program."""

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._program._compile import compile_keyed, run_compiled


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


def test_an_output_that_is_an_input_is_the_callers_array_not_a_copy():
    """``run_compiled(..., forward_inputs=True)``: XLA would copy an input returned as it is
    (a structured Hessian holding the data matrix); the caller's array comes back instead, and
    the outputs computed are the program's."""
    X, y = jnp.ones((50, 4), jnp.float32), jnp.arange(3.0, dtype=jnp.float32)

    def fn(scale, X, y):
        return {"X": X, "scaled": scale * y, "y": y, "sum": jnp.sum(X)}

    for _ in range(2):  # compiled once, then from the cache
        out = run_compiled(fn, 2.0, X, y, forward_inputs=True)
        assert out["X"] is X and out["y"] is y
        assert jnp.array_equal(out["scaled"], 2.0 * y) and float(out["sum"]) == 200.0
    copied = run_compiled(fn, 2.0, X, y)
    assert copied["X"] is not X and jnp.array_equal(copied["X"], X)
    from_numpy = run_compiled(fn, 2.0, np.ones((50, 4), np.float32), y, forward_inputs=True)
    assert isinstance(from_numpy["X"], jax.Array) and from_numpy["X"].shape == (50, 4)


def test_dense_compiles_once_per_structure_not_per_value_or_name():
    """``J.dense()`` is one compiled program per structure: a Jacobian of the same structure
    at other values, or derived from a function whose arguments are named otherwise, reuses
    it; the values are each one's own (``jax.jacfwd``'s)."""
    import mcjax
    from mcjax._program._compile import PROGRAMS

    def layer(W, x):
        return jnp.tanh(W @ x)

    def renamed(A, v):
        return jnp.tanh(A @ v)

    W, x = jnp.full((3, 4), 0.1, jnp.float64), jnp.arange(4.0, dtype=jnp.float64)  # float64: exact
    first = mcjax.derive(layer)(W, x)
    assert jnp.allclose(first.dense(), jax.jacfwd(layer)(W, x))
    compiled = PROGRAMS.compiled
    for J, args in ((mcjax.derive(layer)(0.5 * W, x + 1), (0.5 * W, x + 1)),
                    (mcjax.derive(renamed)(W, 2 * x), (W, 2 * x))):
        assert jnp.allclose(J.dense(), jax.jacfwd(layer)(*args), rtol=1e-12)
    assert PROGRAMS.compiled == compiled
    assert first.formula() != mcjax.derive(renamed)(W, x).formula()  # names differ, program not
