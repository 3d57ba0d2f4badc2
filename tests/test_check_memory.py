"""Compiled checks are shared and bounded: a sweep over the values ``f`` closes over (a
parameter sweep, a property test) reuses one compiled program, and the cache of compiled
programs keeps at most its bound, releasing what it evicts."""

import gc
import os
import subprocess
import sys
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax
from mcjax._program._compile import PROGRAMS
from tests.compile_count import counting_compiles

X = jnp.array([0.3, -1.2, 2.0, 0.7], jnp.float32)


def _resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads /proc (Linux)")
def test_a_500_check_sweep_over_closure_constants_reuses_one_program_in_flat_memory():
    def case(i):
        c = 1.0 + i / 500  # a Python float: a literal in the traced program
        W = np.full((4, 4), np.float32(c)) + np.eye(4, dtype=np.float32)  # a constant array
        f = lambda x: jnp.tanh(W @ x) * c  # noqa: E731
        df = lambda x: (1 - jnp.tanh(W @ x) ** 2)[:, None] * W * c  # noqa: E731
        return f, df

    assert mcjax.check(*case(0), X).ok  # the first compiles
    gc.collect()
    before, compiled = _resident_mb(), PROGRAMS.compiled
    with counting_compiles() as compiles:
        for i in range(1, 500):
            assert mcjax.check(*case(i), X).ok
    gc.collect()
    assert PROGRAMS.compiled == compiled and compiles.count == 0
    assert _resident_mb() - before < 150


def test_a_sweep_never_serves_another_values_verdict():
    """The values are the program's arguments: a derivative that keeps an old value fails."""
    f_of = lambda c, W: (lambda x: jnp.sin(W @ x) * c)  # noqa: E731
    W0 = np.eye(4, dtype=np.float32)
    stale = lambda x: (jnp.cos(W0 @ x) * 1.5)[:, None] * W0  # noqa: E731  c = 1.5, W = I
    assert mcjax.check(f_of(1.5, W0), stale, X).ok
    assert not mcjax.check(f_of(2.5, W0), stale, X).ok  # another literal
    assert not mcjax.check(f_of(1.5, 2 * W0), stale, X).ok  # another constant array
    assert not mcjax.check(f_of(1.5, 2 * W0), stale, X, mode="fast").ok
    right = lambda x: (jnp.cos(2 * W0 @ x) * 1.5)[:, None] * (2 * W0)  # noqa: E731
    assert mcjax.check(f_of(1.5, 2 * W0), right, X).ok


def test_the_cache_keeps_its_bound_and_releases_what_it_evicts():
    size = mcjax.compilation.program_cache_size()
    mcjax.compilation.set_program_cache_size(2)
    try:
        assert len(PROGRAMS) <= 2
        mcjax.check(jnp.sin, lambda x: mcjax.Diagonal(jnp.cos(x)), jnp.ones(1))
        (first_key,) = [k for k in PROGRAMS._programs][-1:]
        first = weakref.ref(PROGRAMS._programs[first_key])
        for n in (2, 3, 5):
            mcjax.check(jnp.sin, lambda x: mcjax.Diagonal(jnp.cos(x)), jnp.ones(n))
            assert len(PROGRAMS) <= 2
        gc.collect()
        assert first() is None  # evicted and freed: nothing else held it
        compiled = PROGRAMS.compiled
        mcjax.check(jnp.sin, lambda x: mcjax.Diagonal(jnp.cos(x)), jnp.ones(5))  # kept: reused
        assert PROGRAMS.compiled == compiled
    finally:
        mcjax.compilation.set_program_cache_size(size)


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "8"])
def test_a_cache_size_that_is_no_count_is_refused(size):
    with pytest.raises(ValueError, match="set_program_cache_size: size=.*at least 1"):
        mcjax.compilation.set_program_cache_size(size)


def test_the_bound_is_read_from_the_environment():
    code = "import mcjax; print(mcjax.compilation.program_cache_size())"
    env = {**os.environ, "MCJAX_COMPILED_PROGRAMS": "7"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "7", out.stderr
    env["MCJAX_COMPILED_PROGRAMS"] = "lots"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "MCJAX_COMPILED_PROGRAMS='lots'" in out.stderr


@pytest.mark.parametrize("x64", [False, True])
@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_float64_numpy_constant_in_f_and_the_derivative(x64, mode):
    """NumPy's float64 constants are float32 in a float32 program when x64 is off and float64
    when it is on: the check evaluates f and the derivative as the user's JAX traced them."""
    W = np.random.default_rng(0).standard_normal((3, 3))  # float64
    f = lambda x: jnp.tanh(W @ x)  # noqa: E731
    right = lambda x: (1 - jnp.tanh(W @ x) ** 2)[:, None] * W  # noqa: E731
    with jax.enable_x64(x64), jax.numpy_dtype_promotion("standard"):  # as users have it
        x = jnp.linspace(0.1, 1.0, 3, dtype=jnp.float32)
        assert mcjax.check(f, right, x, mode=mode).ok
        assert not mcjax.check(f, lambda x: 1.01 * right(x), x, mode=mode).ok
        g = lambda x: jnp.sum(jnp.tanh(W @ x))  # noqa: E731
        assert mcjax.check(g, jax.grad(g), x, mode=mode).ok
