"""`mcjax verify` is the checker over the registry, and a public derivative is the derivative of
the function as called."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax
from mcjax.conventions import SHAPE_CASES, check_rtol

RULES = list(mcjax.registry.REGISTRY)


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_every_public_derivative_is_the_derivative_of_the_function_as_called(rule):
    """``mcjax.derivative(f, wrt)(*args)`` against ``jax.jacfwd`` of ``f(*args)`` called plainly:
    the forward function's own defaults, never the rule's verification hyper-parameters."""
    args = rule.example(np.random.default_rng(5), SHAPE_CASES[2], jnp.float64)
    for wrt in rule.wrt:
        i = rule.arg_index(wrt)
        got, want = jax.jit(lambda *args: (  # noqa: B023 - called at once
            mcjax.densify(rule.derivative(wrt)(*args)),
            jax.jacfwd(lambda a: rule.forward(*args[:i], a, *args[i + 1:]))(args[i])))(*args)
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            scale = float(jnp.max(jnp.abs(w), initial=0.0))
            assert float(jnp.max(jnp.abs(g - w), initial=0.0)) <= check_rtol("float64", 64) * max(
                scale, 1.0), (rule.name, wrt)


def test_a_public_derivative_takes_the_same_keywords_as_its_function():
    rng = np.random.default_rng(0)
    W, X, b = (jnp.asarray(rng.standard_normal(s)) for s in ((3, 4), (2, 4), (3,)))
    def both(W, kw):
        return (mcjax.derivative(mcjax.dense_layer, "W")(W, X, b, **kw).dense(),
                jax.jacfwd(lambda W: mcjax.dense_layer(W, X, b, **kw))(W))

    for kw in ({"activation": "relu"}, {"activation": "tanh"}, {}):  # {}: the default, relu
        got, want = jax.jit(lambda W, kw=kw: both(W, kw))(W)
        np.testing.assert_allclose(got, want, rtol=check_rtol("float64", 4))


def test_verify_reports_are_the_checkers_reports():
    results = mcjax.registry.verify(pattern="relu", dtypes=("float32", "float64"))
    assert results and all(isinstance(r.report, mcjax.Report) for r in results)
    report = results[0].report
    assert [c.reference for c in report.comparisons] == ["jax.jacfwd", "jax.jacrev"]
    assert report.threshold.rtol == check_rtol(report.dtype, report.threshold.terms)


def _scaled_registry(factor: float) -> mcjax.registry.Registry:
    registry = mcjax.registry.Registry()

    @mcjax.rule("scaled_sin", section="8.2", shapes="x: n", registry=registry, wrt={
        "x": mcjax.Derivative(lambda x: mcjax.Diagonal(factor * jnp.cos(x)), "", "")})
    def scaled_sin(x):
        """sin(x)."""
        return jnp.sin(x)

    return registry


@pytest.mark.parametrize(("dtype", "slip"), [("float32", 2e-5), ("float64", 1e-11)])
def test_verify_is_as_strict_as_the_checker(dtype, slip):
    """Slips the old verify let through (rtol 1e-4 in float32, 1e-9 in float64) now fail."""
    assert all(r.ok for r in mcjax.registry.verify(_scaled_registry(1.0), dtypes=(dtype,)))
    results = mcjax.registry.verify(_scaled_registry(1 + slip), dtypes=(dtype,))
    largest = max(results, key=lambda r: r.shapes)
    assert not largest.ok, largest.report


def test_verify_json_carries_the_checkers_verdict(capsys):
    from mcjax.__main__ import main

    assert main(["verify", "-k", "relu", "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    case = rows[0]["derivatives"][0]["cases"][0]
    assert set(case["comparisons"]) == {"jax.jacfwd", "jax.jacrev"} and case["ok"]


def test_verify_in_worker_processes_gives_the_results_of_one_process():
    """The rules shared between this process and a spawned worker come back in the registry's
    order, with the verdicts and errors one process finds."""
    pattern = "s*"  # sigmoid, softplus, subtract, square, ..., sum_reduction: a dozen

    def summary(results):
        return [(r.rule, r.wrt, r.dtype, r.shapes, r.ok, r.worst("max_abs")) for r in results]

    one = mcjax.registry.verify(pattern=pattern, dtypes=("float32",), cases=SHAPE_CASES[:1])
    two = mcjax.registry.verify(pattern=pattern, dtypes=("float32",), cases=SHAPE_CASES[:1],
                                processes=2)
    assert len({r.rule for r in one}) >= 8  # enough rules for the workers to start
    assert summary(two) == summary(one)
