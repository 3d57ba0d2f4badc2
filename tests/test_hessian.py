"""``mcjax.hessian``: the structure found for each loss, and every operation of the structured
operator against ``jax.hessian`` (dense, HVP, damped solve, diagonal, trace, log-determinant)
in float32 and float64; the structures built by hand against their own dense form; errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.flatten_util import ravel_pytree

import mcjax
from mcjax import curvature as C

DTYPES = (jnp.float32, jnp.float64)


def close(got, ref, dtype):
    """``|got - ref| <= atol + rtol * max|ref|`` with mcjax's tolerance for ``dtype``."""
    tol = mcjax.conventions.tolerance(dtype)
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return bool(np.all(np.abs(got - ref) <= tol.atol + tol.rtol * max(scale, 1.0)))


def problems(dtype):
    """``name -> (f, x, expected type, whether log det is defined)``, arrays in ``dtype``."""
    rng = np.random.default_rng(0)
    arr = lambda *shape: jnp.asarray(rng.standard_normal(shape), dtype)  # noqa: E731
    A = arr(6, 6)  # not symmetric: the Hessian of x A x is A + Aᵀ
    X, Xw = arr(12, 6), arr(4, 9)
    y = jnp.asarray(rng.random(12) > 0.5, dtype)
    lam = jnp.asarray(0.1, dtype)

    def logistic(w, X=X, y=y):
        z = X @ w
        return jnp.mean(jax.nn.softplus(z) - y * z) + lam * jnp.sum(w ** 2)

    def mlp(p):
        h = jnp.tanh(Xw @ p["W1"] + p["b1"][None, :])
        return jnp.mean((h @ p["w2"] - 1.0) ** 2)

    S = arr(5, 5)
    S = S @ S.T + 5 * jnp.eye(5, dtype=dtype)
    Z, labels, A8 = arr(4, 5), jnp.asarray([0, 3, 1, 4]), arr(3, 8)

    def batch_cross_entropy(Z):  # mean over rows: one diag(p) − p pᵀ block per row
        return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(Z), labels[:, None], 1))

    return {
        "quadratic": (lambda x: x @ A @ x, arr(6), C.Dense, True),
        "logistic": (logistic, 0.3 * arr(6), C.Gram, True),
        "logistic_wide": (lambda w: logistic(w, Xw, y[:4]), 0.3 * arr(9), C.Gram, True),
        "softmax_ce": (lambda z: -jax.nn.log_softmax(z)[2], arr(7), C.DiagonalPlusLowRank,
                       False),
        "mse": (lambda w: jnp.mean((X @ w - y) ** 2), arr(6), C.Gram, True),
        "linear_layer": (lambda W: jnp.mean((W @ X.T) ** 2), arr(3, 6), C.Kronecker, True),
        "separable_tree": (lambda p: logistic(p["w"]) + jnp.sum(jnp.exp(p["s"])),
                           {"w": arr(6), "s": arr(3)}, C.BlockDiagonal, True),
        "mlp_tree": (mlp, {"W1": 0.5 * arr(9, 4), "b1": arr(4), "w2": arr(4)},
                     C.DiagonalPlusLowRank, False),  # leaves interact; flattened: rank ≤ 40 < 44
        "softmax_batch": (batch_cross_entropy, Z, C.BatchedLowRank, False),
        "row_norms": (lambda Z: jnp.sum(jnp.sqrt(1 + jnp.sum(Z ** 2, axis=1))) + jnp.sum(Z ** 2),
                      arr(3, 8), C.BatchedLowRank, True),
        # a term with no batch beside per-row blocks: one low rank over all 24 entries
        "batched_and_global": (lambda Z: jnp.sum(jax.nn.logsumexp(Z, axis=1))
                               + jnp.tanh(jnp.sum(Z * A8)), arr(3, 8), C.DiagonalPlusLowRank,
                               False),
        # a Gaussian's negative log-likelihood in its mean and log-variance, element by
        # element: a 2×2 grid of diagonals
        "gaussian_nll": (lambda p: jnp.sum(0.5 * (Z - p["mu"]) ** 2 * jnp.exp(-p["s"])
                                           + 0.5 * p["s"]),
                         {"mu": arr(4, 5), "s": 0.3 * arr(4, 5)}, C.DiagonalGrid, True),
        # the pair beside a leaf of its own: one block each, the grid and the Gram form
        "grid_beside_a_leaf": (lambda p: jnp.sum(0.5 * (Z - p["mu"]) ** 2 * jnp.exp(-p["s"])
                                                 + 0.5 * p["s"]) + logistic(p["w"]),
                               {"mu": arr(4, 5), "s": 0.3 * arr(4, 5), "w": 0.3 * arr(6)},
                               C.BlockDiagonal, True),
        "coupled_tree": (lambda p: p["a"] @ A @ p["b"] + jnp.sum(p["a"] ** 4),
                         {"a": arr(6), "b": arr(6)}, C.HessianVectorProducts, True),
        "no_structure": (lambda x: jnp.sum(jnp.linalg.eigvalsh(jnp.outer(x, x) + S) ** 2),
                         arr(5), C.HessianVectorProducts, True),
    }


