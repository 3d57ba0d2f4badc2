"""mcjax.testing: its strategies draw valid arguments (every registered rule runs on them),
reach size 1 and non-square shapes, and it says what to install when hypothesis is missing."""

from __future__ import annotations

import sys

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mcjax
import mcjax.testing

RULES = list(mcjax.registry.REGISTRY)


def sizes_of(rule: mcjax.registry.Rule, args: tuple) -> dict[str, int]:
    """The size of every symbolic dimension, read off the arguments (and checked to agree)."""
    sizes: dict[str, int] = {}
    for (name, dims), arg in zip(rule.shapes.items(), args):
        if dims == ("*",):
            continue
        assert np.ndim(arg) == len(dims), (rule.name, name, np.shape(arg), dims)
        for dim, size in zip(dims, np.shape(arg)):
            assert sizes.setdefault(dim, size) == size, (rule.name, name, dim)
    return sizes


@settings(max_examples=60, deadline=None, database=None)
@given(data=st.data())
def test_rule_arguments_are_valid_for_every_rule(data):
    rule = data.draw(st.sampled_from(RULES), label="rule")
    args = data.draw(mcjax.testing.rule_arguments(rule, dtype="float64"), label="args")
    assert len(args) == len(rule.arg_names)
    sizes = sizes_of(rule, args)
    assert all(1 <= size <= 4 for size in sizes.values())
    jax.eval_shape(rule, *args)  # the forward function accepts them (shapes, dtypes)


def test_size_one_and_non_square_shapes_are_drawn():
    shapes = []

    @settings(max_examples=30, deadline=None, database=None, derandomize=True)
    @given(mcjax.testing.rule_arguments("affine"))
    def record(args):
        shapes.append(args[0].shape)

    record()
    assert (1, 1) in shapes
    assert any(m != n for m, n in shapes) and any(m == n > 1 for m, n in shapes)


def test_shaped_arrays_share_sizes_and_keep_to_their_elements():
    strategy = mcjax.testing.shaped_arrays("W: m n, x: n, z:", dtype="float32",
                                           elements=st.floats(0.5, 1.0), fixed={"m": 3})

    @settings(max_examples=20, deadline=None, database=None)
    @given(strategy)
    def check(args):
        W, x, z = args
        assert W.shape == (3, x.shape[0]) and z.shape == ()
        assert all(a.dtype == np.float32 for a in args)
        # NumPy, not jax.numpy: an eager jax operation compiles once per shape
        assert all(((np.asarray(a) >= 0.5) & (np.asarray(a) <= 1.0)).all() for a in args)

    check()
    with pytest.raises(ValueError, match=r"params is a pytree"):
        mcjax.testing.shaped_arrays("params: *, X: B n")


def test_without_hypothesis_the_error_says_what_to_install(monkeypatch):
    for name in ("hypothesis", "hypothesis.strategies", "hypothesis.extra.numpy"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    with pytest.raises(ImportError, match=r"pip install hypothesis"):
        mcjax.testing.rule_arguments("relu")
