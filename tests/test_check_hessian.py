"""``mcjax.check_hessian``: right second derivatives pass in float32 and float64 (no false
alarm), planted slips fail and are named, operators and HVP functions plug in, kinks of the
gradient are named, bad input gets one sentence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import mcjax

rng = np.random.default_rng(21)
DTYPES = (jnp.float32, jnp.float64)


# -- the problems and their hand-derived second derivatives ----------------------------------
def cross_entropy(z, labels):
    return mcjax.softmax_cross_entropy(z, labels)


def cross_entropy_hessian(z, labels, *, outer=1.0, factor=1.0):
    """Per row (diag(p) - p p^T) / B, zero across rows: shape z.shape + z.shape."""
    p = jax.nn.softmax(z)
    blocks = jax.vmap(jnp.diag)(p) - outer * p[:, :, None] * p[:, None, :]
    B = z.shape[0]
    return factor * jnp.einsum("bij,bc->bicj", blocks / B, jnp.eye(B, dtype=z.dtype))


def mse(y_hat, y):
    return mcjax.mse(y_hat, y)


def mse_hessian(y_hat, y, *, factor=2.0):
    return factor / y.size * jnp.eye(y.size, dtype=y.dtype).reshape(y.shape + y.shape)


def logistic_regression(w, X, y):
    return mcjax.logistic_loss(X @ w, y)


def logistic_hessian(w, X, y, *, factor=1.0):
    """X^T diag(s (1 - s)) X / N."""
    s = jax.nn.sigmoid(X @ w)
    return factor * X.T @ (X * (s * (1 - s))[:, None]) / X.shape[0]


LABELS = jnp.array([0, 2, 1], jnp.int32)


def mlp(params, X):
    return jnp.tanh(X @ params["W1"].T + params["b1"][None, :]) @ params["W2"].T


def mlp_loss(logits):
    return mcjax.softmax_cross_entropy(logits, jnp.array([0, 1, 1, 0, 1], jnp.int32))


def mlp_problem(dtype):
    params = {"W1": jnp.asarray(rng.standard_normal((4, 3)) / 2, dtype),
              "b1": jnp.asarray(rng.standard_normal(4), dtype),
              "W2": jnp.asarray(rng.standard_normal((2, 4)) / 2, dtype)}
    return params, jnp.asarray(rng.standard_normal((5, 3)), dtype)


@jax.jit
def mlp_matrices(params, X):
    """The flat Hessian and Gauss-Newton matrix of mlp_loss(mlp(params, X))."""
    flat, unravel = ravel_pytree(params)
    H = jax.hessian(lambda t: mlp_loss(mlp(unravel(t), X)))(flat)
    J = jax.jacfwd(lambda t: mlp(unravel(t), X).ravel())(flat)
    out = mlp(params, X)
    HL = jax.hessian(lambda o: mlp_loss(o.reshape(out.shape)))(out.ravel())
    return H, J.T @ HL @ J


def arrays(dtype, *shapes):
    return [jnp.asarray(rng.standard_normal(s), dtype) for s in shapes]


# -- right second derivatives pass -------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_right_second_derivatives_pass(dtype):
    z, = arrays(dtype, (3, 4))
    y_hat, y = arrays(dtype, (2, 3), (2, 3))
    w, X = arrays(dtype, (3,), (8, 3))
    labels = jnp.asarray(rng.integers(0, 2, 8), dtype)
    params, Xm = mlp_problem(dtype)
    H, G = mlp_matrices(params, Xm)
    if dtype == jnp.float64:  # the params dict's Hessian in jax.hessian's nested structure
        H = jax.jit(jax.hessian(lambda p, X: mlp_loss(mlp(p, X))))(params, Xm)
    reports = {
        "softmax cross-entropy": mcjax.check_hessian(cross_entropy, cross_entropy_hessian, z,
                                                     LABELS),
        "mse": mcjax.check_hessian(mse, mse_hessian, y_hat, y),
        "logistic regression": mcjax.check_hessian(logistic_regression, logistic_hessian, w, X,
                                                   labels),
        "mlp, params dict": mcjax.check_hessian((mlp, mlp_loss), H, params, Xm),
        "mlp, Gauss-Newton": mcjax.check_hessian((mlp, mlp_loss), G, params, Xm,
                                                 kind="gauss_newton"),
    }
    failed = {name: str(r) for name, r in reports.items() if not r.ok}
    assert not failed, failed
    assert all(r.mode == "full" and r.dtype == jnp.dtype(dtype).name for r in reports.values())
    assert mcjax.assert_hessian(mse, mse_hessian, y_hat, y).ok


# -- planted slips are caught and named ----------------------------------------------------------
def _slip(report):
    assert not report.ok
    return report.slips[0].kind, report.diagnosis[0]


def test_slips_in_softmax_cross_entropy_are_named():
    z, = arrays(jnp.float32, (3, 4))
    kind, sentence = _slip(mcjax.check_hessian(
        cross_entropy, lambda z, y: cross_entropy_hessian(z, y, outer=0.0), z, LABELS))
    assert kind == "missing-term" and "p p^T" in sentence
    kind, sentence = _slip(mcjax.check_hessian(
        cross_entropy, lambda z, y: cross_entropy_hessian(z, y, factor=-1.0), z, LABELS))
    assert kind == "sign" and "sign is flipped" in sentence


@pytest.mark.parametrize(("factor", "named"), [(1.0, "1/2"), (4.0, "2")], ids=["half", "double"])
def test_a_factor_in_mse_is_named(factor, named):
    y_hat, y = arrays(jnp.float32, (2, 3), (2, 3))
    def wrong(*a):
        return mse_hessian(*a, factor=factor)

    kind, sentence = _slip(mcjax.check_hessian(mse, wrong, y_hat, y))
    assert kind == "factor" and f"times {named}" in sentence
    with pytest.raises(mcjax.DerivativeError, match=f"times {named}"):
        mcjax.assert_hessian(mse, wrong, y_hat, y)


def test_gauss_newton_where_the_hessian_was_due_and_the_reverse():
    params, Xm = mlp_problem(jnp.float32)
    H, G = mlp_matrices(params, Xm)
    kind, sentence = _slip(mcjax.check_hessian((mlp, mlp_loss), G, params, Xm))
    assert kind == "gauss-newton-for-hessian" and "J^T H_L J" in sentence
    kind, _ = _slip(mcjax.check_hessian((mlp, mlp_loss), H, params, Xm, kind="gauss_newton"))
    assert kind == "hessian-for-gauss-newton"


def test_an_asymmetric_hessian_is_named_with_its_blocks():
    params, Xm = mlp_problem(jnp.float32)
    H, _ = mlp_matrices(params, Xm)
    broken = H.at[:12, 16:].set(0.0)  # the block [W1][W2] left out, [W2][W1] kept
    report = mcjax.check_hessian((mlp, mlp_loss), broken, params, Xm)
    kind, sentence = _slip(report)  # named as the model names its argument
    assert kind == "asymmetric" and "params['W1']" in sentence and "params['W2']" in sentence
    assert report.wrt == "params" and "/ d params['" in report.worst[0].label, report
    A = jnp.array([[1.0, 2.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0]], jnp.float32)
    kind, sentence = _slip(mcjax.check_hessian(lambda x, A: x @ A @ x, lambda x, A: 2 * A,
                                               jnp.ones(3, jnp.float32), A))
    assert kind == "asymmetric" and "symmetric part (H + H^T)/2 is right" in sentence


def test_kronecker_factors_in_the_wrong_order_are_named():
    """A dense layer's block sum_b H_b (x) x_b x_b^T written (x_b x_b^T) (x) H_b."""
    W, X = arrays(jnp.float32, (3, 4), (6, 4))
    labels = jnp.array([0, 1, 2, 0, 1, 2], jnp.int32)

    def layer_loss(W, X):
        return mcjax.softmax_cross_entropy(X @ W.T, labels)

    def block(W, X, swapped=False):
        p = jax.nn.softmax(X @ W.T)
        Hb = (jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :]) / X.shape[0]
        xx = X[:, :, None] * X[:, None, :]
        if swapped:
            return jnp.einsum("bjl,bik->jilk", xx, Hb).reshape(12, 12)
        return jnp.einsum("bik,bjl->ijkl", Hb, xx)

    assert mcjax.check_hessian(layer_loss, block, W, X).ok
    kind, sentence = _slip(mcjax.check_hessian(layer_loss, lambda W, X: block(W, X, True), W, X))
    assert kind == "transposed" and "Kronecker factors in the wrong order" in sentence


