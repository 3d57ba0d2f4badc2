"""Zero false alarms on every correct rule of the registry; every deliberately wrong formula caught.

The registry sweep compiles one program per rule (every argument, both dtypes, all points).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax
from mcjax._check._api import check_cases
from mcjax._check._verify import shape_cases
from mcjax._conventions import DTYPES

POINTS = 4  # per rule, argument and dtype, at a non-square shape case


@pytest.mark.slow
@pytest.mark.parametrize("rule", list(mcjax.REGISTRY), ids=lambda r: r.name)
def test_every_correct_rule_passes_at_many_points_in_both_dtypes(rule):
    rng = np.random.default_rng(abs(hash(rule.name)) % 2**32)
    case = shape_cases(rule)[-1]
    points = [rule.example(rng, case, jnp.dtype(dt)) for dt in DTYPES for _ in range(POINTS)]
    cases = [(rule, rule.derivative(n), a, rule.arg_index(n)) for n in rule.wrt for a in points]
    reports = check_cases(cases)
    false_alarms = [str(r) for r in reports if not r.ok]
    assert not false_alarms, f"{len(false_alarms)} of {len(reports)} false alarms:\n" + false_alarms[0]


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
                       (x3, x3 + 1), 0, "with respect to args[1]"),
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


def test_wrong_registry_derivatives_are_caught_in_both_dtypes():
    """Each registered rule with its derivative scaled by 1.001: caught every time."""
    caught, total = 0, 0
    for name in ("relu", "sigmoid", "affine", "softmax", "neuron_loss", "mlp_mse"):
        rule = mcjax.REGISTRY.get(name)
        case = shape_cases(rule)[-1]
        for dt in DTYPES:
            args = rule.example(np.random.default_rng(0), case, jnp.dtype(dt))
            for wrt in rule.wrt:
                d = rule.derivative(wrt)
                slipped = lambda *a, d=d: jax.tree_util.tree_map(  # noqa: E731
                    lambda J: J * 1.001, d(*a), is_leaf=lambda J: isinstance(J, mcjax.Jacobian))
                total += 1
                caught += not mcjax.check(rule, slipped, *args, argnums=rule.arg_index(wrt)).ok
    assert caught == total
