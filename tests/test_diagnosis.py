"""The diagnosis names the slip, on more than one function per kind of slip, and never names a
wrong one; the report says where the wrong entries are.

Each planted slip is (function, wrong derivative, arguments, the kinds the diagnosis may name).
``test_every_planted_slip_is_caught_and_named`` counts them: caught, named, named wrongly.
"""

import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax
from mcjax import check_cases

sys.path.insert(0, str(Path(__file__).parent / "data"))
from derivations import (  # noqa: E402
    _points,
    attention,
    d_attention,
    d_frobenius,
    d_gru_wrong,
    d_layer_norm_wrong,
    d_softmax,
    d_softmax_wrong,
    frobenius,
    gru,
    layer_norm,
    softmax,
)

rng = np.random.default_rng(21)
A = jnp.asarray(rng.standard_normal((4, 4)))  # not symmetric
x4 = jnp.asarray(rng.standard_normal(4))
y4 = jnp.asarray(rng.standard_normal(4))
W3 = jnp.asarray(rng.standard_normal((3, 3)))
x3 = jnp.asarray(rng.standard_normal(3))
k9 = jnp.asarray(rng.standard_normal(9))
P23, Y23 = (jnp.asarray(rng.standard_normal((2, 3))) for _ in range(2))
softmax_x = _points("softmax", rng, "float64")
norm_x = _points("layer norm", rng, "float64")
frob = (jnp.asarray(rng.standard_normal((3, 3))), *(jnp.asarray(rng.standard_normal(s))
                                                  for s in ((3, 5), (3, 5))))
gru_args = _points("gru", rng, "float64")
att = _points("attention", rng, "float64")


def diag(fn):
    return lambda *a: mcjax.Diagonal(fn(*a))


def sigmoid_grad_naive(x):  # exp(-x) / (1 + exp(-x))^2: inf / inf at x = -800
    e = jnp.exp(-x)
    return e / (1 + e) ** 2


def tanh_affine(x):
    return jnp.tanh(A @ x)


def d_tanh_affine(x):
    return (1 - tanh_affine(x) ** 2)[:, None] * A


def sum_tanh(W):
    return jnp.sum(jnp.tanh(W @ x3))


def d_sum_tanh(W):  # (1 - tanh(z)^2) x^T
    return jnp.outer(1 - jnp.tanh(W @ x3) ** 2, x3)


def product(x):
    return x * jnp.sin(x)


def score(q):  # a scaled dot product, d = 9
    return jnp.dot(q, k9) / jnp.sqrt(9.0)


def mse(p, y):
    return mcjax.mse(p, y)


def sum_exp(x, y):
    return jnp.sum(x * jnp.exp(y))