NAMES = list(problems(jnp.float64))


def reference(f, x):
    flat, unravel = ravel_pytree(x)
    return flat, jax.hessian(lambda v: f(unravel(v)))(flat)


FALLBACKS = ("coupled_tree", "no_structure")  # JAX's own HVPs: float64 is enough


@pytest.mark.parametrize(("name", "dtype"), [
    pytest.param(name, dtype, id=f"{name}-{jnp.dtype(dtype).name}")
    for name in NAMES for dtype in DTYPES if not (name in FALLBACKS and dtype == jnp.float32)])
def test_every_operation_equals_jax_hessian(name, dtype):
    f, x, kind, has_logdet = problems(dtype)[name]
    n = ravel_pytree(x)[0].size
    found = []
    v = jnp.asarray(np.random.default_rng(1).standard_normal(n), dtype)
    damping = 1.0

    @jax.jit  # one program per case: ours and the reference side by side
    def both(x, v):
        H = mcjax.hessian(f)(x)
        found.append(H)
        ref = reference(f, x)[1]
        ours = (H.dense(), H.hvp(v), H.solve(v, damping), H.diagonal(), H.trace(),
                *H.slogdet())
        theirs = (ref, ref @ v, jnp.linalg.solve(ref + damping * jnp.eye(n, dtype=dtype), v),
                  jnp.diagonal(ref), jnp.trace(ref), *jnp.linalg.slogdet(ref))
        return ours, theirs

    ours, theirs = both(x, v)
    assert type(found[0]) is kind, found[0].structure
    assert found[0].shape == (n, n) and ours[0].dtype == dtype
    for what, got, ref in zip(("dense", "hvp", "solve", "diagonal", "trace"), ours, theirs):
        assert close(got, ref, dtype), what
    if has_logdet:
        assert ours[5] == theirs[5] and close(ours[6], theirs[6], dtype), "slogdet"


def test_the_structures_found():
    found: dict = {name: mcjax.hessian(f)(x)
                   for name, (f, x, _, _) in problems(jnp.float64).items()}
    assert found["logistic"].has_diagonal and not found["mse"].has_diagonal  # Xᵀ D X + λI
    assert "solve: n×n" in found["logistic"].structure
    assert "Woodbury, N×N" in found["logistic_wide"].structure  # 4 samples, 9 features
    assert found["softmax_ce"].U.shape == (7, 2)  # diag(p) − p pᵀ, its two sides
    assert [type(b) for b in found["separable_tree"].blocks] == [C.Diagonal, C.Gram]
    assert found["softmax_batch"].U.shape == (4, 5, 2)  # per row: p and its other side
    assert "4 blocks of 5×5" in found["softmax_batch"].structure
    assert found["row_norms"].U.shape == (3, 8, 2)
    assert found["batched_and_global"].U.shape == (24, 8)  # 3 blocks × 2, and 2
    assert found["gaussian_nll"].D.shape == (2, 2, 20)
    assert [type(b) for b in found["grid_beside_a_leaf"].blocks] == [C.DiagonalGrid, C.Gram]
    assert found["gaussian_nll"].structure.endswith("2×2 blocks of size 20")
    assert found["gaussian_nll"].formula().startswith("[0][0]: diag(exp(-s)); [0][1]: diag(")
    assert found["mlp_tree"].U.shape == (44, 40)  # one hidden layer's worth of outputs
    assert found["coupled_tree"].structure == (
        "hvp: no structure found because the argument's leaves ['a'] and ['b'] interact (their "
        "block of the Hessian is not zero); flattened, it has no structure beyond a dense matrix")
    assert "'eigh'" in found["no_structure"].structure
    small = jnp.asarray([[1.0, 2.0], [0.0, 3.0]], jnp.float64)  # written out in the formula
    H = mcjax.hessian(lambda x: x @ small @ x)(jnp.ones(2, jnp.float64))  # compiled: a
    assert type(H) is C.Dense, H.structure  # constant's entries are read without tracing


