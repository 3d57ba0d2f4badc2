"""Zero false alarms on every correct rule of the registry; every deliberately wrong formula caught.

The registry sweep compiles one program per rule (every argument, both dtypes, all points,
right and slipped by 0.1%).
"""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax
from mcjax import check_cases
from mcjax._check._verify import as_checked, shape_cases
from mcjax.conventions import DTYPES

POINTS = 4  # per rule, argument and dtype, at a non-square shape case
SLIP = 1.001  # a derivative off by 0.1%


def with_factor(rule, wrt):
    """``rule`` and its derivative with respect to ``wrt`` (with the rule's verification
    hyper-parameters, as ``mcjax verify`` checks them), both with one more argument: a factor
    on the derivative (1: the rule's own; ``SLIP``: wrong by 0.1%).  The factor is an array,
    so right and slipped points share one compiled check."""
    forward, d = as_checked(rule, wrt)

    def f(*args):
        return forward(*args[:-1])

    def derivative(*args):
        return jax.tree_util.tree_map(lambda J: J * args[-1], d(*args[:-1]),
                                      is_leaf=lambda J: isinstance(J, mcjax.Jacobian))

    f.name, derivative.name = rule.name, f"d {rule.name} / d {wrt}"
    return f, derivative


@pytest.mark.slow
@pytest.mark.parametrize("rule", list(mcjax.registry.REGISTRY), ids=lambda r: r.name)
def test_every_correct_rule_passes_at_many_points_in_both_dtypes(rule):
    """...and the same rule's derivative times 1.001 fails at every point where it is not zero
    (at least one per argument and dtype), in the same program."""
    rng = np.random.default_rng(zlib.crc32(rule.name.encode()))  # hash() is salted per process
    case = shape_cases(rule)[-1]
    points = {dt: [rule.example(rng, case, jnp.dtype(dt)) for _ in range(POINTS)] for dt in DTYPES}
    cases, blocks = [], []
    for n in rule.wrt:
        f, derivative = with_factor(rule, n)
        for dt, args in points.items():
            blocks.append((n, dt))  # POINTS right, then the same POINTS slipped
            cases += [(f, derivative, (*a, jnp.asarray(factor, dt)), rule.arg_index(n))
                      for factor in (1.0, SLIP) for a in args]
    reports = check_cases(cases)
    right, caught = [], {}
    for k, block in enumerate(blocks):
        good, bad = (reports[(2 * k + i) * POINTS : (2 * k + i + 1) * POINTS] for i in (0, 1))
        right += good
        # 1.001 times a zero derivative is still right: only nonzero ones must be caught
        caught[block] = [not b.ok for g, b in zip(good, bad) if np.any(g.matrices["expected"] != 0)]
    false_alarms = [str(r) for r in right if not r.ok]
    assert not false_alarms, f"{len(false_alarms)} of {len(right)} false alarms:\n" + false_alarms[0]
    missed = {block: c for block, c in caught.items() if not c or not all(c)}
    assert not missed, f"slips of 0.1% missed, per (argument, dtype): {missed}"


# -- deliberately wrong derivatives -----------------------------------------------------------
rng = np.random.default_rng(7)
x3 = jnp.asarray(rng.standard_normal(3))
x4 = jnp.asarray(rng.standard_normal(4))
W33 = jnp.asarray(rng.standard_normal((3, 3)))
Y23 = jnp.asarray(rng.standard_normal((2, 3)))
P23 = jnp.asarray(rng.standard_normal((2, 3)))


def tanh_affine(x):
    return jnp.tanh(W33.astype(x.dtype) @ x)


def tanh_affine_jac(x):
    return (1 - tanh_affine(x) ** 2)[:, None] * W33.astype(x.dtype)


def _mse(y_hat, y):
    return mcjax.mse(y_hat, y)


def _neuron_w(w, x, b):
    return mcjax.neuron(w, x, b)


# name -> (f, wrong derivative, args, argnums, words the diagnosis must contain)
WRONG = {
    "sign": (jnp.sin, lambda x: mcjax.Diagonal(-jnp.cos(x)), (x3,), 0, "sign is flipped"),
    "transpose": (tanh_affine, lambda x: tanh_affine_jac(x).T, (x3,), 0, "transposed"),
    "factor 2": (lambda x: jnp.sum(x**2), lambda x: 4 * x, (x4,), 0, "times 2"),
    "factor 1/2": (lambda x: jnp.sum(x**2), lambda x: x, (x4,), 0, "times 1/2"),
    "missing 1/N": (_mse, lambda y_hat, y: 2 * (y_hat - y), (P23, Y23), 0, "N = 6"),
    "1/N twice": (_mse, lambda y_hat, y: 2 * (y_hat - y) / 36, (P23, Y23), 0, "1/N = 1/6"),
    "missing gate (mask)": (jax.nn.relu, lambda x: mcjax.Diagonal(jnp.ones_like(x)),
                            (jnp.array([-1.0, 0.5, -2.0, 3.0]),), 0, "missing gate"),
    "missing gate (ReLU of a neuron)": (_neuron_w, lambda w, x, b: x,
                                        (x3, x3, -jnp.dot(x3, x3) - 1.0), 0, "missing gate"),
    "dense instead of diagonal": (jnp.sin, lambda x: jnp.broadcast_to(jnp.cos(x), (3, 3)),
                                  (x3,), 0, "dense matrix where a diagonal was due"),
    "diagonal instead of dense": (tanh_affine, lambda x: mcjax.Diagonal(jnp.diag(tanh_affine_jac(x))),
                                  (x3,), 0, "diagonal where a full matrix was due"),
    "wrong argument": (lambda x, y: x * jnp.sin(y), lambda x, y: jnp.diag(x * jnp.cos(y)),
                       (x3, x3 + 1), 0, "with respect to y: the wrong argument"),
    "off by 0.1% float64": (tanh_affine, lambda x: 1.001 * tanh_affine_jac(x), (x3,), 0, "+0.1%"),
    "off by 0.1% float32": (tanh_affine, lambda x: 1.001 * tanh_affine_jac(x),
                            (x3.astype(jnp.float32),), 0, "+0.1%"),
    "off by 0.1% vjp float32": (tanh_affine, lambda x: (lambda u: 1.001 * (u @ tanh_affine_jac(x))),
                                (x3.astype(jnp.float32),), 0, "+0.1%"),
}


@pytest.mark.parametrize("name", list(WRONG))
def test_every_wrong_derivative_is_caught_and_its_slip_named(name):
    f, wrong, args, argnums, words = WRONG[name]
    report = mcjax.check(f, wrong, *args, argnums=argnums)
    assert not report.ok, report
    assert any(words in d for d in report.diagnosis), report
