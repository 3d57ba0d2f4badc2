"""``J.to_lineax()``: every structured Jacobian as a lineax operator.

For one example of every public Jacobian class: the operator's structures are the Jacobian's
shapes (numerator layout), ``as_matrix()`` is the dense Jacobian, ``mv`` is its ``jvp`` and the
transpose's ``mv`` its ``vjp``, eagerly and under ``jax.jit``; lineax's own structure is used
where there is one.  Tags are the ones mcjax establishes and no others: a hand-built diagonal
of positive numbers is not positive semidefinite, ``diag(exp(x))`` from derive is.  A linear
solve goes through (a diagonal, a Kronecker block of an invertible matrix, a dense block).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax
from mcjax import (
    Applied,
    BlockDiagonal,
    Broadcast,
    Composed,
    Contraction,
    Dense,
    Diagonal,
    Embed,
    Expand,
    Fill,
    Kronecker,
    Opaque,
    Permutation,
    Reshape,
    Sandwich,
    ScaledIdentity,
    Slice,
    Sum,
    SumAlong,
    Take,
    Zero,
)
from mcjax.compilation import quick_jit

lx = pytest.importorskip("lineax")

TOL = mcjax.conventions.tolerance("float64")
close = functools.partial(chex.assert_trees_all_close, rtol=TOL.rtol, atol=TOL.atol)
F64 = jnp.float64


def examples(rng) -> dict[str, mcjax.Jacobian]:
    """One (or two) of every public structure, float64, non-square where it can be."""
    r = lambda *s: jnp.asarray(rng.standard_normal(s))  # noqa: E731
    return {
        "Dense": Dense(r(2, 3, 4), in_ndim=1),
        "Dense column": Dense(r(3), in_ndim=0),
        "Diagonal": Diagonal(r(2, 3)),
        "ScaledIdentity": ScaledIdentity(r(), (2, 3)),
        "Fill": Fill(r(), (4,), (2, 3)),
        "Broadcast": Broadcast((5,), (3,), r()),
        "Kronecker": Kronecker(r(5, 3), 4),
        "BlockDiagonal": BlockDiagonal(r(4, 3)),
        "BlockDiagonal batch": BlockDiagonal(r(4, 3), (2,)),
        "Composed": Composed(Dense(r(2, 4), in_ndim=1), Kronecker(r(3), 4)),
        "Sum": Sum((Diagonal(r(3)), Dense(r(3, 3), in_ndim=1))),
        "Zero": Zero((2,), (3,), F64),
        "Permutation": Permutation((1, 0), (2, 3), F64),
        "Reshape": Reshape((3, 2), (2, 3), F64),
        "Slice": Slice((1,), (3,), None, (4,), F64),
        "Embed": Embed((1,), None, (4,), (2,), F64),
        "Expand": Expand((2, 3), (1,), (3,), F64),
        "SumAlong": SumAlong((1,), (2, 3), F64),
        "Contraction": Contraction(r(3, 2), (((1,), (0,)), ((), ())), 0, (4, 3)),
        "Applied": Applied.of(lambda v: jax.lax.cumsum(v, 0), jnp.zeros(3, F64)),
        "Take": Take(jnp.asarray([2, -1, 0, 3]), (4,), F64),
        "Sandwich": Sandwich(r(3, 2), r(4, 2)),
        "Opaque": Opaque(jax.linearize(jnp.cumsum, r(3))[1], "cumsum", (3,), (3,), F64),
    }


NAMES = list(examples(np.random.default_rng(0)))


def test_every_jacobian_class_has_an_example():
    classes = {getattr(mcjax, name) for name in mcjax.__all__}
    classes = {c for c in classes if isinstance(c, type) and issubclass(c, mcjax.Jacobian)
               and c is not mcjax.Jacobian}
    assert {type(J) for J in examples(np.random.default_rng(0)).values()} == classes


@quick_jit
def both_sides(J, v, u):
    """(operator's, Jacobian's) matrix, J v and uᵀ J: the conversion inside a jitted function
    (a Jacobian is a pytree), one program per structure."""
    op = J.to_lineax()
    m, n = int(np.prod(J.out_shape)), int(np.prod(J.in_shape))
    return {"as_matrix": (op.as_matrix(), J.dense().reshape(m, n)), "mv": (op.mv(v), J.jvp(v)),
            "transpose": (op.T.mv(u), J.vjp(u))}


@pytest.mark.parametrize("name", NAMES)
def test_the_operator_is_the_jacobian(name):
    rng = np.random.default_rng(1)
    J = examples(rng)[name]
    v = jnp.asarray(rng.standard_normal(J.in_shape))
    u = jnp.asarray(rng.standard_normal(J.out_shape))
    op = J.to_lineax()
    assert isinstance(op, lx.AbstractLinearOperator)
    assert op.in_structure() == jax.ShapeDtypeStruct(J.in_shape, F64)
    assert op.out_structure() == jax.ShapeDtypeStruct(J.out_shape, F64)
    for what, (got, want) in both_sides(J, v, u).items():
        assert got.shape == want.shape, what
        close(got, want)
    close(op.mv(v), J.jvp(v))  # and eagerly


def test_lineax_own_structures_where_they_match(rng):
    J = examples(rng)
    assert isinstance(J["Diagonal"].to_lineax(), lx.DiagonalLinearOperator)
    assert isinstance(J["Dense"].to_lineax(), lx.PyTreeLinearOperator)
    assert isinstance(J["BlockDiagonal"].to_lineax(), lx.MatrixLinearOperator)
    assert isinstance(J["Composed"].to_lineax(), lx.ComposedLinearOperator)
    assert isinstance(J["Sum"].to_lineax(), lx.AddLinearOperator)
    assert isinstance(J["Kronecker"].to_lineax(), lx.FunctionLinearOperator)  # its own jvp
    x = jnp.array([0.5, -1.0, 2.0])
    assert isinstance(mcjax.derive(lambda v: v)(x).to_lineax(), lx.IdentityLinearOperator)


TAGS = ("symmetric", "diagonal", "positive_semidefinite", "negative_semidefinite")


def tags(op) -> set[str]:
    return {t for t in TAGS if getattr(lx, f"is_{t}")(op)}


X = jnp.array([0.5, -1.0, 2.0])
CASES = [
    # (what, Jacobian, the tags it must carry, exactly)
    ("derived diag(exp(x)): positive", mcjax.derive(jnp.exp)(X),
     {"symmetric", "diagonal", "positive_semidefinite"}),
    ("derived diag(1[x > 0]): an indicator is >= 0", mcjax.derive(jax.nn.relu)(X),
     {"symmetric", "diagonal", "positive_semidefinite"}),
    ("derived diag(-exp(x)): negative", mcjax.derive(lambda v: -jnp.exp(v))(X),
     {"symmetric", "diagonal", "negative_semidefinite"}),
    ("derived diag(cos(x)): no sign known", mcjax.derive(jnp.sin)(X), {"symmetric", "diagonal"}),
    ("derived diag(2 x): no sign known", mcjax.derive(lambda v: v**2)(X),
     {"symmetric", "diagonal"}),
    ("derived diag(x²): even power", mcjax.derive(lambda v: v**3 / 3)(X),
     {"symmetric", "diagonal", "positive_semidefinite"}),
    ("derived 2 I", mcjax.derive(lambda v: 2.0 * v)(X),
     {"symmetric", "diagonal", "positive_semidefinite"}),
    ("derived 1 1ᵀ (square)", mcjax.derive(lambda v: jnp.full(3, jnp.sum(v)))(X),
     {"symmetric", "positive_semidefinite"}),
    ("hand-built diagonal of positive numbers: sign never assumed", Diagonal(jnp.exp(X)),
     {"symmetric", "diagonal"}),
    ("hand-built c I", ScaledIdentity(jnp.asarray(3.0), (3,)), {"symmetric", "diagonal"}),
    ("a symmetric dense matrix: not established", Dense(jnp.eye(3) + 1.0, in_ndim=1), set()),
    ("a square zero", Zero((3,), (3,), F64), set(TAGS)),
    ("a zero of two shapes", Zero((3,), (1, 3), F64), set()),
    ("a non-square fill", Fill(jnp.asarray(1.0), (3,), (2,)), set()),
    ("a map of one number", Dense(jnp.asarray(-2.0), in_ndim=0), {"symmetric", "diagonal"}),
    ("a product of derived diagonals", Composed(mcjax.derive(jnp.exp)(X),
                                                mcjax.derive(jax.nn.relu)(X)),
     {"symmetric", "diagonal", "positive_semidefinite"}),
    ("a sum of a positive diagonal and a positive fill", Sum((
        mcjax.derive(jnp.exp)(X), mcjax.derive(lambda v: jnp.full(3, jnp.sum(v)))(X))),
     {"symmetric", "positive_semidefinite"}),
    ("a sum of a positive and a negative diagonal", Sum((
        mcjax.derive(jnp.exp)(X), mcjax.derive(lambda v: -jnp.exp(v))(X))),
     {"symmetric", "diagonal"}),
]


@pytest.mark.parametrize("what, J, expected", CASES, ids=[c[0] for c in CASES])
def test_tags_are_the_established_ones(what, J, expected):
    op = J.to_lineax()
    assert tags(op) == expected, what
    if op.in_size() == op.out_size():
        close(op.as_matrix(), J.dense().reshape(op.out_size(), op.in_size()))


def test_factors_of_two_dtypes_compose(rng):
    d = jnp.asarray(rng.standard_normal(3), jnp.float32)
    A = jnp.asarray(rng.standard_normal((2, 3)))
    op = Composed(Dense(A, in_ndim=1), Diagonal(d)).to_lineax()  # float64 after float32
    assert op.in_structure() == jax.ShapeDtypeStruct((3,), F64)
    close(op.as_matrix(), A * d.astype(F64)[None, :])


def test_a_linear_solve_through_a_diagonal_a_kronecker_block_and_a_dense_one(rng):
    x = jnp.asarray(rng.standard_normal(4))
    J = mcjax.derive(jnp.exp)(x)
    b = jnp.asarray(rng.standard_normal(4))
    solution = lx.linear_solve(J.to_lineax(), b)  # lineax picks its diagonal solver
    close(solution.value, b / jnp.exp(x))

    X = jnp.asarray(rng.standard_normal((3, 3))) + 3 * jnp.eye(3)  # invertible
    K = Kronecker(X, 2)  # W -> X Wᵀ: (2, 3) -> (3, 2), invertible with X
    c = jnp.asarray(rng.standard_normal(K.out_shape))
    W = lx.linear_solve(K.to_lineax(), c).value
    assert W.shape == K.in_shape
    close(K.jvp(W), c)

    A = jnp.asarray(rng.standard_normal((4, 4))) + 4 * jnp.eye(4)
    D = mcjax.derive(lambda v: jnp.tanh(A @ v))(x)
    close(D.jvp(lx.linear_solve(D.to_lineax(), b).value), b)


def test_without_lineax_the_error_says_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_lineax(name, *args, **kwargs):
        if name == "lineax":
            raise ImportError("No module named 'lineax'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lineax)
    with pytest.raises(ImportError, match=r"pip install 'mcjax\[lineax\]'"):
        Diagonal(X).to_lineax()
