"""``mcjax.hessian`` and ``mcjax.gauss_newton`` on the arguments ``jax.hessian`` takes: several
arguments at once (``argnums`` a tuple, in its order), models holding functions, Python ints
and strings, integer arrays (static or data, never variables); bad ``argnums`` in one
sentence.  Every operator against ``jax.hessian`` of the same function of the float leaves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import mcjax
from mcjax import curvature as C


def close(got, ref, dtype):
    """``|got - ref| <= atol + rtol * max|ref|`` with mcjax's tolerance for ``dtype``."""
    tol = mcjax.conventions.tolerance(dtype)
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return got.shape == ref.shape and bool(
        np.all(np.abs(got - ref) <= tol.atol + tol.rtol * max(scale, 1.0)))


def blocks_as_matrix(R, sizes):
    """``jax.hessian``'s nested blocks (argnums a tuple) as one ``(n, n)`` matrix."""
    return jnp.block([[jnp.reshape(R[i][j], (sizes[i], sizes[j])) for j in range(len(sizes))]
                      for i in range(len(sizes))])


def agrees_with(H, ref, dtype, seed=1):
    """dense, hvp and a damped solve of ``H`` against the dense reference."""
    n = ref.shape[0]
    v = jnp.asarray(np.random.default_rng(seed).standard_normal(n), dtype)
    step = jnp.linalg.solve(ref + 2.0 * jnp.eye(n, dtype=ref.dtype), v)
    return (close(H.dense(), ref, dtype), close(H.hvp(v), ref @ v, dtype),
            close(H.solve(v, 2.0), step, dtype)) == (True, True, True)


def logistic_problem(dtype):
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.standard_normal((9, 4)), dtype)
    y = jnp.asarray(rng.random(9) > 0.5, dtype)

    def logistic(w, X, b, s):
        z = X @ w + b
        return jnp.mean(jax.nn.softplus(z) - y * z) + jnp.sum(jnp.exp(s)) + 0.1 * (w @ w)

    w = jnp.asarray(0.3 * rng.standard_normal(4), dtype)
    b, s = jnp.asarray(0.2, dtype), jnp.asarray(rng.standard_normal(3), dtype)
    return logistic, (w, X, b, s)


INTERACTING = C.ThroughAffine  # w and b meet only through z = Xw + b


@pytest.mark.parametrize(("argnums", "kind", "dtype"), [
    ((3, 0), C.BlockDiagonal, jnp.float64),  # s and w do not interact; in argnums' order
    ((2, 3, 0), INTERACTING, jnp.float32),  # b and w interact
], ids=["s,w-float64", "b,s,w-float32"])
def test_several_arguments_are_one_flattened_tuple(argnums, kind, dtype):
    f, args = logistic_problem(dtype)
    sizes = [int(np.size(args[i])) for i in argnums]
    ref = blocks_as_matrix(jax.hessian(f, argnums)(*args), sizes)
    H = mcjax.hessian(f, argnums)(*args)
    assert isinstance(H, kind), H.structure
    assert H.shape == (sum(sizes), sum(sizes)) and H.dtype == dtype
    assert agrees_with(H, ref, dtype)
    if kind is C.BlockDiagonal:  # one block per argument, in argnums' order
        assert [b.size for b in H.blocks] == sizes
        assert type(H.blocks[argnums.index(3)]) is C.Diagonal  # exp(s): diagonal
    g = jax.grad(f, argnums)(*args)  # a tuple, as jax.grad gives it: a tuple comes back
    step = H.solve(g, 2.0)
    assert isinstance(step, tuple) and [jnp.shape(a) for a in step] == [jnp.shape(a) for a in g]
    flat = jnp.concatenate([jnp.ravel(a) for a in g])
    assert close(H.ravel(step), jnp.linalg.solve(ref + 2.0 * jnp.eye(len(flat), dtype=dtype),
                                                 flat), dtype)