# name -> (f, wrong derivative, args, argnums, the kinds that name this slip)
PLANTED = {
    "sign: sin": (jnp.sin, diag(lambda x: -jnp.cos(x)), (x4,), 0, {"sign"}),
    "sign: softmax": (softmax, lambda x: -d_softmax(x), softmax_x, 0, {"sign"}),
    "factor: 2, sum of squares": (lambda x: jnp.sum(x**2), lambda x: 4 * x, (x4,), 0, {"factor"}),
    "factor: 1/2, frobenius": (frobenius, lambda *a: d_frobenius(*a) / 2, frob, 0, {"factor"}),
    "factor: N, mse": (mse, lambda p, y: 2 * (p - y), (P23, Y23), 0, {"factor"}),
    "factor: 1/N twice, mse": (mse, lambda p, y: 2 * (p - y) / 36, (P23, Y23), 0, {"factor"}),
    "factor: sqrt(d), attention": (attention, lambda *a: 2.0 * d_attention(*a), att, 0, {"factor"}),
    "factor: sqrt(d), scaled score": (score, lambda q: k9, (x4.repeat(3)[:9],), 0, {"factor"}),
    "transposed: tanh affine": (tanh_affine, lambda x: d_tanh_affine(x).T, (x4,), 0,
                                {"transposed"}),
    "transposed: sin affine": (lambda x: A @ jnp.sin(x), lambda x: (A * jnp.cos(x)[None, :]).T, (x4,), 0,
                               {"transposed"}),
    "transposed: W of frobenius": (frobenius, lambda *a: d_frobenius(*a).T, frob, 0, {"transposed"}),
    "transposed: outer product": (sum_tanh, lambda W: d_sum_tanh(W).T, (W3,), 0,
                                    {"transposed"}),
    "transposed: negated, outer product": (sum_tanh, lambda W: -d_sum_tanh(W).T, (W3,), 0,
                                              {"transposed"}),
    "missing gate: relu": (jax.nn.relu, diag(jnp.ones_like), (jnp.array([-1.0, 0.5, -2.0, 3.0]),),
                           0, {"missing-gate"}),
    "missing gate: neuron": (lambda w, x, b: mcjax.neuron(w, x, b), lambda w, x, b: x,
                             (x3, x3, -jnp.dot(x3, x3) - 1.0), 0, {"missing-gate"}),
    "dense for diagonal: sin": (jnp.sin, lambda x: jnp.broadcast_to(jnp.cos(x), (4, 4)), (x4,), 0,
                                {"dense-for-diagonal"}),
    "dense for diagonal: tanh": (jnp.tanh, lambda x: jnp.outer(1 - jnp.tanh(x) ** 2,
                                                                jnp.ones_like(x)), (x4,), 0,
                                 {"dense-for-diagonal"}),
    "wrong argument: x sin y": (lambda x, y: x * jnp.sin(y), lambda x, y: jnp.diag(x * jnp.cos(y)),
                                (x4, y4), 0, {"wrong-argument"}),
    "wrong argument: sum x exp y": (sum_exp, lambda x, y: x * jnp.exp(y), (x4, y4), 0,
                                    {"wrong-argument"}),
    "value for derivative: sigmoid": (jax.nn.sigmoid, diag(jax.nn.sigmoid), (x4,), 0,
                                      {"value-for-derivative"}),
    "value for derivative: tanh affine": (tanh_affine, lambda x: tanh_affine(x)[:, None] * A,
                                          (x4,), 0, {"value-for-derivative"}),
    "missing term: softmax -s s^T": (softmax, d_softmax_wrong, softmax_x, 0,
                                     {"missing-term", "low-rank"}),
    "missing term: layer norm mean": (layer_norm, d_layer_norm_wrong, norm_x, 0,
                                      {"missing-term", "low-rank"}),
    "missing term: product rule": (product, diag(lambda x: jnp.sin(x)), (x4,), 0,
                                   {"missing-term"}),
    "missing term: gru reset gate": (gru, d_gru_wrong, gru_args, 0, {"missing-term"}),
    "sign in one term: product rule": (product, diag(lambda x: jnp.sin(x) - x * jnp.cos(x)),
                                       (x4,), 0, {"sign-in-term"}),
    "sign in one term: softmax": (softmax, lambda x: jnp.diag(softmax(x))
                                  + jnp.outer(softmax(x), softmax(x)), softmax_x, 0,
                                  {"sign-in-term", "low-rank"}),
    "overflow: sigmoid": (jax.nn.sigmoid, diag(sigmoid_grad_naive), (jnp.array([-800.0, 1.0]),),
                          0, {"nonfinite"}),
    "overflow: softmax": (softmax, lambda x: jnp.diag(jnp.exp(x) / jnp.sum(jnp.exp(x)))
                          - jnp.outer(jnp.exp(x), jnp.exp(x)) / jnp.sum(jnp.exp(x)) ** 2,
                          (jnp.array([800.0, 799.0, 1.0]),), 0, {"nonfinite"}),
}


def test_every_planted_slip_is_caught_and_named():
    names = list(PLANTED)
    reports = check_cases([PLANTED[n][:4] for n in names])
    caught = {n: not r.ok for n, r in zip(names, reports)}
    kinds = {n: {s.kind for s in r.slips} for n, r in zip(names, reports)}
    named = {n for n in names if kinds[n] & PLANTED[n][4]}
    wrongly = {n: kinds[n] for n in names if kinds[n] and not kinds[n] & PLANTED[n][4]}
    print(f"planted {len(names)}, caught {sum(caught.values())}, named {len(named)}, "
          f"named wrongly {len(wrongly)}")
    assert all(caught.values()), [n for n, c in caught.items() if not c]
    assert not wrongly, wrongly
    assert set(names) == named, {n: str(reports[names.index(n)]) for n in set(names) - named}


def test_every_kind_of_slip_is_planted_on_two_functions():
    per_kind = {}
    for name, (*_, expected) in PLANTED.items():
        per_kind.setdefault(name.split(":")[0], set()).add(name)
    assert all(len(v) >= 2 for v in per_kind.values()), per_kind


