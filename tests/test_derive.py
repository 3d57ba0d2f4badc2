"""``mcjax.derive`` against JAX autodiff on a corpus of functions, and its behaviour at kinks,
in strict mode, on opaque blocks, on pytrees and on errors.

The corpus (``tests/derive_corpus.py``) is every registered forward function with respect to
each argument plus the layers of deep learning.  In float32 the densified Jacobians are
compared with ``jax.jacfwd`` in one compiled program (every case, two points each, under
``jax.jit`` and ``jax.vmap``).  In float64 ``mcjax.check`` judges every case (two batched
programs of ``check_cases``, which evaluate the derivative under ``jax.jit`` and ``jax.vmap``
and compare it with ``jax.jacfwd``, ``jax.jacrev`` and finite differences); the two cases the
checker cannot judge (below) get the float64 ``jax.jacfwd`` / ``jax.jacrev`` program instead.
"""

from __future__ import annotations

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from derive_corpus import CASES, Case

import mcjax
from mcjax import check_cases
from mcjax.compilation import quick_jit
from mcjax.conventions import check_atol, check_rtol

# jax.jacfwd cannot differentiate a custom_vjp function: its reference is jax.jacrev
REVERSE_ONLY = {"custom_vjp (opaque)"}
# mcjax.check's finite differences see through stop_gradient, which derive (as JAX) does not
NOT_FOR_FINITE_DIFFERENCES = {"stop_gradient", "custom_vjp (opaque)"}


def _points(case: Case, dtype: str, count: int = 2):
    points = [case.sample(np.random.default_rng(seed), dtype) for seed in range(count)]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *points)


def _derived_and_reference(cases, stacked):
    out = []
    for case, args in zip(cases, stacked):
        reference = jax.jacrev if case.name in REVERSE_ONLY else jax.jacfwd

        def derived(*a, case=case):
            return mcjax.densify(mcjax.derive(case.f, case.argnums)(*a))

        out.append((jax.vmap(derived)(*args), jax.vmap(reference(case.f, case.argnums))(*args)))
    return out