def _affine_cases(dtype):
    """Losses that read (weights, bias) through z = X W + b, then non-linearly: with the kind
    of the Hessian of the non-linear part."""
    rng = np.random.default_rng(4)
    X = jnp.asarray(rng.standard_normal((12, 4)), dtype)
    y = jnp.asarray(rng.random(12) > 0.5, dtype)
    Y = jnp.asarray(np.eye(3)[rng.integers(0, 3, 12)], dtype)

    def logistic(w, b):
        z = X @ w + b
        return jnp.mean(jax.nn.softplus(z) - y * z)

    def softmax_regression(W, b):
        return -jnp.mean(jnp.sum(Y * jax.nn.log_softmax(X @ W + b[None, :]), axis=-1))

    def dense_layer(W, b):
        return jnp.mean((jnp.tanh(X @ W + b[None, :]) - Y) ** 2)

    w, W = (jnp.asarray(0.5 * rng.standard_normal(s), dtype) for s in ((4,), (4, 3)))
    b, b3 = jnp.asarray(0.1, dtype), jnp.asarray(0.1 * rng.standard_normal(3), dtype)
    # softmax is unchanged by a shift of all logits: its Hessian is singular (no slogdet)
    return [(logistic, (w, b), C.Diagonal), (softmax_regression, (W, b3), C.BatchedLowRank),
            (dense_layer, (W, b3), C.Diagonal)]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_weights_and_bias_are_the_exact_hessian_through_the_affine_map(dtype):
    """(W, b) interact, but only through z = XW + b: the Hessian is Jᵀ ∇²g J with J = [X, 1]
    and ∇²g the loss's own structure (a diagonal, one block per example), exact in every
    operation."""
    cases = _affine_cases(dtype)
    for f, args, inner in cases if dtype == jnp.float64 else cases[:1]:
        sizes = [int(np.size(a)) for a in args]
        ref = blocks_as_matrix(jax.hessian(f, (0, 1))(*args), sizes)
        H = mcjax.hessian(f, (0, 1))(*args)
        assert isinstance(H, C.ThroughAffine) and isinstance(H.HL, inner), H.structure
        assert H.shape == (sum(sizes),) * 2 and H.dtype == dtype
        assert agrees_with(H, ref, dtype), f.__name__
        assert close(H.diagonal(), jnp.diag(ref), dtype)
        if inner is not C.BatchedLowRank:
            got_sign, got = H.slogdet()
            ref_sign, ref_logdet = jnp.linalg.slogdet(ref.astype(jnp.float64))
            assert float(got_sign) == float(ref_sign) and close(got, ref_logdet, dtype)
        assert "J = " in H.formula() and "H = " in H.formula()
    f, (w, b), _ = cases[0]
    flat = jnp.concatenate([w, b[None]])  # one vector argument, sliced into w and b by f

    def sliced(v):
        return f(v[:-1], v[-1])

    H = mcjax.hessian(sliced)(flat)
    assert isinstance(H, C.ThroughAffine) and isinstance(H.HL, C.Diagonal), H.structure
    assert agrees_with(H, jax.hessian(sliced)(flat), dtype)


def test_interacting_arguments_are_named_in_argnums_order():
    coupled = mcjax.hessian(lambda a, b: (a @ b) ** 2 + jnp.sum(a ** 4), (1, 0))
    H = coupled(jnp.ones(3, jnp.float64), jnp.arange(3.0, dtype=jnp.float64))
    assert "args[1] and args[0] interact" in H.structure, H.structure


def test_gauss_newton_over_several_arguments():
    dtype = jnp.float32
    rng = np.random.default_rng(2)
    h = jnp.asarray(rng.standard_normal((6, 5)), dtype)
    W = jnp.asarray(rng.standard_normal((3, 5)), dtype)
    b = jnp.asarray(rng.standard_normal(3), dtype)
    t = jnp.asarray(rng.standard_normal((6, 3)), dtype)

    def layer(W, h, b):
        return jnp.tanh(h @ W.T + b[None, :])

    def squared_error(z, t):
        return jnp.mean((z - t) ** 2)

    G = mcjax.gauss_newton(layer, squared_error, argnums=(2, 0))(W, h, b, loss_args=(t,))
    J = jax.jacfwd(layer, (2, 0))(W, h, b)
    Jm = jnp.concatenate([J[0].reshape(18, 3), J[1].reshape(18, 15)], axis=1)
    HL = jax.hessian(squared_error)(layer(W, h, b), t).reshape(18, 18)
    assert G.shape == (18, 18) and agrees_with(G, Jm.T @ HL @ Jm, dtype)


# -- models holding more than floating arrays -------------------------------------------------
eqx = pytest.importorskip("equinox", minversion="0.13")


class Scaled(eqx.Module):
    """A function-valued field, a Python int used as a shape (traced, it would fail), an
    integer array (data) and a float field (a static hyper-parameter, as in Equinox)."""

    w: jax.Array
    v: jax.Array
    act: object
    repeats: int
    picks: jax.Array
    temperature: float = 2.0

    def __call__(self, x):
        h = self.act(self.w @ x / self.temperature)
        tiled = jnp.tile(h, self.repeats)  # jnp.tile needs a concrete int
        return jnp.sum(tiled[self.picks] * self.v[self.picks])


