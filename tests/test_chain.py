"""The chain rules as combinators: compositions get their derivative from their parts."""

import functools

import chex
import jax
import jax.numpy as jnp
import pytest

import mcjax
from mcjax import ShapeError
from mcjax.rules import elementwise

TOL = mcjax.conventions.tolerance("float64")
close = functools.partial(chex.assert_trees_all_close, rtol=TOL.rtol, atol=TOL.atol)


def test_vector_chain_rule_of_three_links(rng):
    x = jnp.asarray(rng.standard_normal(4))
    chain = mcjax.vector_chain_rule(mcjax.tanh, elementwise.sin, mcjax.sigmoid)
    close(chain.forward(x), jnp.tanh(jnp.sin(jax.nn.sigmoid(x))))
    J = jax.jit(chain.derivative)(x)
    assert isinstance(J, mcjax.Diagonal)  # diagonal @ diagonal @ diagonal stays diagonal
    close(J.dense(), jax.jacfwd(chain.forward)(x))


def test_chains_nest(rng):
    x = jnp.asarray(rng.standard_normal(3))
    inner = mcjax.vector_chain_rule(elementwise.exp, elementwise.sin)
    outer = mcjax.vector_chain_rule(mcjax.tanh, inner)
    close(outer.derivative(x).dense(), jax.jacrev(outer.forward)(x))


def test_user_differentiable_link(rng):
    W = jnp.asarray(rng.standard_normal((3, 4)))
    x = jnp.asarray(rng.standard_normal(4))
    linear = mcjax.Differentiable(lambda x: W @ x, lambda x: mcjax.Dense(W, in_ndim=1))
    relu_of_linear = mcjax.vector_chain_rule(mcjax.relu, linear)
    close(relu_of_linear.derivative(x).dense(), jax.jacfwd(relu_of_linear.forward)(x))


def test_single_variable_chain_rule_is_scalar():
    f = mcjax.single_variable_chain_rule(elementwise.sin, elementwise.square)
    x = jnp.asarray(0.7)
    close(f.derivative(x), jnp.cos(x**2) * 2 * x)
    with pytest.raises(ShapeError, match=r"single_variable_chain_rule: x has shape \(2,\)"):
        f.derivative(jnp.ones(2))


def test_total_derivative_chain_rule(rng):
    x = jnp.asarray(rng.standard_normal(3))
    f = mcjax.total_derivative_chain_rule(mcjax.add, elementwise.square)  # x + x^2
    close(f.derivative(x).dense(), jnp.diag(1 + 2 * x))
    g = mcjax.total_derivative_chain_rule(mcjax.multiply, elementwise.square)  # x * x^2
    close(g.derivative(x).dense(), jnp.diag(3 * x**2))


def test_links_must_be_unary_and_counts_must_fit():
    with pytest.raises(TypeError, match=r"rule 'add' takes 2 arguments \(x, y\); a link"):
        mcjax.vector_chain_rule(mcjax.add)
    with pytest.raises(TypeError, match=r"takes 2 arguments \(x, y\) but 2 intermediate"):
        mcjax.total_derivative_chain_rule(mcjax.add, elementwise.sin, elementwise.cos)