def test_a_missing_transpose_is_caught():
    """x A x with A not symmetric: the Hessian is A + Aᵀ.  A conversion that dropped the
    transpose (2A, reading both terms of ``(1·) Aᵀ + A (1·)`` as A) fails the comparison with
    ``jax.hessian`` that every case above makes; the structure found passes it."""
    f, x, _, _ = problems(jnp.float64)["quadratic"]
    ref = jax.hessian(f)(x)
    A = jnp.asarray(np.random.default_rng(0).standard_normal((6, 6)), jnp.float64)
    assert close(A + A.T, ref, jnp.float64) and not close(A, A.T, jnp.float64)
    assert not close(C.Dense(2 * A).dense(), ref, jnp.float64)
    assert close(mcjax.hessian(f)(x).dense(), ref, jnp.float64)


def test_operators_pass_through_jit():
    f, x, _, _ = problems(jnp.float64)["logistic"]
    H = mcjax.hessian(f)(x)
    b = jnp.ones(6, jnp.float64)
    step = jax.jit(lambda H, b: H.solve(b, 0.5))(H, b)
    assert close(step, H.solve(b, 0.5), jnp.float64)
    leaves, treedef = jax.tree_util.tree_flatten(H)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    assert type(jax.tree_util.tree_unflatten(treedef, leaves)) is C.Gram


def test_formula_is_the_derived_second_derivative():
    f, x, _, _ = problems(jnp.float64)["mse"]
    H = mcjax.hessian(f)(x)
    J = mcjax.derive(jax.grad(f))(x)
    assert H.formula() == J.formula() and H.latex() == J.latex()
    assert C.Gram(jnp.ones((3, 2)), jnp.ones(3)).formula() == "Xᵀ diag(D) X"


def test_bytes_held_are_the_structure():
    n = 50
    z = jnp.linspace(-1.0, 1.0, n, dtype=jnp.float64)
    H = mcjax.hessian(lambda z: -jax.nn.log_softmax(z)[3])(z)
    assert H.nbytes == (n + 2 * n + 4) * 8 < n * n * 8
    G = C.Gram(jnp.ones((7, 3)), jnp.ones(7), jnp.ones(3))
    assert G.nbytes == (7 * 3 + 7 + 3) * 8
    # a batch of 64 rows of 50 classes: 64 blocks of rank 2, no 3200×128 matrix of zeros
    Z = jnp.linspace(-1.0, 1.0, 64 * n, dtype=jnp.float64).reshape(64, n)
    H = mcjax.hessian(lambda Z: jnp.sum(jax.nn.logsumexp(Z, axis=1)))(Z)
    r = H.U.shape[2]
    assert type(H) is C.BatchedLowRank and r <= 2
    assert H.nbytes == 64 * (n + n * r + r * r) * 8