def reference_of_float_leaves(loss, model, *rest):
    """``jax.hessian`` of ``loss`` as a function of ``model``'s floating leaves, flattened."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda p: loss(eqx.combine(unravel(p), static), *rest))(flat)


def test_an_equinox_mlp_its_activation_a_field():
    dtype = jnp.float32  # (the module below runs in float64)
    mlp = eqx.nn.MLP(3, 2, 4, 1, activation=jax.nn.softplus, dtype=dtype, key=jax.random.key(0))
    x = jnp.asarray([0.3, -1.2, 0.7], dtype)

    def loss(model, x):
        return jnp.sum(jnp.tanh(model(x)) ** 2)

    H = mcjax.hessian(loss)(mlp, x)
    assert H.shape == (3 * 4 + 4 + 4 * 2 + 2,) * 2
    ref = reference_of_float_leaves(loss, mlp, x)
    assert agrees_with(H, ref, dtype)
    g = eqx.filter_grad(loss)(mlp, x)  # a module, None at its activation: one comes back
    step = H.solve(g, 2.0)
    assert isinstance(step, eqx.nn.MLP) and step.activation is None
    flat = ravel_pytree(eqx.filter(g, eqx.is_inexact_array))[0]
    assert close(H.ravel(step), jnp.linalg.solve(ref + 2.0 * jnp.eye(26, dtype=dtype), flat),
                 dtype)
    G = mcjax.gauss_newton(lambda model, x: model(x), lambda z: jnp.sum(jnp.tanh(z) ** 2))(
        mlp, x)
    params, static = eqx.partition(mlp, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)
    J = jax.jacfwd(lambda p: eqx.combine(unravel(p), static)(x))(flat)
    HL = jax.hessian(lambda z: jnp.sum(jnp.tanh(z) ** 2))(mlp(x))
    assert agrees_with(G, J.T @ HL @ J, dtype)


def test_a_module_with_an_int_field_an_int_array_and_a_function():
    dtype = jnp.float64
    rng = np.random.default_rng(3)
    model = Scaled(jnp.asarray(rng.standard_normal((4, 3)), dtype),
                   jnp.asarray(rng.standard_normal(8), dtype), jnp.tanh, 2,
                   jnp.asarray([0, 5, 7, 2], jnp.int32))
    x = jnp.asarray([0.3, -1.2, 0.7], dtype)

    def loss(model, x):
        return model(x) ** 2

    H = mcjax.hessian(loss)(model, x)
    assert H.shape == (20, 20)  # w and v only: not picks, repeats, act or temperature
    assert agrees_with(H, reference_of_float_leaves(loss, model, x), dtype)
    again = eqx.tree_at(lambda m: m.repeats, model, 3)  # another static value: another trace
    assert agrees_with(mcjax.hessian(loss)(again, x),
                       reference_of_float_leaves(loss, again, x), dtype)


def test_a_dict_with_a_string_and_a_python_int():
    params = {"w": jnp.asarray([0.5, -1.0, 2.0], jnp.float64), "kind": "cubic", "power": 3}

    def f(p):
        assert isinstance(p["kind"], str) and isinstance(p["power"], int)  # never traced
        return jnp.sum(p["w"] ** p["power"]) if p["kind"] == "cubic" else jnp.sum(p["w"])

    H = mcjax.hessian(f)(params)
    assert type(H) is C.BlockDiagonal and type(H.blocks[0]) is C.Diagonal, H.structure
    assert close(H.dense(), jnp.diag(6 * params["w"]), jnp.float64)
    tagged = {"w": params["w"], "tags": {"a", "b"}}  # a set: no hash, so derived uncompiled
    H = mcjax.hessian(lambda p: jnp.sum(p["w"] ** 2) * len(p["tags"]))(tagged)
    assert close(H.dense(), 4 * jnp.eye(3, dtype=jnp.float64), jnp.float64)


# -- bad argnums --------------------------------------------------------------------------------
@pytest.mark.parametrize(("argnums", "error", "message"), [
    ((0, 0), ValueError, r"argnums=\(0, 0\) names an argument twice; expected distinct ints"),
    ((0, -2), ValueError, r"argnums=\(0, -2\) names an argument twice among 2; expected "
     "distinct arguments"),
    (2, ValueError, r"argnums=2 but f gets 2 argument\(s\); expected an int in \[0, 2\)"),
    ((0, 5), ValueError, r"argnums=\(0, 5\) but f gets 2 argument\(s\); expected ints in "
     r"\[0, 2\)"),
    (True, TypeError, "argnums=True; expected an int or a non-empty tuple of ints"),
    ((), TypeError, r"argnums=\(\); expected an int or a non-empty tuple of ints"),
])
@pytest.mark.parametrize("function", ["hessian", "gauss_newton"])
def test_bad_argnums_get_one_sentence(function, argnums, error, message):
    f = lambda a, b: jnp.sum(a * b)  # noqa: E731
    two = (jnp.ones(2, jnp.float64), jnp.ones(2, jnp.float64))
    with pytest.raises(error, match=f"^mcjax.{function}: {message}"):
        if function == "hessian":
            mcjax.hessian(f, argnums)(*two)
        else:
            mcjax.gauss_newton(lambda a, b: a * b, lambda z: jnp.sum(z ** 2), argnums)(*two)


def test_an_argument_without_floats_is_refused():
    with pytest.raises(mcjax.DtypeError, match=r"args\[1\]\['n'\] has dtype int32; expected a "
                       "real floating dtype"):
        mcjax.hessian(lambda a, b: jnp.sum(a) * b["n"], (0, 1))(
            jnp.ones(2, jnp.float64), {"n": jnp.asarray(3, jnp.int32)})
    with pytest.raises(TypeError, match=r"args\[0\] is a str; expected a floating array"):
        mcjax.hessian(lambda s: 1.0)("x")
    with pytest.raises(mcjax.DtypeError, match="complex64; expected a real floating dtype"):
        mcjax.hessian(lambda z: jnp.sum(jnp.abs(z)))(jnp.ones(2, jnp.complex64))