def test_the_report_says_where_the_wrong_entries_are():
    def f(W):
        return jnp.tanh(W @ x3)

    def d(W):  # right except in output row 1
        J = jax.jacfwd(f)(W)
        return J.at[1].multiply(1.5)

    r = mcjax.check(f, d, W3)
    assert not r.ok and r.where, r
    assert "output axis 0 indices 1 (of 3)" in r.where[0], r.where
    params = {"a": x4, "b": W3}
    g = lambda p: jnp.sum(jnp.sin(p["a"])) + jnp.sum(p["b"] ** 2)  # noqa: E731
    wrong = lambda p: {"a": jnp.cos(p["a"]), "b": 2 * p["b"].at[2, 0].set(0.0)}  # noqa: E731
    r = mcjax.check(g, wrong, params)
    assert len(r.where) == 1 and "['b']" in r.where[0] and "1 of 9" in r.where[0], r.where


def test_a_matrix_gradient_of_the_wrong_shape_is_named_as_transposed():
    W = jnp.asarray(rng.standard_normal((3, 4)))
    x = jnp.asarray(rng.standard_normal(4))
    f = lambda W: jnp.sum(jnp.tanh(W @ x))  # noqa: E731
    outer_wrong_way = lambda W: jnp.outer(x, 1 - jnp.tanh(W @ x) ** 2)  # noqa: E731
    with pytest.raises(mcjax.ShapeError, match=r"transposed.*x h\^T"):
        mcjax.check(f, outer_wrong_way, W)


def test_a_factor_that_does_not_explain_the_residual_is_not_named():
    """1.5 times the reference plus noise: no factor may be named."""
    noise = jnp.asarray(rng.standard_normal((4, 4))) * 0.3
    r = mcjax.check(tanh_affine, lambda x: 1.5 * d_tanh_affine(x) + noise, x4)
    assert not r.ok and not any(s.kind == "factor" for s in r.slips), r


# -- ranking: equivalent explanations merged, nothing named inside the tolerance -------------
B5 = jnp.asarray(rng.standard_normal(5))


def cosine_mul(a):  # the norms written as sqrt(sum(a * a)): negating one factor of a * a
    return jnp.dot(a, B5) / (jnp.sqrt(jnp.sum(a * a)) * jnp.linalg.norm(B5))  # zeroes its term


def test_the_missing_projection_is_named_not_a_sign_in_one_factor():
    a = jnp.asarray(rng.standard_normal(5))
    no_projection = lambda a: B5 / (jnp.linalg.norm(a) * jnp.linalg.norm(B5))  # noqa: E731
    report = mcjax.check(cosine_mul, no_projection, a)
    kinds = [s.kind for s in report.slips]
    assert kinds[0] == "missing-term" and "sign-in-term" not in kinds, report.diagnosis
    assert "cosine_mul" not in report.slips[0].sentence and "test_diagnosis.py:" in \
        report.slips[0].sentence  # the user's line


def test_nothing_is_named_by_a_match_inside_the_tolerance():
    # x ~ 1e-6: the derivative for the wrong argument (sin x) is 0 within float32's tolerance,
    # and so is any small multiple of the reference; neither explains the difference
    x = jnp.full(4, 1e-6, jnp.float32)
    y = jnp.asarray(rng.standard_normal(4), jnp.float32)
    report = mcjax.check(lambda x, y: jnp.sum(jnp.sin(x) * y), lambda x, y: jnp.sin(x), x, y)
    assert not report.ok and not any(s.kind in ("factor", "sign") for s in report.slips), \
        report.diagnosis


def test_a_factor_on_one_leaf_is_named_with_the_parameters_name():
    x = jnp.asarray(rng.standard_normal(3))

    def loss(params):
        return jnp.sum(jnp.tanh(params["W"] @ x) * params["b"])

    def grad(params, factor=1.0):
        t = jnp.tanh(params["W"] @ x)
        return {"W": jnp.outer(params["b"] * (1 - t**2), x), "b": factor * t}

    params = {"W": jnp.asarray(rng.standard_normal((2, 3))), "b": jnp.ones(2)}
    report = mcjax.check(loss, lambda p: grad(p, 3.0), params)
    assert report.slips[0].kind == "leaf-factor" and "params['b']" in report.slips[0].sentence
    assert report.where == ("2 of 2 entries of d out / d params['b'] are wrong",)
    # a non-square leaf transposed cannot be compared: the error names it and asks
    with pytest.raises(mcjax.ShapeError, match=r"params\['W'\] is \(3, 2\) where \(2, 3\) was "
                       r"due: its gradient transposed\? expected \(2, 3\), got \(3, 2\)"):
        mcjax.check(loss, lambda p: {**grad(p), "W": grad(p)["W"].T}, params)