# -- operators, HVP functions, large problems ------------------------------------------------
class Gram:
    """$c X^T \\operatorname{diag}(d) X / N$ as a structured operator (duck-typed)."""

    def __init__(self, X, d, c=1.0):
        self.X, self.d, self.c = X, d, c

    def hvp(self, v):
        return self.c * self.X.T @ (self.d * (self.X @ v)) / self.X.shape[0]

    def dense(self):
        return self.c * self.X.T @ (self.X * self.d[:, None]) / self.X.shape[0]


class DenseOnly:
    def __init__(self, H):
        self.H = H

    def dense(self):
        return self.H


def gram(w, X, y, c=1.0):
    s = jax.nn.sigmoid(X @ w)
    return Gram(X, s * (1 - s), c)


def test_structured_operators_plug_in_by_duck_typing():
    w, X = arrays(jnp.float32, (5,), (20, 5))
    y = jnp.asarray(rng.integers(0, 2, 20), jnp.float32)
    assert mcjax.check_hessian(logistic_regression, gram(w, X, y), w, X, y).ok  # .hvp
    assert mcjax.check_hessian(logistic_regression, DenseOnly(logistic_hessian(w, X, y)), w, X,
                               y).ok  # .dense()
    assert mcjax.check_hessian(logistic_regression, gram, w, X, y).ok  # H(*args) -> operator


