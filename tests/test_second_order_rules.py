"""Hand-derived second derivatives in the registry: verified like first-order rules, a wrong one
caught, and each the second derivative of its function as called."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax
from mcjax._check._verify import as_checked_second, second_label
from mcjax.conventions import SHAPE_CASES, check_rtol

SECOND = [r for r in mcjax.registry.REGISTRY if r.hessian]
REQUIRED = {"mse", "logistic_loss", "softmax_cross_entropy", "neuron", "neuron_loss",
            "dense_mse", "dense_softmax_cross_entropy"}


def test_the_required_rules_have_second_derivatives():
    assert REQUIRED <= {r.name for r in SECOND}
    for rule in SECOND:
        for pair, d in rule.hessian.items():
            assert d.text.strip() and d.latex.strip(), (rule.name, pair)


def test_every_second_derivative_passes_the_checker_in_float32():
    """The checker's full mode at the largest shape case, in float32, where a false alarm
    would show: every pair of every rule, as the Jacobian of jax.grad(forward, a)."""
    case = SHAPE_CASES[1]
    cases, labels = [], []
    for rule in SECOND:
        args = rule.example(np.random.default_rng(1), case, jnp.float32)
        for a, b in rule.hessian:
            cases.append((*as_checked_second(rule, a, b), args, rule.arg_index(b)))
            labels.append(f"{rule.name} {second_label(a, b)}")
    reports = mcjax.check_cases(cases, stencils=False)
    failed = [f"{label}: {r}" for label, r in zip(labels, reports) if not r.ok]
    assert not failed, failed[0]


HYPER = [r for r in SECOND if r.hyper]  # the sweep checks the others as called already


@pytest.mark.parametrize("rule", HYPER, ids=[r.name for r in HYPER])
def test_second_derivative_is_jax_hessian_of_the_function_as_called(rule):
    """``rule.second_derivative(a, b)(*args)`` against ``jax.hessian`` of the forward function
    called plainly (its own defaults, not the rule's verification ``hyper``), in float64."""
    args = rule.example(np.random.default_rng(5), SHAPE_CASES[1], jnp.float64)
    pairs = list(rule.hessian)

    def both(*args):
        out = []
        for a, b in pairs:
            ia, ib = rule.arg_index(a), rule.arg_index(b)

            def g(xa, xb, ia=ia, ib=ib):
                full = list(args)
                full[ia] = xa
                full[ib] = xb if ib != ia else xa
                return rule.forward(*full)

            want = (jax.hessian(lambda t, g=g: g(t, t))(args[ia]) if ia == ib
                    else jax.jacfwd(jax.grad(g, argnums=0), argnums=1)(args[ia], args[ib]))
            out.append((mcjax.densify(rule.second_derivative(a, b)(*args)), want))
        return out

    for (a, b), (got, want) in zip(pairs, jax.jit(both)(*args)):
        scale = max(float(jnp.max(jnp.abs(want), initial=0.0)), 1.0)
        assert got.shape == want.shape, (rule.name, a, b)
        assert float(jnp.max(jnp.abs(got - want), initial=0.0)) <= check_rtol("float64", 64) * scale, (
            rule.name, a, b)


def _registry(factor: float, drop_outer: bool = False) -> mcjax.registry.Registry:
    registry = mcjax.registry.Registry()

    def second(z, y):
        p = jax.nn.softmax(z)
        blocks = jax.vmap(jnp.diag)(p) - (0.0 if drop_outer else p[:, :, None] * p[:, None, :])
        B = z.shape[0]
        return factor * jnp.einsum("bij,bc->bicj", blocks / B, jnp.eye(B, dtype=z.dtype))

    @mcjax.rule("planted", section="beyond", shapes="z: B k, y: B", registry=registry,
                sample=lambda rng, dims, dtype: (
                    mcjax.registry.normal(rng, (dims["B"], dims["k"]), dtype),
                    jnp.asarray(rng.integers(0, dims["k"], dims["B"]), jnp.int32)),
                wrt={"z": mcjax.Derivative(
                    lambda z, y: (jax.nn.softmax(z) - jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype))
                    / z.shape[0], "(p - onehot(y)) / B", "")},
                hessian={("z", "z"): mcjax.Derivative(second, "(diag(p) - p p^T) / B", "")})
    def planted(z, y):
        """Softmax cross-entropy."""
        return mcjax.softmax_cross_entropy(z, y)

    return registry


@pytest.mark.parametrize(("factor", "drop_outer", "dtype"),
                         [(2.0, False, "float32"), (1.0, True, "float64")],
                         ids=["factor-2-float32", "missing-ppT-float64"])
def test_a_planted_wrong_second_derivative_fails_verify(factor, drop_outer, dtype):
    """The same rule with a right Hessian passes (the sweep above, in float32, and here)."""
    cases = (SHAPE_CASES[2],)
    results = mcjax.registry.verify(_registry(factor, drop_outer), dtypes=(dtype,), cases=cases)
    assert [r.wrt for r in results] == ["z", second_label("z", "z")]
    assert results[0].ok and not results[1].ok, results[1].report
    assert all(r.ok for r in mcjax.registry.verify(_registry(1.0), dtypes=(dtype,), cases=cases))


def test_second_derivative_lookup_names_what_exists():
    rule = mcjax.registry.REGISTRY.get("mse")
    assert rule.second_derivative("y_hat", "y_hat") is rule.second_derivative("y_hat", "y_hat")
    with pytest.raises(KeyError, match=r"no second derivative with respect to \('y', 'y_hat'\)"):
        rule.second_derivative("y", "y_hat")
    with pytest.raises(ValueError, match=r"second derivatives keyed \[\('w', 'q'\)\]"):
        mcjax.registry.Rule(name="r", forward=abs, wrt={}, section="8.2",
                            shapes={"w": ("n",)}, hessian={("w", "q"): mcjax.Derivative(
                                abs, "", "")})


def test_neuron_second_derivative_refuses_a_curved_activation():
    rule = mcjax.registry.REGISTRY.get("neuron")
    w, x = jnp.ones(2), jnp.ones(2)
    with pytest.raises(ValueError, match="activation 'relu' or 'leaky_relu'"):
        rule.second_derivative("w", "x")(w, x, jnp.zeros(()), activation="tanh")
