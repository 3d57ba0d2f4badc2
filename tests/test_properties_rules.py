"""Property tests: at shapes and values hypothesis draws, every registered rule's hand-derived
derivative equals ``jax.jacfwd`` of its forward function.

Sizes are drawn for the rule's symbolic dimensions (each from 1, so size 1, non-square
matrices and batches of one and more come up) and values from the rule's own sampler
(``mcjax.testing.rule_arguments``).  float64 only, small sizes and few examples: every new
shape compiles a program, and a rule's program is reused for every example of a shape
already seen (one jitted function per rule, compiled for speed, not for running fast).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import pytest
from hypothesis import HealthCheck, given, settings

import mcjax
import mcjax.testing
from mcjax.compilation import quick_jit

RULES = list(mcjax.registry.REGISTRY)
DTYPE = "float64"
TOL = mcjax.conventions.tolerance(DTYPE)


@functools.cache
def derivatives_and_jacfwd(rule: mcjax.registry.Rule):
    """One jitted function per rule: each registered derivative (dense) and jax.jacfwd's, both
    with the rule's verification hyper-parameters (``rule(...)`` applies them to the forward)."""

    def both(*args):
        return {wrt: (mcjax.densify(rule.derivative(wrt)(*args, **rule.hyper)),
                      jax.jacfwd(rule, argnums=rule.arg_index(wrt))(*args))
                for wrt in rule.wrt}

    return quick_jit(both)


def matches_jacfwd(rule: mcjax.registry.Rule, **options):
    """The property, for hypothesis to run: at drawn arguments, every derivative of
    ``rule`` equals jax.jacfwd (within float64's tolerance).  ``options``: hypothesis
    settings beyond two examples and no deadline."""

    @settings(**{"max_examples": 2, "deadline": None,
                 "suppress_health_check": [HealthCheck.too_slow], **options})
    @given(args=mcjax.testing.rule_arguments(rule, dtype=DTYPE, max_size=2))
    def prop(args):
        for wrt, (derived, autodiff) in derivatives_and_jacfwd(rule)(*args).items():
            chex.assert_trees_all_close(derived, autodiff, rtol=TOL.rtol, atol=TOL.atol,
                                        custom_message=f"{rule.name}: d/d{wrt}")

    return prop


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_derivative_equals_jacfwd(rule):
    matches_jacfwd(rule)()


def test_a_wrong_derivative_fails_the_property():
    """ReLU's Jacobian without its gate: right wherever x > 0, so one drawn point may miss
    it; among 20 (the same 20 on every run) a negative entry shows it."""
    registry = mcjax.registry.Registry()
    gateless = mcjax.Derivative(lambda x: mcjax.Diagonal(jnp.ones_like(x)), "I", "I")
    mcjax.rule("gateless_relu", section="5", shapes="x: n", wrt={"x": gateless},
               registry=registry)(mcjax.relu)
    with pytest.raises(AssertionError, match="gateless_relu: d/dx"):
        matches_jacfwd(registry.get("gateless_relu"), max_examples=20, derandomize=True,
                       database=None)()