def hand_built(rng):
    arr = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float64)  # noqa: E731
    sym = lambda M: M @ M.T + M.shape[0] * jnp.eye(M.shape[0], dtype=jnp.float64)  # noqa: E731
    d = jnp.asarray(rng.uniform(1.0, 2.0, 6), jnp.float64)
    return {
        "scaled_identity": C.ScaledIdentity(jnp.asarray(-2.0, jnp.float64), 6),
        "diagonal": C.Diagonal(-d),
        "low_rank": C.DiagonalPlusLowRank(d, arr(6, 2), sym(arr(2, 2))),
        # zeros on the diagonal: Woodbury cannot divide by it, the dense branch runs
        "low_rank_singular_diagonal": C.DiagonalPlusLowRank(d.at[:2].set(0.0), arr(6, 3),
                                                            sym(arr(3, 3))),
        # D >= 0 and d + damping > 0: positive definite, solved by Cholesky; else by LU
        "gram_tall": C.Gram(arr(9, 6), d[:3].repeat(3), d),
        "gram_tall_indefinite": C.Gram(arr(9, 6), -d[:3].repeat(3), d),
        "gram_wide": C.Gram(arr(3, 6), -d[:3], d),
        "gram_wide_positive": C.Gram(arr(3, 6), d[:3], d),
        "batched_low_rank": C.BatchedLowRank(d.reshape(2, 3), arr(2, 3, 1),
                                             jnp.stack([sym(arr(1, 1)), -sym(arr(1, 1))])),
        "batched_low_rank_singular_diagonal": C.BatchedLowRank(
            d.at[4].set(0.0).reshape(2, 3), arr(2, 3, 2), jnp.stack([sym(arr(2, 2))] * 2)),
        "diagonal_grid": C.DiagonalGrid(jnp.stack([jnp.stack([d[:3], d[3:] / 3]),
                                                   jnp.stack([d[3:] / 3, -d[:3]])])),
        "kronecker": C.Kronecker(sym(arr(2, 2)), sym(arr(3, 3))),
        "block_diagonal": C.BlockDiagonal([C.Diagonal(d[:2]), C.Dense(sym(arr(4, 4)))]),
        "sum": C.Sum([C.Diagonal(d), C.Kronecker(sym(arr(2, 2)), sym(arr(3, 3)))]),
    }


@pytest.mark.parametrize("name", list(hand_built(np.random.default_rng(0))))
def test_each_structure_agrees_with_its_dense_form(name, rng):
    """The structure's own solve, slogdet, diagonal and trace against the dense matrix's."""
    H = hand_built(rng)[name]
    M = H.dense()
    assert M.shape == H.shape == (6, 6)
    v = jnp.asarray(rng.standard_normal(6), jnp.float64)
    f64 = jnp.float64
    assert close(H.hvp(v), M @ v, f64)
    for damping in (0.0, 0.7):
        ref = jnp.linalg.solve(M + damping * jnp.eye(6, dtype=f64), v)
        assert close(H.solve(v, damping), ref, f64)
    assert close(H.diagonal(), jnp.diagonal(M), f64) and close(H.trace(), jnp.trace(M), f64)
    sign, logabs = H.slogdet()
    ref_sign, ref_logabs = jnp.linalg.slogdet(M)
    assert sign == ref_sign and close(logabs, ref_logabs, f64)
    assert bool(jnp.isnan(H.logdet())) == bool(ref_sign <= 0)


def test_to_lineax_applies_the_hvp(rng):
    lx = pytest.importorskip("lineax")
    H = hand_built(rng)["low_rank"]
    v = jnp.asarray(rng.standard_normal(6), jnp.float64)
    op = H.to_lineax()
    assert lx.is_symmetric(op) and close(op.mv(v), H.hvp(v), jnp.float64)