def test_a_library_function_is_not_quoted_from_mcjax():
    report = mcjax.check(jax.nn.sigmoid, diag(jax.nn.sigmoid), x4)
    assert report.slips[0].kind == "value-for-derivative"
    # no line of mcjax's (or JAX's) own: at most the caller's, as older JAX attributes
    # jax.nn.sigmoid's equations to the line that calls it
    quoted = re.findall(r"([\w.-]+\.py):\d+", report.slips[0].sentence)
    assert set(quoted) <= {"test_diagnosis.py"}, report.slips[0].sentence


def test_a_failure_to_plant_slips_is_said_not_swallowed(monkeypatch):
    from mcjax._check import _diagnose

    def broken(*args):
        raise NotImplementedError("no rule to rebind this primitive")

    monkeypatch.setattr(_diagnose, "_variants", broken)
    report = mcjax.check(jnp.sin, lambda x: mcjax.Diagonal(-jnp.cos(x)), x4 + 0.25)
    assert [s.kind for s in report.slips] == ["sign", "incomplete"]
    assert "NotImplementedError: no rule to rebind this primitive" in report.slips[-1].sentence


def test_references_that_disagree_name_a_stop_gradient():
    # the hand derivative differentiates through the stop_gradient: finite differences agree
    # with it, JAX's references do not; the report names the suspect and its line
    report = mcjax.check(lambda x: jnp.sum(x * jax.lax.stop_gradient(jnp.sin(x))),
                         lambda x: jnp.sin(x) + x * jnp.cos(x), x4)
    assert not report.ok
    assert report.notes[0].startswith("the references disagree: jax.jacfwd and jax.jacrev "
                                      "depart from finite differences") and \
        "stop_gradient in `jax.lax.stop_gradient(jnp.sin(x))` (test_diagnosis.py:" in \
        report.notes[0]


def test_a_library_functions_value_for_its_derivative_is_named_at_the_users_call():
    c = jnp.asarray(rng.standard_normal(4))
    report = mcjax.check(lambda x: jnp.sum(jax.nn.silu(x) * c), lambda x: jax.nn.silu(x) * c, x4)
    assert report.slips[0].kind == "value-for-derivative"
    assert report.slips[0].sentence.startswith("silu's derivative replaced by silu itself in "
                                               "`jax.nn.silu(x)` (test_diagnosis.py:")


def test_slips_are_planted_around_complex_intermediates():
    f = lambda x: jnp.sum(jnp.abs(jnp.fft.rfft(x)) ** 2)  # noqa: E731
    x = jnp.asarray(rng.standard_normal(8))
    report = mcjax.check(f, lambda x: 2 * jax.grad(f)(x), x)
    assert [s.kind for s in report.slips][:1] == ["factor"], report.diagnosis


def test_factors_come_from_the_outputs_axes_and_products_of_sizes():
    W53 = jnp.asarray(rng.standard_normal((5, 3)))
    f = lambda x: jnp.tanh(W53 @ x)  # noqa: E731  a size 5 only f's output has
    d = lambda x: (1 - f(x) ** 2)[:, None] * W53  # noqa: E731
    assert "N = 5 (axis 0 of f's output)" in mcjax.check(f, lambda x: 5 * d(x), x3).diagnosis[0]
    assert "3 x 5" in mcjax.check(f, lambda x: 15 * d(x), x3).diagnosis[0]
    assert "5/3" in mcjax.check(f, lambda x: d(x) * 5 / 3, x3).diagnosis[0]


def test_a_long_f_says_how_many_places_were_tried(monkeypatch):
    from mcjax._check import _slips

    monkeypatch.setattr(_slips, "MAX_SITES", 2)
    f = lambda x: jnp.sum(jnp.sin(x) * jnp.cos(x) + x * x)  # noqa: E731
    report = mcjax.check(f, lambda x: -jax.grad(f)(x), x4)
    assert report.slips[0].kind == "sign" and report.slips[-1].kind == "incomplete"
    assert report.slips[-1].sentence.startswith("only the first 2 of the ")
