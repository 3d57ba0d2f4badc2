"""Every example in a docstring of mcjax runs, and prints what it says (doctest)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax
from mcjax._core._compat import enable_x64  # jax.enable_x64 from JAX 0.8


def _modules_with_examples():
    for info in pkgutil.walk_packages(mcjax.__path__, "mcjax."):
        module = importlib.import_module(info.name)
        tests = doctest.DocTestFinder().find(module, globs={})
        if any(t.examples for t in tests):
            yield info.name


MODULES = sorted(_modules_with_examples())


def test_the_examples_are_found():
    assert len(MODULES) >= 6


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    globs = {"jax": jax, "jnp": jnp, "np": np, "mcjax": mcjax, **vars(module)}
    with enable_x64(False):  # the examples show what a user sees: float32 by default
        failed, attempted = doctest.testmod(
            module, globs=globs, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
            verbose=False)
    assert attempted and not failed, f"{name}: {failed} of {attempted} examples failed"