def test_bad_input_gets_one_sentence():
    with pytest.raises(mcjax.ShapeError, match=r"f returned an array of shape \(3,\); expected a "
                       r"scalar"):
        mcjax.hessian(lambda x: x ** 2)(jnp.ones(3))
    with pytest.raises(mcjax.DtypeError, match=r"args\[0\] has dtype int32; expected a real "
                       "floating dtype"):
        mcjax.hessian(lambda x: jnp.sum(x))(jnp.ones(3, jnp.int32))
    with pytest.raises(TypeError, match=r"argnums='0'; expected an int or a non-empty tuple"):
        mcjax.hessian(lambda x: jnp.sum(x), argnums="0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="f is"):
        mcjax.hessian(3)  # type: ignore[arg-type]
    logits, W, h, _ = _dense_layer_problem(jnp.float64)
    with pytest.raises(mcjax.ShapeError, match="mcjax.gauss_newton: loss returned .*; expected a "
                       "scalar"):
        mcjax.gauss_newton(logits, lambda z: z ** 2)(W, h)
    H = mcjax.hessian(lambda x: jnp.sum(x ** 3))(jnp.ones(3))
    with pytest.raises(ValueError, match=r"v has shape \(2,\); expected shape \(3,\)"):
        H.hvp(jnp.ones(2))


def _dense_layer_problem(dtype):
    rng = np.random.default_rng(2)
    h = jnp.asarray(rng.standard_normal((6, 8)), dtype)  # a batch of hidden activations
    W = jnp.asarray(rng.standard_normal((3, 8)), dtype)
    labels = jnp.asarray(rng.integers(0, 3, 6), jnp.int32)

    def logits(W, h):
        return h @ W.T

    def cross_entropy(z, labels):
        return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(z), labels[:, None], axis=1))

    def squared_error(z, t):
        return jnp.mean((z - t) ** 2)

    return logits, W, h, {"cross_entropy": (cross_entropy, (labels,), C.DiagonalPlusLowRank),
                          "squared_error": (squared_error, (jnp.ones((6, 3), dtype),), C.Gram)}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_gauss_newton_is_j_transpose_h_j(loss, dtype):
    """One dense layer's Gauss-Newton block, Jᵀ H_L J, against JAX's J (jax.jacfwd) and H_L
    (jax.hessian); leaving H_L out (Jᵀ J) is caught by the same comparison."""
    logits, W, h, losses = _dense_layer_problem(dtype)
    fn, loss_args, kind = losses[loss]
    J = jax.jacfwd(logits)(W, h).reshape(18, 24)
    HL = jax.hessian(lambda z: fn(z, *loss_args))(logits(W, h)).reshape(18, 18)
    ref = J.T @ HL @ J
    b = jnp.asarray(np.random.default_rng(3).standard_normal(24), dtype)
    found: list = []

    @jax.jit  # one program: the operator and all it computes
    def ours(W, h, loss_args):
        G = mcjax.gauss_newton(logits, fn)(W, h, loss_args=loss_args)
        assert isinstance(G, C.GaussNewton)
        found.extend([G, type(G.as_matrix_form())])
        return G.dense(), G.hvp(b), G.diagonal(), G.solve(b, 0.5)

    dense, hvp, diag, step = ours(W, h, loss_args)
    assert type(found[0]) is C.GaussNewton, found[0].structure
    assert found[1] is kind
    assert close(dense, ref, dtype) and not close(J.T @ J, ref, dtype)
    assert close(hvp, ref @ b, dtype) and close(diag, jnp.diagonal(ref), dtype)
    assert close(step, jnp.linalg.solve(ref + 0.5 * jnp.eye(24, dtype=dtype), b), dtype)


def test_gauss_newton_takes_a_string_among_the_loss_args():
    """``loss_args`` that are no arrays (a loss's name) are passed to ``loss`` as they are and
    key the compiled program: another name is another H_L, never the first one's."""
    logits, W, h, _ = _dense_layer_problem(jnp.float64)
    t = jnp.ones((6, 3), jnp.float64)

    def loss(z, t, kind):
        return jnp.mean((z - t) ** 2) if kind == "mse" else jnp.mean(jnp.cosh(z - t))

    J = jax.jacfwd(logits)(W, h).reshape(18, 24)
    for kind in ("mse", "cosh", "mse"):
        G = mcjax.gauss_newton(logits, loss)(W, h, loss_args=(t, kind))
        HL = jax.hessian(loss)(logits(W, h), t, kind).reshape(18, 18)
        assert close(G.dense(), J.T @ HL @ J, jnp.float64), kind


