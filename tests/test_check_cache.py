"""No stale verdicts: a check after an edit runs the edited code; an unchanged repeat compiles
nothing.  Compiled checks are keyed on the traced programs, never on the functions' identity
(which is what jax.jit keys on, and what served old verdicts after an edit)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax
from mcjax._check import _full
from mcjax._program._compile import PROGRAMS

X = jnp.array([0.3, -1.2, 2.0])


def _compiles() -> int:
    return PROGRAMS.compiled


def test_editing_a_helper_the_derivative_reads_changes_the_next_verdict():
    namespace = {"jnp": jnp}
    exec("def slope(x):\n    return jnp.cos(x)", namespace)  # a helper, as a notebook defines it

    def derivative(x):
        return mcjax.Diagonal(namespace["slope"](x))

    assert mcjax.check(jnp.sin, derivative, X).ok
    exec("def slope(x):\n    return -jnp.cos(x)", namespace)  # the helper edited: now wrong
    assert not mcjax.check(jnp.sin, derivative, X).ok
    exec("def slope(x):\n    return jnp.cos(x)", namespace)  # fixed again
    assert mcjax.check(jnp.sin, derivative, X).ok


FACTOR = 2.0  # a global the function reads


def scaled(x):
    return FACTOR * jnp.sin(x)


def test_editing_a_global_the_function_reads_changes_the_next_verdict():
    global FACTOR
    derivative = lambda x: mcjax.Diagonal(2.0 * jnp.cos(x))  # noqa: E731
    try:
        assert mcjax.check(scaled, derivative, X).ok
        FACTOR = 3.0
        assert not mcjax.check(scaled, derivative, X).ok
        assert not mcjax.check(scaled, derivative, X, mode="fast").ok
    finally:
        FACTOR = 2.0
    assert mcjax.check(scaled, derivative, X).ok


def test_editing_a_global_array_or_a_custom_rule_changes_the_next_verdict():
    weights = {"W": jnp.eye(3)}
    f = lambda x: jnp.tanh(weights["W"] @ x)  # noqa: E731
    d = lambda x: (1 - f(x) ** 2)[:, None] * jnp.eye(3)  # noqa: E731
    assert mcjax.check(f, d, X).ok
    weights["W"] = 2 * jnp.eye(3)  # the same shapes, other values: the same program text
    assert not mcjax.check(f, d, X).ok

    def with_rule(scale):
        @jax.custom_jvp
        def g(x):
            return jnp.sin(x)

        g.defjvp(lambda primals, tangents: (g(primals[0]), scale * jnp.cos(primals[0]) * tangents[0]))
        return g

    right = lambda x: mcjax.Diagonal(jnp.cos(x))  # noqa: E731
    assert mcjax.check(with_rule(1.0), right, X).ok
    r = mcjax.check(with_rule(2.0), right, X)  # the same primal program, another JVP rule
    # the exact references now run the wrong rule (finite differences, which only evaluate f,
    # still agree with the hand derivative: the report says the references disagree)
    assert not r.comparisons[0].ok and r.notes[0].startswith("the references disagree"), r


def test_an_unchanged_repeat_reuses_the_compiled_check_and_an_edit_compiles_anew():
    W = jnp.asarray(np.random.default_rng(0).standard_normal((3, 3)))
    f = lambda x: jnp.tanh(W @ x)  # noqa: E731
    d = lambda x: (1 - f(x) ** 2)[:, None] * W  # noqa: E731
    mcjax.check(f, d, X)
    before = _compiles()
    g = lambda x: jnp.tanh(W @ x)  # noqa: E731  a new function object, the same program
    assert mcjax.check(g, d, X).ok and mcjax.assert_derivative(f, d, X).ok
    assert _compiles() == before
    assert not mcjax.check(f, lambda x: 2 * d(x), X).ok
    assert _compiles() == before + 1
    fast = _compiles()
    mcjax.check(f, d, X, mode="fast")
    mcjax.check(g, d, X, mode="fast")
    assert _compiles() == fast + 1


def test_the_chain_localiser_and_verify_see_edits_too():
    namespace = {"jnp": jnp}
    exec("def gate(x):\n    return 1 - jnp.tanh(x) ** 2", namespace)
    tanh = mcjax.Differentiable(jnp.tanh, lambda x: mcjax.Diagonal(namespace["gate"](x)),
                                name="tanh")
    chain = mcjax.vector_chain_rule(mcjax.sin, tanh)
    assert mcjax.check_chain(chain, X).ok
    exec("def gate(x):\n    return 1 - jnp.tanh(x)", namespace)
    r = mcjax.check_chain(chain, X)
    assert not r.ok and "the first wrong link is tanh" in r.diagnosis[-1], r

    registry = mcjax.registry.Registry()
    state = {"factor": 1.0}

    @mcjax.rule("edited", section="8.2", shapes="x: n", registry=registry, wrt={
        "x": mcjax.Derivative(lambda x: mcjax.Diagonal(state["factor"] * jnp.cos(x)), "", "")})
    def edited(x):
        """sin."""
        return jnp.sin(x)

    assert all(r.ok for r in mcjax.registry.verify(registry, dtypes=("float64",)))
    state["factor"] = 1.5
    assert not any(r.ok for r in mcjax.registry.verify(registry, dtypes=("float64",)))


@pytest.fixture
def counted_programs(monkeypatch):
    """The full-mode program, traced through ``chex.assert_max_traces``: it raises on a trace
    beyond the allowed count."""
    monkeypatch.setattr(_full, "_programs", chex.assert_max_traces(_full._programs, n=1))
    yield


def test_a_repeated_check_traces_its_program_once_per_shape_and_dtype(counted_programs):
    W = jnp.asarray(np.random.default_rng(4).standard_normal((3, 3)))
    for _ in range(3):
        f = lambda x: jnp.tanh(W @ x)  # noqa: E731  a new function object each time
        mcjax.check(f, lambda x: (1 - f(x) ** 2)[:, None] * W, X)
    with pytest.raises(AssertionError, match="traced"):  # a new program: a second trace
        mcjax.check(jnp.sin, lambda x: mcjax.Diagonal(jnp.cos(x)), X)