def test_mcjax_hessian_and_gauss_newton_operators_plug_in():
    """mcjax.hessian's and mcjax.gauss_newton's operators act on the flattened params dict
    (shape (n, n)): checked by their flat products."""
    params, Xm = mlp_problem(jnp.float32)
    H = mcjax.hessian(lambda p, X: mlp_loss(mlp(p, X)))(params, Xm)
    assert tuple(H.shape) == (24, 24)
    assert mcjax.check_hessian(lambda p, X: mlp_loss(mlp(p, X)), H, params, Xm).ok
    G = mcjax.gauss_newton(mlp, mlp_loss)(params, Xm)
    kind, _ = _slip(mcjax.check_hessian((mlp, mlp_loss), G, params, Xm))
    assert kind == "gauss-newton-for-hessian"


def test_a_large_problem_is_checked_by_hvps_and_a_factor_is_named():
    """n = 300 > 256: fast mode, u^T H and u^T H v against JAX's VJP of the gradient."""
    w, X = arrays(jnp.float32, (300,), (40, 300))
    X = X / jnp.sqrt(jnp.float32(300))
    y = jnp.asarray(rng.integers(0, 2, 40), jnp.float32)
    report = mcjax.check_hessian(logistic_regression, gram, w, X, y)
    assert report.ok and report.mode == "fast", report
    fd = {c.reference: c for c in report.comparisons}["finite differences (H w)"]
    assert fd.ok and fd.compared > 0  # the float64 reference independent of JAX's products
    wrong = mcjax.check_hessian(logistic_regression, lambda *a: gram(*a, c=2.0), w, X, y)
    kind, sentence = _slip(wrong)
    assert kind == "factor" and "times 2" in sentence
    assert not {c.reference: c for c in wrong.comparisons}["finite differences (H w)"].ok


# -- kinks ------------------------------------------------------------------------------------
def test_a_kink_of_the_gradient_is_named():
    """ReLU's second derivative is 0 on either side of z = 0 and undefined there."""
    x = jnp.array([1.0, 0.0, -2.0], jnp.float32)

    def f(x):
        return 0.5 * jnp.sum(jax.nn.relu(x) ** 2)

    report = mcjax.check_hessian(f, lambda x: jnp.diag((x > 0).astype(x.dtype)), x)
    assert report.ok, report
    assert any("kink of f's gradient along 1 coordinate (x[1])" in n for n in report.notes)
    away = mcjax.check_hessian(f, lambda x: jnp.diag((x > 0).astype(x.dtype)), x + 0.5)
    assert away.ok and not any("kink" in n for n in away.notes)


# -- bad input ----------------------------------------------------------------------------------
x3 = jnp.ones(3)
params2 = {"a": jnp.ones(2), "b": jnp.ones((2, 2))}


def cube(x):
    return jnp.sum(x ** 3)


def squares(p):
    return jnp.sum(p["a"] ** 2) + jnp.sum(p["b"] ** 2)