def test_a_python_float_among_the_data_is_traced():
    """A Python float beside the variables (a scale) is data, as a JAX array would be: the
    Hessian follows its value (it failed: a Python number has no ``dtype``)."""
    x = jnp.arange(3.0, dtype=jnp.float64)
    for s in (2.0, 3.0):
        H = mcjax.hessian(lambda x, s: s * jnp.sum(x ** 4))(x, s)
        assert close(H.dense(), jnp.diag(12 * s * x ** 2), jnp.float64)
    logits, W, h, _ = _dense_layer_problem(jnp.float64)
    J = jax.jacfwd(logits)(W, h).reshape(18, 24)
    G = mcjax.gauss_newton(logits, lambda z, s: s * jnp.mean(z ** 2))(W, h, loss_args=(2.0,))
    assert close(G.dense(), J.T @ J * 4.0 / 18, jnp.float64)


def test_gauss_newton_over_a_parameter_tree():
    logits, W, h, losses = _dense_layer_problem(jnp.float64)
    b = jnp.linspace(-1.0, 1.0, 3, dtype=jnp.float64)
    fn, loss_args, _ = losses["cross_entropy"]

    def layer(p, h):
        return logits(p["W"], h) + p["b"][None, :]

    params = {"W": W, "b": b}
    G = mcjax.gauss_newton(layer, fn)(params, h, loss_args=loss_args)
    flat, unravel = ravel_pytree(params)
    J = jax.jacfwd(lambda q: layer(unravel(q), h))(flat).reshape(18, 27)
    HL = jax.hessian(lambda z: fn(z, *loss_args))(layer(params, h)).reshape(18, 18)
    v = jnp.asarray(np.random.default_rng(4).standard_normal(27), jnp.float64)
    assert G.shape == (27, 27) and close(G.hvp(v), J.T @ (HL @ (J @ v)), jnp.float64)
    assert close(G.dense(), J.T @ HL @ J, jnp.float64)


_A = np.random.default_rng(3).normal(size=(4, 4)) + 4 * np.eye(4)
SECOND_ORDER_THROUGH_LIBRARY_CALLS = {  # JAX's backward pass calls functions of the same names
    "solve": lambda x: jnp.sum(jnp.linalg.solve(jnp.asarray(_A) + jnp.diag(x**2), x) ** 2),
    "det": lambda x: jnp.linalg.det(jnp.asarray(_A) + jnp.outer(x, x)),
    "slogdet": lambda x: jnp.linalg.slogdet(jnp.asarray(_A) + jnp.outer(x, x))[1],
    "inv": lambda x: jnp.sum(jnp.linalg.inv(jnp.asarray(_A) + jnp.diag(x)) ** 2),
    "cumprod": lambda x: jnp.sum(jnp.cumprod(x)),  # an empty intermediate in its scan
}


@pytest.mark.parametrize("name", list(SECOND_ORDER_THROUGH_LIBRARY_CALLS))
def test_derive_of_the_gradient_through_linalg_and_scans_equals_jax_hessian(name):
    """A rule read from a call's name (``jit:solve``) checks the signature it assumes: the
    gradient's program calls other functions of those names."""
    f = SECOND_ORDER_THROUGH_LIBRARY_CALLS[name]
    x = jnp.asarray([0.5, 1.2, -0.7, 0.9], jnp.float64)
    want = jax.hessian(f)(x)
    J = mcjax.derive(jax.grad(f))(x)  # derived eagerly, as a user calls it
    # its dense form in one compiled program: eagerly, J.dense() of det's gradient compiles
    # ~130 one-operation programs (seconds), for the same values
    chex.assert_trees_all_close(jax.jit(lambda J: J.dense())(J), want, rtol=1e-9, atol=1e-9)
    chex.assert_trees_all_close(mcjax.hessian(f)(x).dense(), want, rtol=1e-9, atol=1e-9)


