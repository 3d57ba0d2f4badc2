"""Kinks are read from f's jaxpr, never guessed from finite differences.

Every test here failed (or passed wrongly) when an entry was "at a kink" because its one-sided
finite differences disagreed: curvature at |x| ~ 1000 looked like a kink, kink entries were
skipped by the exact references, a wrong 0 passed beside a kink and at a kink of slopes 1 and 2.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax
from mcjax._check import _full

DTYPES = ["float32", "float64"]


def diag(fn):
    return lambda x: mcjax.Diagonal(fn(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_smooth_functions_at_large_magnitudes_pass_and_have_no_kinks(dtype):
    """sin at |x| in the thousands: curvature, not a kink; cos passes in both dtypes."""
    x = jnp.asarray([812.3, -1503.7, 2999.1, 1000.0], dtype)
    r = mcjax.check(jnp.sin, diag(jnp.cos), x)
    assert r.ok, r
    assert r.kinks.at == 0
    lse = lambda x: jax.nn.logsumexp(x)  # noqa: E731
    y = jnp.asarray([1000.0, 999.0, -1000.0, 1000.5], dtype)
    assert mcjax.check(lse, jax.nn.softmax, y).ok
    assert mcjax.check(lse, jax.nn.softmax, -y).ok
    assert not mcjax.check(jnp.sin, diag(lambda x: 1.001 * jnp.cos(x)), x).ok


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_wrong_entry_of_a_smooth_function_is_judged_by_the_exact_references(dtype):
    """log-sum-exp at x ~ 1000 with the largest entry of its gradient set to 0 fails."""
    y = jnp.asarray([1000.0, 999.0, 998.0], dtype)
    wrong = lambda x: jax.nn.softmax(x).at[0].set(0.0)  # noqa: E731
    r = mcjax.check(lambda x: jax.nn.logsumexp(x), wrong, y)
    assert not r.ok
    jacfwd = next(c for c in r.comparisons if c.reference == "jax.jacfwd")
    assert not jacfwd.ok and jacfwd.excluded == 0, r


def test_beside_a_kink_the_derivative_is_a_number():
    """ReLU at 1e-7 has slope exactly 1: a 0 there is wrong; at -1e-7 a 1 is wrong."""
    x = jnp.array([1e-7, -1e-7, 2.0])
    right = diag(lambda x: (x > 0).astype(x.dtype))
    assert mcjax.check(jax.nn.relu, right, x).ok
    r = mcjax.check(jax.nn.relu, diag(lambda x: (x > 1e-6).astype(x.dtype)), x)
    assert not r.ok and r.kinks.at == 0, r
    assert not mcjax.check(jax.nn.relu, diag(lambda x: (x >= -1e-6).astype(x.dtype)), x).ok


def test_at_a_kink_only_jax_the_one_sided_derivatives_and_their_average_pass():
    """relu(x) + x at 0 has one-sided slopes 1 and 2: 1, 2 and 1.5 pass, 0 does not."""
    f = lambda x: jax.nn.relu(x) + x  # noqa: E731
    x = jnp.array([0.0, -1.0, 1.0])
    slope = lambda at_zero: diag(lambda x: jnp.where(x > 0, 2.0, jnp.where(x < 0, 1.0, at_zero)))  # noqa: E731
    for value, names in ((1.0, {"jax", "left"}), (2.0, {"right"}), (1.5, {"average"})):
        r = mcjax.check(f, slope(value), x)
        assert r.ok and r.kinks.at == 1 and set(r.kinks.followed) == names, r
    r = mcjax.check(f, slope(0.0), x)
    assert not r.ok and "match none" in r.kinks.note, r
    entry = r.kinks.entries[0]
    assert (entry.jax, entry.left, entry.right, entry.got) == (1.0, 1.0, 2.0, 0.0)
    text = str(r)
    assert "left" in text and "right" in text and "jax" in text


def test_zero_passes_at_a_kink_only_where_it_is_an_accepted_value():
    x = jnp.array([-1.0, 0.0, 2.0])
    relu_gate = diag(lambda x: (x > 0).astype(x.dtype))
    r = mcjax.check(jax.nn.relu, relu_gate, x)  # 0 at 0: JAX's value and the left slope
    assert r.ok and r.kinks.at == 1 and set(r.kinks.followed) == {"jax", "left"}, r
    half = diag(lambda x: jnp.where(x > 0, 1.0, jnp.where(x == 0, 0.5, 0.0)))
    r = mcjax.check(jax.nn.relu, half, x)  # jnp.maximum's 1/2: not JAX's for jax.nn.relu
    assert r.ok and r.kinks.followed == ("average",), r
    assert not mcjax.check(jax.nn.relu, half, x, kink_convention="jax").ok
    assert mcjax.check(jax.nn.relu, relu_gate, x, kink_convention="left").ok
    wild = diag(lambda x: jnp.where(x == 0, 3.0, (x > 0).astype(x.dtype)))
    assert not mcjax.check(jax.nn.relu, wild, x).ok
    # abs at 0: one-sided -1 and 1; sign's 0 is their average, JAX gives 1
    r = mcjax.check(jnp.abs, diag(jnp.sign), x)
    assert r.ok and r.kinks.followed == ("average",), r
    assert not mcjax.check(jnp.abs, diag(lambda x: jnp.sign(x) + 2 * (x == 0).astype(x.dtype)), x).ok


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_switch_within_rounding_of_its_kink_accepts_both_sides(dtype):
    """z = W x + b with b = -W x: z is 0 in exact arithmetic, a rounding error here."""
    rng = np.random.default_rng(3)
    W = jnp.asarray(rng.standard_normal((6, 5)), dtype)
    x = jnp.asarray(rng.standard_normal(5), dtype)
    b = -(np.asarray(W, np.float64) @ np.asarray(x, np.float64)).astype(dtype)
    f = lambda x: jax.nn.relu(W @ x + b)  # noqa: E731
    on = lambda x: jnp.ones(6, x.dtype)[:, None] * W  # noqa: E731  every unit on
    off = lambda x: jnp.zeros_like(W)  # noqa: E731  every unit off
    for d in (on, off):
        r = mcjax.check(f, d, x)
        assert r.ok, r
    half = lambda x: 0.5 * W  # noqa: E731
    assert mcjax.check(f, half, x).ok  # the average
    assert not mcjax.check(f, lambda x: 2 * W, x).ok


def test_jumps_accept_only_jax_and_say_so():
    x = jnp.array([0.0, 1.5])
    f = lambda x: jnp.floor(x) + jnp.where(x > 0, x, x - 1.0)  # noqa: E731
    r = mcjax.check(f, diag(jnp.ones_like), x)
    assert r.ok and r.kinks.jumps >= 1, r
    assert not mcjax.check(f, diag(lambda x: jnp.where(x == 0, 5.0, 1.0)), x).ok


def test_finite_differences_never_make_a_kink_and_say_when_they_cannot_judge():
    """sin(1e9 x) / 1e9 oscillates faster than any finite-difference step can follow: autodiff
    judges, and the report says finite differences could not."""
    x = jnp.array([0.3, 1.7])
    f = lambda x: jnp.sin(1e9 * x) * 1e-9  # noqa: E731
    r = mcjax.check(f, diag(lambda x: jnp.cos(1e9 * x)), x)
    assert r.ok and r.kinks.at == 0, r
    assert any("cannot resolve" in n for n in r.notes), r
    assert "inconclusive" in r.taylor.note
    assert not mcjax.check(f, diag(lambda x: 1.01 * jnp.cos(1e9 * x)), x).ok


def test_kinks_inside_custom_rules_sorts_and_reductions():
    x = jnp.array([1.0, 1.0, 0.0])
    r = mcjax.check(lambda x: jnp.max(x), jax.grad(lambda x: jnp.max(x)), x)
    assert r.ok and r.kinks.at == 2, r  # a tie: one-sided derivatives 1 and 0 for each
    r = mcjax.check(jnp.sort, jax.jacfwd(jnp.sort), x)
    assert r.ok and r.kinks.at >= 2, r
    r = mcjax.check(jax.nn.softplus, diag(jax.nn.sigmoid), jnp.array([0.0, 1.0]))
    assert r.ok and r.kinks.at == 0, r  # softplus is smooth though its code has max and abs


def test_one_sided_derivatives_equal_the_difference_quotients():
    """The directional derivatives read from the jaxpr, against tiny one-sided differences."""
    f = lambda x: jnp.abs(x[0] - x[1]) * jnp.maximum(x[2], x[0]) + jax.nn.relu(x[1])  # noqa: E731
    x = jnp.array([0.5, 0.5, 0.5, 0.0][:3])
    p = mcjax._check._problem.prepare(f, jax.jacfwd(f), (x,), 0, "numerator")
    right, left, _, _ = jax.jit(lambda x: mcjax._check._kinks.one_sided(lambda x: f(x)[None], x))(x)
    h = 1e-7
    for j in range(3):
        e = jnp.zeros(3).at[j].set(h)
        np.testing.assert_allclose(right[0, j], (f(x + e) - f(x)) / h, atol=1e-5)
        np.testing.assert_allclose(left[0, j], (f(x) - f(x - e)) / h, atol=1e-5)
    assert p.static.switches


def test_report_of_a_full_check_lists_the_accepted_values():
    r = mcjax.check(jax.nn.relu, diag(lambda x: 7.0 * jnp.ones_like(x)), jnp.array([0.0]))
    assert not r.ok
    assert "jax" in str(r) and "matches none" in str(r)
    assert _full.KINK_CONVENTIONS == ("jax", "left", "right", "average")


# -- ties judged as a whole: the derivative must be a subgradient ----------------------------
def _max_pool(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (2,), (2,), "VALID")


@pytest.mark.parametrize("name, rows, ok", [
    ("JAX's own (the first of the tie)", None, True),
    ("the first of the tie", [[1.0, 0, 0, 0], [0, 0, 0, 1]], True),
    ("an even share", [[0.5, 0.5, 0, 0], [0, 0, 0, 1]], True),
    ("both tied entries at 1", [[1.0, 1, 0, 0], [0, 0, 0, 1]], False),
    ("both tied entries at 0", [[0.0, 0, 0, 0], [0, 0, 0, 1]], False),
])
def test_a_tie_is_judged_as_a_whole(name, rows, ok):
    x = jnp.array([1.0, 1.0, 2.0, 3.0])
    derivative = jax.jacfwd(_max_pool) if rows is None else (lambda x: jnp.asarray(rows))
    report = mcjax.check(_max_pool, derivative, x)
    assert report.ok is ok, name
    if not ok:
        assert "no subgradient" in report.kinks.note


def test_independent_kinks_are_judged_entry_by_entry():
    """A max minus a ReLU bends both ways: relu'(0) = 1 is as good as JAX's 0 there."""
    f = lambda x: (jnp.maximum(x[0], x[1]) + jax.nn.relu(x[2]) - jax.nn.relu(x[3]))[None]  # noqa: E731
    assert mcjax.check(f, lambda x: jnp.array([[0.5, 0.5, 1.0, 0.0]]), jnp.zeros(4)).ok


def test_argmax_of_booleans_switches_without_rounding():
    """``argmax(x > 0.5)`` (inside ``jax.scipy.special.poch``): booleans tie exactly, and the
    checker passes the right derivative and fails a wrong one (it crashed subtracting bools)."""
    def f(x):
        return x * jnp.argmax(x > 0.5).astype(x.dtype)

    x = jnp.asarray([0.1, 0.7, 0.3], jnp.float64)
    assert mcjax.check(f, jax.jacfwd(f), x).ok
    assert not mcjax.check(f, lambda x: 1.1 * jax.jacfwd(f)(x), x).ok
