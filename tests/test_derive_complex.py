"""``mcjax.derive`` through complex intermediates: a real function that computes with an FFT
or complex numbers inside.  The structured rules are the real ones, so a cast to complex,
``fft``, ``real``/``imag`` keep their linear maps and every other complex operation becomes
JAX's own linear map of it; the result equals ``jax.jacfwd`` and its transpose ``jax.vjp``."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax
from mcjax._core._conventions import tolerance


def _c(x):
    """``x`` as complex numbers (the tests run under strict dtype promotion)."""
    return jax.lax.complex(x, jnp.zeros_like(x))


FUNCTIONS = {
    "fft.real": lambda x: jnp.fft.fft(x).real,
    "power spectrum": lambda x: jnp.abs(jnp.fft.rfft(x)) ** 2,
    "rfft round trip": lambda x: jnp.fft.irfft(jnp.fft.rfft(x) * _c(jnp.full_like(x[:4], 2.0)),
                                              n=x.shape[0]),
    "circular product": lambda x: jnp.sum(jnp.fft.ifft(jnp.fft.fft(x) * _c(x)).imag ** 2),
    "phase": lambda x: jnp.angle(jnp.fft.fft(x)),
    "complex exponential": lambda x: jnp.abs(jnp.exp(jax.lax.complex(jnp.zeros_like(x), x)) * _c(x)),
    "spectral norm-1": lambda x: jnp.sum(jnp.abs(jnp.fft.fft(x))),
}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_derive_through_complex_values_equals_jacfwd_and_its_transpose(name, dtype):
    f = FUNCTIONS[name]
    x = jnp.asarray([0.3, 1.7, -0.4, 2.2, 0.9, -1.3], dtype)
    J = mcjax.derive(f)(x)
    want = jax.jacfwd(f)(x)
    assert J.dense().dtype == want.dtype
    rtol, atol = tolerance(dtype)
    chex.assert_trees_all_close(J.dense(), want, rtol=rtol, atol=atol)
    u = jnp.asarray(np.random.default_rng(0).normal(size=jnp.shape(want)[:jnp.ndim(want) - 1]),
                    dtype)
    chex.assert_trees_all_close(J.vjp(u), jax.vjp(f, x)[1](u)[0], rtol=rtol, atol=atol)
    assert mcjax.derive(f).verify(x).ok


def test_an_fft_keeps_its_structure_and_the_cast_to_complex_stays_in_the_chain():
    J = mcjax.derive(lambda x: jnp.fft.fft(x).real)(jnp.arange(4.0))
    assert J.formula() == "real(·) fft(·) complex(·)"


@pytest.mark.parametrize("name", ["power spectrum", "spectral norm-1", "complex exponential"])
def test_the_checker_passes_a_right_gradient_through_complex_values_and_catches_a_factor(name):
    """The kink reading meets ``abs`` of a complex value (no kink of the real kind: JAX's own
    rule) instead of crashing on a complex tangent."""
    f = FUNCTIONS[name]

    def loss(x):
        return jnp.sum(f(x))

    x = jnp.asarray([0.3, 1.7, -0.4, 2.2, 0.9, -1.3], jnp.float32)
    assert mcjax.check(loss, jax.grad(loss), x).ok
    report = mcjax.check(loss, lambda x: 2 * jax.grad(loss)(x), x)
    assert not report.ok and report.slips[0].kind == "factor"