def test_the_corpus_holds_every_registered_rule_and_forty_functions():
    names = {c.name.split("/")[0] for c in CASES}
    assert {rule.name for rule in mcjax.registry.REGISTRY} <= names
    assert len({(c.name, c.argnums) for c in CASES}) == len(CASES) >= 40
    for wanted in ("softmax", "layer_norm/x", "logsumexp", "attention/Q", "gru_gate/W",
                   "mlp/W1", "mlp/b1", "mlp/W2", "mlp/b2", "mlp_params (dict)",
                   "two_outputs (pytree out)"):
        assert wanted in {c.name for c in CASES}, wanted


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_derive_equals_jacfwd_under_jit_and_vmap(dtype):
    """Two points per case, one program per dtype; tolerances from the checker's config.  (In float64
    the cases mcjax.check judges are left to it.)"""
    cases = CASES if dtype == "float32" else [c for c in CASES
                                              if c.name in NOT_FOR_FINITE_DIFFERENCES]
    stacked = [_points(c, dtype) for c in cases]
    results = quick_jit(lambda s: _derived_and_reference(cases, s))(stacked)
    failures = []
    for case, args, (got, want) in zip(cases, stacked, results):
        x = jax.tree_util.tree_leaves(args[case.argnums])
        terms = max(leaf[0].size for leaf in x)
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want), case.name
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            assert g.dtype == w.dtype and g.shape == w.shape, (case.name, g.dtype, w.dtype)
            g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
            error, scale = np.max(np.abs(g - w), initial=0.0), np.max(np.abs(w), initial=0.0)
            if not error <= check_rtol(dtype, terms) * scale + check_atol(dtype):
                failures.append(f"{case.name}: |derive - jacfwd| = {error:.3g}, scale {scale:.3g}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("half", [0, 1])
def test_mcjax_check_passes_derive_on_the_corpus(half):
    """``mcjax.check(f, mcjax.derive(f), *args).ok`` for every case, in float64, half the
    corpus per program: judged by jax.jacfwd, jax.jacrev and f's kinks (the finite
    differences and the Taylor test would test JAX's autodiff, not derive)."""
    cases = [c for c in CASES if c.name not in NOT_FOR_FINITE_DIFFERENCES][half::2]
    reports = check_cases([(c.f, mcjax.derive(c.f, c.argnums), c.sample(np.random.default_rng(3),
                                                                          "float64"), c.argnums)
                           for c in cases], stencils=False)
    failed = [f"{c.name}:\n{r}" for c, r in zip(cases, reports) if not r.ok]
    assert not failed, "\n".join(failed)


def test_mcjax_check_catches_a_wrong_derived_jacobian():
    f = CASES[0].f
    x = CASES[0].sample(np.random.default_rng(0), "float64")

    def off_by_a_tenth_percent(*a):
        return mcjax.derive(f)(*a) * 1.001

    assert mcjax.check(f, mcjax.derive(f), *x).ok
    assert not mcjax.check(f, off_by_a_tenth_percent, *x).ok


# -- kinks: JAX's own derivative -------------------------------------------------------------------
# the kink is at the first entry of the argument
KINKS = [
    ("jax.nn.relu at 0", jax.nn.relu, (jnp.array([0.0, -1.0, 2.0]),), 0.0),
    ("jnp.maximum(x, 0) at 0", lambda x: jnp.maximum(x, 0.0), (jnp.array([0.0, -1.0, 2.0]),), 0.5),
    ("where(x > 0, x, 0) at 0", lambda x: jnp.where(x > 0, x, 0.0), (jnp.array([0.0, 1.0]),), 0.0),
    ("abs at 0", jnp.abs, (jnp.array([0.0, -2.0]),), 1.0),
    ("max over a tie", jnp.max, (jnp.array([1.0, 1.0, 0.0]),), 0.5),
    ("maximum of a tie", lambda x: jnp.maximum(x, jnp.ones(2)), (jnp.array([1.0, 3.0]),), 0.5),
    ("minimum of a tie", lambda x: jnp.minimum(x, jnp.ones(2)), (jnp.array([1.0, 3.0]),), 0.5),
    ("leaky_relu at 0", jax.nn.leaky_relu, (jnp.array([0.0, -1.0]),), 1.0),
]


@pytest.mark.parametrize("name, f, args, at_kink", KINKS, ids=[k[0] for k in KINKS])
def test_at_a_kink_derive_follows_jax(name, f, args, at_kink):
    got = mcjax.derive(f)(*args).dense()
    np.testing.assert_array_equal(got, jax.jacfwd(f)(*args))
    assert float(got.reshape(-1)[0]) == at_kink


# -- strict mode and opaque blocks ---------------------------------------------------------------
def spectrum(x):
    return jnp.linalg.eigvalsh(jnp.diag(x) + 0.25) * 2.0


def test_strict_mode_names_the_primitive_and_the_line():
    line = inspect.getsourcelines(spectrum)[1] + 1
    with pytest.raises(NotImplementedError) as error:
        mcjax.derive(spectrum, strict=True)(jnp.array([0.5, -1.0, 2.0]))
    message = str(error.value)
    assert "'eigh'" in message and "a matrix decomposition" in message
    assert f"test_derive.py:{line}" in message
    assert "opaque" in message


def test_an_opaque_block_is_correct_and_marked():
    x = jnp.array([0.5, -1.0, 2.0])
    J = mcjax.derive(spectrum)(x)
    assert "J[eigh]" in J.formula()
    assert "Opaque[eigh]" in J.structure()
    np.testing.assert_allclose(J.dense(), jax.jacfwd(spectrum)(x), rtol=check_rtol("float64", 9))
    v, u = jnp.array([1.0, 2.0, 3.0]), jnp.array([-1.0, 0.5, 2.0])
    np.testing.assert_allclose(J.jvp(v), J.dense() @ v, rtol=check_rtol("float64", 3))
    np.testing.assert_allclose(J.vjp(u), u @ J.dense(), rtol=check_rtol("float64", 3))


# -- what derive returns ----------------------------------------------------------------------------
def test_pytree_arguments_and_outputs_have_jacfwds_structure():
    case = next(c for c in CASES if c.name == "two_outputs (pytree out)")
    args = case.sample(np.random.default_rng(0), "float64")
    J = mcjax.derive(case.f, (0, 1))(*args)
    reference = jax.jacfwd(case.f, (0, 1))(*args)
    assert jax.tree_util.tree_structure(mcjax.densify(J)) == \
        jax.tree_util.tree_structure(reference)
    assert isinstance(J["sum"][0], mcjax.Dense) and J["sum"][0].formula() == "yᵀ"
    # (y[:2] - x[1:]) does not depend on y[2]: its block is structured, not dense
    assert isinstance(J["scaled"][1][1], mcjax.Slice)


def test_a_tuple_argnums_in_its_own_order():
    """argnums=(1, 0): the blocks in that order, as jax.jacfwd's (args[1]'s first); they
    were numbered in f's order, so each block held the other argument's derivative."""
    def f(a, b):
        return jnp.concatenate([a * 2.0, jnp.sin(b)])

    a, b = jnp.ones(2, jnp.float64), jnp.arange(3.0, dtype=jnp.float64)
    for argnums in ((1, 0), (0, 1), (-1, 0)):
        J = mcjax.derive(f, argnums)(a, b)
        reference = jax.jacfwd(f, argnums)(a, b)
        chex.assert_trees_all_close(mcjax.densify(J), reference, rtol=check_rtol("float64", 1))


def test_an_output_that_does_not_depend_on_the_argument_is_a_zero_block():
    J = mcjax.derive(lambda x, y: (x * 2.0, y + 1.0))(jnp.ones(2), jnp.ones(3))
    assert isinstance(J[1], mcjax.Zero) and J[1].shape == (3, 2)
    np.testing.assert_array_equal(J[1].dense(), np.zeros((3, 2)))
    assert J[1].formula() == "0"


def test_the_function_is_traced_afresh_on_every_call():
    """jax.make_jaxpr caches traces by function identity; derive must not serve a stale one."""
    scale = {"value": 2.0}

    def f(x):
        return x * scale["value"]

    x = jnp.ones(2)
    first = mcjax.derive(f)(x).dense()
    scale["value"] = 3.0
    np.testing.assert_array_equal(mcjax.derive(f)(x).dense(), 1.5 * first)


def test_the_structured_relu_jacobian_holds_n_numbers():
    n = 4096
    x = jnp.linspace(-1.0, 1.0, n, dtype=jnp.float32)
    J = jax.jit(mcjax.derive(jax.nn.relu))(x)
    assert isinstance(J, mcjax.Diagonal)
    assert sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(J)) == 4 * n