BAD = [
    (lambda: mcjax.check_hessian(cube, jnp.ones(3), x3), mcjax.ShapeError,
     r"H has shape \(3,\); expected x.shape \+ x.shape = \(3, 3\)"),
    (lambda: mcjax.check_hessian(cube, lambda x: jnp.ones((3, 2)), x3), mcjax.ShapeError,
     r"has shape \(3, 2\); expected x.shape \+ x.shape = \(3, 3\)"),
    (lambda: mcjax.check_hessian(squares, jnp.ones((5, 5)), params2), mcjax.ShapeError,
     r"H has shape \(5, 5\); expected jax.hessian's structure .* or a flat \(n, n\) = \(6, 6\)"),
    (lambda: mcjax.check_hessian(squares, {"a": jnp.ones(2)}, params2), mcjax.ShapeError,
     r"H is a dict; expected jax.hessian's structure"),
    (lambda: mcjax.check_hessian(lambda x: x ** 2, jnp.ones((3, 3)), x3), mcjax.ShapeError,
     r"f returns shape \(3,\); expected a scalar"),
    (lambda: mcjax.check_hessian(cube, jnp.ones((3, 3), jnp.int32), x3), mcjax.DtypeError,
     "H has dtype int32; expected a floating dtype"),
    (lambda: mcjax.check_hessian(cube, jnp.eye(3), x3, kind="hess"), ValueError,
     "kind='hess'; expected one of 'hessian', 'hvp', 'gauss_newton'"),
    (lambda: mcjax.check_hessian(cube, jnp.eye(3), x3, argnums=(0,)),  # pyright: ignore[reportArgumentType]
     TypeError,
     r"argnums=\(0,\); expected one int"),
    (lambda: mcjax.check_hessian(cube, jnp.eye(3), x3, kind="gauss_newton"), TypeError,
     r"kind='gauss_newton' needs f as a pair \(model, loss\)"),
    (lambda: mcjax.check_hessian(cube, jnp.eye(3), x3, points=3), ValueError,
     "points=3, but H is a value at args"),
    (lambda: mcjax.check_hessian(cube, jnp.eye(3), x3, kind="hvp"), TypeError,
     "H is a jax.Array of shape \\(3, 3\\), not a function; expected an HVP function"),
    (lambda: mcjax.check_hessian(cube, lambda v, x: v, x3), TypeError,
     r"H\(\*args\) raised TypeError: .*pass kind='hvp'"),
]


@pytest.mark.parametrize(("call", "error", "words"), BAD, ids=[w[:24] for _, _, w in BAD])
def test_bad_input_gets_one_sentence(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_the_cli_checks_a_second_derivative(tmp_path, capsys):
    from mcjax.__main__ import main

    (tmp_path / "quad.py").write_text(
        "import jax.numpy as jnp\n"
        "A = jnp.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 1.0]], jnp.float64)\n"
        "def f(x):\n    return x @ A @ x + jnp.sum(jnp.sin(x))\n"
        "def hessian(x):\n    return A + A.T - jnp.diag(jnp.sin(x))\n"
        "def wrong(x):\n    return 2 * A - jnp.diag(jnp.sin(x))\n"
        "def hvp(v, x):\n    return (A + A.T) @ v - jnp.sin(x) * v\n"
        "def gradient(x):\n    return (A + A.T) @ x + jnp.cos(x)\n")
    quad, f64 = str(tmp_path / "quad.py"), ["--dtype", "float64"]
    assert main(["check", f"{quad}:f", f"{quad}:hessian", "--shapes", "3", "--second",
                 "hessian", *f64]) == 0
    assert main(["check", f"{quad}:f", f"{quad}:hvp", "--shapes", "3", "--second", "hvp", *f64]) == 0
    assert main(["check", f"{quad}:f", f"{quad}:wrong", "--shapes", "3", "--second",
                 "hessian", *f64]) == 1
    assert "asymmetric" in capsys.readouterr().out
    assert main(["check", f"{quad}:f", f"{quad}:hvp", "--shapes", "3", "--second",
                 "hessian", *f64]) == 2
    assert "pass kind='hvp'" in capsys.readouterr().err
    assert main(["check", f"{quad}:f", f"{quad}:gradient", "--shapes", "3", "--second",
                 "hessian", *f64]) == 1  # a wrong H: a verdict, as mcjax check's wrong shapes
    assert "mcjax check --second: FAIL: gradient(*args) has shape (3,)" in capsys.readouterr().err


def test_a_linear_solve_in_f():
    """``jnp.linalg.solve`` (a ``custom_linear_solve`` in its gradient): the checker's rounding
    reading pushed JAX's symbolic zeros into the primitive and crashed; the right Hessian
    passes, a wrong one fails."""
    A = jnp.asarray([[3.0, 1.0], [0.5, 2.0]], jnp.float64)

    def f(b):
        return jnp.sum(jnp.linalg.solve(A, b) ** 2)

    b = jnp.asarray([1.0, -1.0], jnp.float64)
    assert mcjax.check_hessian(f, jax.hessian(f), b).ok
    assert not mcjax.check_hessian(f, lambda b: 1.1 * jax.hessian(f)(b), b).ok