CONTROL_FLOW = {  # name -> (f, the kind found); JAX's own Hessian of each as the reference
    "cond": (lambda x: lax.cond(jnp.sum(x) > 0, lambda y: jnp.sum(jnp.sin(y) * y),
                                lambda y: jnp.sum(y ** 3), x), C.Diagonal),
    # the branch not taken has no finite derivative at x: weighted by 0, not 0 · inf = NaN
    "cond, the other branch not finite": (lambda x: jnp.sum(lax.cond(
        x[0] > 0, lambda y: y * x[1], lambda y: y / (1 + x[1] ** 2), x) ** 2), C.Dense),
    "scan": (lambda x: lax.scan(lambda c, y: (c * jnp.tanh(y) + y ** 2, c),
                                jnp.ones((), x.dtype), x)[0], C.Dense),
    "fori_loop": (lambda x: jnp.sum(lax.fori_loop(0, 3, lambda i, c: jnp.sin(c) * x, x)),
                  C.Dense),
    # no reverse mode through a while loop (jax.hessian raises): forward over forward
    "while_loop": (lambda x: jnp.sum(lax.while_loop(
        lambda c: c[0] < 3, lambda c: (c[0] + 1, jnp.sin(c[1]) * x), (0, x))[1]),
        C.HessianVectorProducts),
}


@pytest.mark.parametrize("name", list(CONTROL_FLOW))
def test_control_flow_in_the_gradient(name):
    f, kind = CONTROL_FLOW[name]
    dtype = DTYPES[list(CONTROL_FLOW).index(name) % 2]  # half of them in each dtype
    x = jnp.asarray([0.3, -0.5, 0.8], dtype)
    H = mcjax.hessian(f)(x)
    assert type(H) is kind, H.structure
    ref = jax.jacfwd(jax.jacfwd(f))(x)  # forward over forward: defined through all four
    v = jnp.asarray([1.0, -2.0, 0.5], dtype)
    assert close(H.dense(), ref, dtype) and close(H.hvp(v), ref @ v, dtype)
    assert close(H.solve(v, 3.0), jnp.linalg.solve(ref + 3.0 * jnp.eye(3, dtype=dtype), v),
                 dtype)
    if kind is C.HessianVectorProducts:
        assert H.structure.startswith("hvp: no structure found because JAX's reverse mode "
                                      "fails on f (ValueError: Reverse-mode differentiation")
        assert H.structure.endswith("; its products are forward over forward"), H.structure
        with pytest.raises(ValueError, match="Reverse-mode differentiation does not work"):
            jax.hessian(f)(x)


def test_a_function_jax_cannot_differentiate_twice_is_refused_in_one_sentence():
    """lax.igamma's derivative with respect to a calls igamma_grad_a, which has no rule."""
    f = lambda a: jnp.sum(lax.igamma(a, jnp.ones(3, a.dtype)))  # noqa: E731
    a = jnp.asarray([0.5, 1.0, 2.0], jnp.float64)
    with pytest.raises(NotImplementedError, match=r"^mcjax.hessian: JAX defines no second "
                       r"derivative of f here: its derivative calls 'igamma_grad_a', which has "
                       r"no differentiation rule in JAX \(jax.hessian raises too\)"):
        mcjax.hessian(f)(a)
    with pytest.raises(NotImplementedError, match="igamma_grad_a"):
        jax.hessian(f)(a)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_where_jax_reverse_mode_fails_the_fallback_goes_forward(dtype):
    """lax.pad of a constant with respect to its padding value: JAX's transpose rule sums
    None (jax.grad raises a TypeError); the Hessian is still exact, forward over forward."""
    def f(v):
        return jnp.sum(lax.pad(jnp.ones((2, 3), v.dtype), v, ((1, 0, 1), (2, 1, 0))) ** 3)

    v = jnp.asarray(0.7, dtype)
    with pytest.raises(TypeError):
        jax.grad(f)(v)
    H = mcjax.hessian(f)(v)
    ref = jax.jacfwd(jax.jacfwd(f))(v).reshape(1, 1)
    assert type(H) is C.HessianVectorProducts and H.mode == "forward", H.structure
    assert close(H.dense(), ref, dtype) and not close(1.1 * H.dense(), ref, dtype)
    assert close(H.hvp(jnp.ones(1, dtype)), ref[0], dtype)


