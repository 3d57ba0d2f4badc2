"""A derive result checks itself against JAX by random probes: ``J.verify(f, *args)`` and
``mcjax.derive(f, argnums).verify(*args)``.

Right derivatives pass in float32 and float64 — the derive corpus's structures, pytrees in and
out, a custom_vjp rule, and float32 cases that lose precision (a long sum, a layer norm far
from zero, large logits); wrong ones fail: a structure whose matvec is off by a factor
(monkeypatched), a diagonal with altered entries (one entry among 256 off by 1%), a sign, a
transpose, a hand derivative of the wrong argument.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from derive_corpus import CASES  # noqa: E402

BY_NAME = {c.name: c for c in CASES}
SAMPLE = ["softmax", "layer_norm/x", "attention/K", "mlp_params (dict)",
          "two_outputs (pytree out)", "custom_vjp (opaque)", "cumsum (opaque)",
          "scalar argument"]


def test_the_sample_is_in_the_corpus():
    assert set(SAMPLE) <= set(BY_NAME)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", SAMPLE)
def test_a_right_derivative_agrees(name, dtype):
    case = BY_NAME[name]
    args = case.sample(np.random.default_rng(0), dtype)
    verdict = mcjax.derive(case.f, case.argnums).verify(*args)
    assert verdict.ok, f"{name} {dtype}: a false alarm: {verdict}"
    assert verdict.dtype == dtype and 0 <= verdict.error <= verdict.tolerance
    assert str(verdict).startswith("checked against jax.")
    assert " with 4 random probes: agrees to " in str(verdict)


def layer_norm(x):
    centred = x - jnp.mean(x)
    return centred * jax.lax.rsqrt(jnp.mean(centred**2) + 1e-5)


FLOAT32_HARD = [
    # a sum of 4096 squares, a layer norm of values near 1000 (cancellation in x - mean),
    # a softmax and a logsumexp of logits near 80, a product through a deep tanh chain
    ("long sum", lambda x: jnp.sum(x**2) * x, lambda r: r.standard_normal(4096)),
    ("layer norm far from zero", layer_norm, lambda r: 1000 + r.standard_normal(64)),
    ("large logits", jax.nn.softmax, lambda r: 80 + 5 * r.standard_normal(32)),
    ("logsumexp", lambda x: jax.nn.logsumexp(x) * x, lambda r: 80 + 5 * r.standard_normal(32)),
    ("tanh chain", lambda x: jnp.tanh(jnp.tanh(jnp.tanh(3 * x) * 3) * 3),
     lambda r: r.standard_normal(64)),
]


@pytest.mark.parametrize("name, f, sample", FLOAT32_HARD, ids=[c[0] for c in FLOAT32_HARD])
def test_no_false_alarm_in_float32(name, f, sample):
    x = jnp.asarray(sample(np.random.default_rng(0)), jnp.float32)
    verdict = mcjax.derive(f).verify(x)
    assert verdict.ok, f"{name}: {verdict}"
    # and the same derivative off by 0.1% is caught
    J = verdict.derivative
    assert not (J * jnp.float32(1.001)).verify(f, x).ok, name


X = jnp.asarray(np.random.default_rng(3).standard_normal(256))


def test_a_structure_whose_matvec_is_off_by_a_factor_fails(monkeypatch):
    J = mcjax.derive(jnp.tanh)(X)
    assert isinstance(J, mcjax.Diagonal) and J.verify(jnp.tanh, X).ok
    monkeypatch.setattr(mcjax.Diagonal, "jvp", lambda self, v: 1.1 * self.diagonal * v)
    verdict = J.verify(jnp.tanh, X)
    assert not verdict.ok and not verdict
    assert verdict.where == "J v at f's output" and verdict.error == pytest.approx(0.1, rel=0.01)
    assert "DISAGREES in J v at f's output by 0.1 of its size" in str(verdict)
    monkeypatch.setattr(mcjax.Diagonal, "vjp", lambda self, u: 1.1 * self.diagonal * u)
    assert not mcjax.derive(jnp.tanh).verify(X).ok  # the derive result itself


@pytest.mark.parametrize("dtype, slip", [("float32", 1e-2), ("float64", 1e-6)])
def test_altered_diagonal_entries_fail(dtype, slip):
    x = X.astype(dtype)
    J = mcjax.derive(jnp.sin)(x)
    assert J.verify(jnp.sin, x).ok
    for altered in (J.diagonal * (1 + slip),  # every entry
                    J.diagonal.at[17].multiply(1 + 100 * slip),  # one entry of 256
                    -J.diagonal):  # a sign
        verdict = mcjax.Diagonal(altered).verify(jnp.sin, x)
        assert not verdict.ok, verdict


def test_a_transposed_matrix_and_the_wrong_argument_fail(rng):
    W = jnp.asarray(rng.standard_normal((4, 4)))
    x = jnp.asarray(rng.standard_normal(4))

    def layer(W, x):
        return jnp.tanh(W @ x)

    J = mcjax.derive(layer, 1)(W, x)
    assert J.verify(layer, W, x, argnums=1).ok
    transposed = mcjax.Diagonal(1 - jnp.tanh(W @ x) ** 2) @ mcjax.Dense(W.T, in_ndim=1)
    assert not transposed.verify(layer, W, x, argnums=1).ok
    # a hand derivative checked against its function: the registry's relu, and a wrong one
    relu_J = mcjax.derivative(mcjax.relu, "x")(x)
    assert relu_J.verify(mcjax.relu, x).ok
    assert not relu_J.verify(jax.nn.softplus, x).ok


def test_pytrees_name_the_leaf_that_disagrees(rng):
    params = mcjax.mlp_init(jax.random.key(0), (3, 4, 2))  # float32
    x = jnp.asarray(rng.standard_normal(3), jnp.float32)

    def mlp(params, v):
        hidden = jax.nn.relu(params[0]["W"] @ v + params[0]["b"])
        return {"out": params[1]["W"] @ hidden + params[1]["b"], "hidden": hidden}

    verdict = mcjax.derive(mlp).verify(params, x)
    assert verdict.ok, verdict
    J = verdict.derivative
    J["hidden"][0]["b"] = 2.0 * J["hidden"][0]["b"]
    verdict = _verify(mlp, J, (params, x))
    assert not verdict.ok
    assert verdict.where in ("J v at out['hidden']", "uᵀ J at args[0][0]['b']")


def _verify(f, J, args, argnums=0):
    """The verification of a pytree of Jacobians (what derive(f).verify runs on its result)."""
    from mcjax._jacobian._verify import verify

    return verify(f, J, args, argnums)


def test_a_dense_array_is_a_derivative_too(rng):
    x = jnp.asarray(rng.standard_normal(5))
    A = jnp.asarray(rng.standard_normal((5, 5)))
    f = lambda v: jnp.tanh(A @ v)  # noqa: E731
    assert _verify(f, jax.jacfwd(f)(x), (x,)).ok
    assert not _verify(f, jax.jacfwd(f)(x).T, (x,)).ok


def test_any_linear_map_is_a_block_too(rng):
    """verify meets a block through what it offers (shape, jvp, vjp; a pytree, as the
    products run under jit), never its class: an object of the user's that applies A is
    checked like a Jacobian, and a wrong one fails."""
    A = jnp.asarray(rng.standard_normal((4, 3)))
    x = jnp.asarray(rng.standard_normal(3))

    @jax.tree_util.register_pytree_node_class
    class Applies:
        def __init__(self, M):
            self.M, self.shape = M, M.shape

        def tree_flatten(self):
            return (self.M,), None

        @classmethod
        def tree_unflatten(cls, _, children):
            return cls(*children)

        def jvp(self, v):
            return self.M @ v

        def vjp(self, u):
            return u @ self.M

    assert _verify(lambda v: A @ v, Applies(A), (x,)).ok
    assert not _verify(lambda v: A @ v, Applies(1.01 * A), (x,)).ok


def test_a_custom_vjp_rule_is_checked_through_jax_vjp(rng):
    case = BY_NAME["custom_vjp (opaque)"]
    args = case.sample(rng, "float64")
    verdict = mcjax.derive(case.f).verify(*args)
    assert verdict.ok and verdict.reference.startswith("jax.vjp and its transpose")


def test_an_opaque_block_is_checked_too(rng):
    x = jnp.asarray(rng.standard_normal(3))

    def spectrum(v):  # eigh has no structured rule: an opaque block, checked under jax.jit
        return jnp.linalg.eigvalsh(jnp.diag(v) + 0.25) * v

    verdict = mcjax.derive(spectrum).verify(x)
    assert verdict.ok and "J[eigh]" in verdict.derivative.formula(), verdict


def test_where_jax_vjp_fails_forward_mode_alone_is_the_reference():
    def padded(v):  # JAX's transpose rule of pad fails on a constant operand
        return jax.lax.pad(jnp.ones((2, 3), v.dtype), v, ((1, 0, 1), (2, 1, 0)))

    v = jnp.float64(0.3)
    verdict = mcjax.derive(padded).verify(v)
    assert verdict.ok and verdict.reference.startswith("jax.jvp alone"), verdict
    assert float(verdict.derivative.vjp(jnp.ones((4, 6)))) == 18.0  # the 18 padded entries
    assert not (2.0 * verdict.derivative).verify(padded, v).ok


def test_errors_are_one_sentence(rng):
    x = jnp.asarray(rng.standard_normal(3))
    J = mcjax.derive(jnp.sin)(x)
    with pytest.raises(mcjax.ShapeError, match=r"has shape \(3, 3\); expected \(2, 3, 3\)"):
        J.verify(lambda v: jnp.stack([v, v]), x)
    with pytest.raises(mcjax.ShapeError, match="expected jax.jacfwd's structure"):
        J.verify(lambda v: (v, v), x)
    with pytest.raises(ValueError, match=r"mcjax.Jacobian.verify: probes=0; expected an int >= 1"):
        J.verify(jnp.sin, x, probes=0)
    with pytest.raises(ValueError, match=r"argnums=3 but f gets 1 argument\(s\)"):
        J.verify(jnp.sin, x, argnums=3)
    # a model's function-valued leaf is passed to f as it is (not differentiated, as in
    # mcjax.derive): a bare Jacobian is not the structure of a derivative by the dict
    with pytest.raises(mcjax.ShapeError, match=r"with the structure PyTreeDef\(\{'act': None, "):
        J.verify(lambda p: jnp.sin(p["x"]), {"x": x, "act": jnp.tanh})
    model = {"x": x, "act": jnp.tanh}
    assert mcjax.derive(lambda p: p["act"](p["x"])).verify(model).ok
    with pytest.raises(TypeError, match=r"args\[0\]\['act'\] is a PjitFunction; expected a "):
        J.verify(lambda p: p["act"](1.0), {"act": jnp.tanh})  # nothing to differentiate


def test_the_probes_are_seeded(rng):
    x = jnp.asarray(rng.standard_normal(6))
    J = mcjax.Diagonal(jnp.cos(x) * 1.01)
    a, b = J.verify(jnp.sin, x, seed=1), J.verify(jnp.sin, x, seed=1)
    assert a == b and a.probes == 4
    assert J.verify(jnp.sin, x, probes=1).probes == 1