def test_errors_say_what_was_expected_and_what_arrived():
    with pytest.raises(mcjax.DtypeError, match=r"args\[0\] has dtype int32; expected a floating"):
        mcjax.derive(lambda i: i * 2)(jnp.arange(3, dtype=jnp.int32))
    with pytest.raises(ValueError, match=r"argnums=2 but f gets 1 argument"):
        mcjax.derive(jnp.sin, 2)(jnp.ones(2))
    with pytest.raises(mcjax.DtypeError, match="its output has dtype int"):
        mcjax.derive(lambda x: jnp.argmax(x))(jnp.ones(2))


DERIVE_MISTAKES = [  # (f, argnums, args, error, the sentence)
    (3, 0, (jnp.ones(2),), TypeError, r"mcjax.derive: f is an int, not a function"),
    (jnp.sin, 0.0, (jnp.ones(2),), TypeError, r"argnums=0.0; expected an int or a non-empty tuple"),
    (jnp.sin, "x", (jnp.ones(2),), TypeError, r"argnums='x'; expected an int or a non-empty"),
    (jnp.sin, True, (jnp.ones(2),), TypeError, r"argnums=True; expected an int"),
    (jnp.multiply, (), (jnp.ones(2), jnp.ones(2)), TypeError, r"argnums=\(\); expected"),
    (jnp.multiply, (0, 0), (jnp.ones(2), jnp.ones(2)), ValueError, r"names an argument twice"),
    (jnp.multiply, (0, -2), (jnp.ones(2), jnp.ones(2)), ValueError, r"names an argument twice"),
    (jnp.sin, 2, (jnp.ones(2),), ValueError, r"argnums=2 but f gets 1 argument"),
    (lambda x: None, 0, (jnp.ones(2),), TypeError, r"f returned None; expected an array"),
    (lambda x: "loss", 0, (jnp.ones(2),), TypeError, r"f returned a str; expected an array"),
    (lambda x: (x, object()), 0, (jnp.ones(2),), TypeError, r"f returned an object at \[1\]"),
    (lambda s: s, 0, ("abc",), TypeError, r"args\[0\] is a str; expected a floating array"),
    (lambda z: jnp.abs(z) ** 2, 0, (jnp.array([1 + 2j, 3j]),), mcjax.DtypeError,
     r"args\[0\] has dtype complex\d+; expected a real floating dtype.*holomorphic=True"),
    (lambda x: x.astype(jnp.complex128), 0, (jnp.ones(2),), mcjax.DtypeError,
     r"its output has dtype complex\d+; expected a real floating dtype"),
]


@pytest.mark.parametrize("f, argnums, args, error, sentence", DERIVE_MISTAKES,
                         ids=[str(i) for i in range(len(DERIVE_MISTAKES))])
def test_every_mistake_is_one_mcjax_sentence(f, argnums, args, error, sentence):
    """A non-holomorphic complex function (abs(z)²) is refused, never given a "derivative"."""
    with pytest.raises(error, match=sentence) as info:
        mcjax.derive(f, argnums)(*args)
    assert str(info.value).startswith("mcjax.derive: ") and "\n" not in str(info.value)


def test_a_list_of_numbers_is_an_array_and_other_arguments_pass_through():
    J = mcjax.derive(lambda x, activation: getattr(jnp, activation)(x))([0.5, 1.0], "tanh")
    np.testing.assert_allclose(J.dense(), jax.jacfwd(jnp.tanh)(jnp.array([0.5, 1.0])),
                               rtol=check_rtol("float64", 1))
    J = mcjax.derive(jnp.multiply, (0, -1))(jnp.ones(2), jnp.arange(2.0))
    assert isinstance(J, tuple) and len(J) == 2


def test_a_transpose_and_its_product_on_two_sides_of_a_jit_boundary():
    """x Wᵀ with the transpose outside a jitted product, or inside a jitted helper: the
    derivative with respect to W goes through the transpose (it was silently Zero)."""
    rng = np.random.default_rng(0)
    W = jnp.asarray(rng.standard_normal((3, 4)), jnp.float32)
    x = jnp.asarray(rng.standard_normal((2, 4)), jnp.float32)
    product, transpose = jax.jit(lambda x, Wt: x @ Wt), jax.jit(lambda W: W.T)
    for f in (lambda W, x: product(x, W.T), lambda W, x: x @ transpose(W)):
        chex.assert_trees_all_close(mcjax.derive(f)(W, x).dense(), jax.jacfwd(f)(W, x),
                                    rtol=1e-5, atol=1e-6)