def test_vectors_shaped_as_the_argument_come_back_so():
    """With a layout (``mcjax.hessian`` sets it), ``hvp`` and ``solve`` take a vector shaped as
    the argument (a parameter dict) and give one back; flat vectors stay flat; ``ravel`` and
    ``unravel`` convert; a vector of another shape is refused in one sentence naming both."""
    from mcjax._curvature._operator import Layout, with_meta

    params = {"W": jnp.ones((2, 3), jnp.float64), "b": jnp.ones(2, jnp.float64)}
    d = jnp.arange(1.0, 9.0, dtype=jnp.float64)  # b's 2 entries, then W's 6 (leaf order)
    H = with_meta(C.Diagonal(d), layout=Layout.of(params))
    v = {"W": jnp.full((2, 3), 2.0, jnp.float64), "b": jnp.asarray([1.0, -1.0], jnp.float64)}
    flat = H.ravel(v)
    assert flat.shape == (8,) and close(flat, ravel_pytree(v)[0], jnp.float64)
    out = H.hvp(v)
    assert set(out) == {"W", "b"} and out["W"].shape == (2, 3)
    chex.assert_trees_all_close(out, H.unravel(d * flat))
    step = H.solve(v, 0.5)
    chex.assert_trees_all_close(step, H.unravel(flat / (d + 0.5)))
    assert H.hvp(flat).shape == (8,)  # flat in, flat out
    assert jax.tree_util.tree_structure(H.unravel(H.diagonal())) == \
        jax.tree_util.tree_structure(params)
    with pytest.raises(ValueError, match=r"v has shape \(7,\); expected shape \(8,\), the "
                       r"flattened argument, or a pytree .* shaped as the argument"):
        H.hvp(jnp.ones(7, jnp.float64))
    with pytest.raises(ValueError, match=r"b is dict .*expected a vector of shape \(8,\)"):
        H.solve({"W": jnp.ones((3, 2), jnp.float64), "b": jnp.ones(2, jnp.float64)})
    assert C.Diagonal(d).unravel(flat) is not None  # no layout: the flat vector itself


_SCALE = 1.0


def _scaled(x):
    return _SCALE * jnp.sum(x**2)


def test_an_edit_of_what_f_reads_is_a_new_hessian_and_a_repeat_compiles_nothing():
    """The compiled derivation is keyed on what ``f`` traces to, never on ``f`` itself: a
    changed global it reads gives the new Hessian (a cache keyed on the function would answer
    with the old one); the same program again compiles nothing; a Gram form holds the
    caller's own data matrix, not a copy."""
    global _SCALE
    from mcjax._program._compile import PROGRAMS

    x = jnp.ones(3, jnp.float64)
    _SCALE = 1.0
    assert float(mcjax.hessian(_scaled)(x).dense()[0, 0]) == 2.0
    compiled = PROGRAMS.compiled
    assert float(mcjax.hessian(_scaled)(2 * x).dense()[0, 0]) == 2.0
    assert PROGRAMS.compiled == compiled
    _SCALE = 5.0
    try:
        assert float(mcjax.hessian(_scaled)(x).dense()[0, 0]) == 10.0
    finally:
        _SCALE = 1.0

    X = jnp.asarray(np.random.default_rng(0).standard_normal((30, 4)), jnp.float64)
    y = jnp.asarray(np.random.default_rng(1).random(30) > 0.5, jnp.float64)

    def logistic(w, X, y):
        z = X @ w
        return jnp.mean(jax.nn.softplus(z) - y * z)

    H = mcjax.hessian(logistic)(jnp.zeros(4, jnp.float64), X, y)
    assert isinstance(H, C.Gram) and H.X is X
    G = mcjax.gauss_newton(lambda w, X: X @ w, lambda z, y: _SCALE * jnp.mean((z - y) ** 2))
    first = G(jnp.zeros(4, jnp.float64), X, loss_args=(y,)).dense()
    _SCALE = 3.0
    try:
        chex.assert_trees_all_close(G(jnp.zeros(4, jnp.float64), X, loss_args=(y,)).dense(),
                                    3.0 * first)
    finally:
        _SCALE = 1.0
