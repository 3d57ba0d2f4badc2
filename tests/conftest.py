"""Strict JAX settings for every test.

- float64 is on, so rules are verified in both float32 and float64;
- implicit rank promotion raises (``x + b`` with b of lower rank must be written explicitly),
  as in equinox's own tests;
- warnings are errors (pyproject's ``filterwarnings = error``).
"""

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def rng():
    """A seeded NumPy generator: every test draws the same points on every run."""
    return np.random.default_rng(0)
