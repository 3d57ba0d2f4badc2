"""JAX's own gradient-test functions, as a corpus for derive and the checker.

The functions JAX differentiates in its own test suite (``tests/lax_autodiff_test.py``,
``linalg_test.py``, ``lax_scipy_special_functions_test.py``, ``nn_test.py``), each with the
inputs JAX draws for it (a domain per argument) and, where the function switches, points at its
kinks (ties of a max, a sort, a max pool; a ReLU at 0; an argument on a step's edge).

``Case.draw(rng, dtype)`` draws one point; ``kink`` marks the cases drawn at a kink; ``argnums``
is the argument differentiated; ``decomposition`` marks a matrix decomposition, the one place
``mcjax.derive`` may leave an opaque block.  Run by ``experiments/jax_corpus.py`` (all of it)
and ``tests/test_jax_corpus.py`` (a sample of every family).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
from jax import lax


@dataclass(frozen=True)
class Case:
    name: str
    f: Callable
    draw: Callable  # (rng, dtype) -> tuple of NumPy arrays
    argnums: int = 0
    kink: bool = False
    decomposition: bool = False
    family: str = ""


# -- domains, as JAX's test suite draws them -------------------------------------------------
def default(rng, shape, dtype):
    return (rng.standard_normal(shape) * 1.5).astype(dtype)


def small(rng, shape, dtype):
    return (rng.standard_normal(shape) * 0.1 + 0.05).astype(dtype)


def positive(rng, shape, dtype):
    return (rng.uniform(0.5, 2.0, shape)).astype(dtype)


def uniform(lo, hi):
    return lambda rng, shape, dtype: rng.uniform(lo, hi, shape).astype(dtype)


def not_small(rng, shape, dtype):
    x = rng.uniform(0.6, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    return x.astype(dtype)


def unique(rng, shape, dtype):
    """Distinct values (a max, a sort: no ties)."""
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) * 0.25 - n / 8).astype(dtype)


def some_equal(rng, shape, dtype):
    """Values with ties: a few distinct numbers repeated."""
    return rng.choice(np.array([-1.0, 0.5, 2.0]), shape).astype(dtype)


def spd(rng, n, dtype):
    a = rng.standard_normal((n, n))
    return (a @ a.T + n * np.eye(n)).astype(dtype)


def well_conditioned(rng, n, dtype):
    return (rng.standard_normal((n, n)) + 3 * np.eye(n)).astype(dtype)


def one(domain, *shape):
    return lambda rng, dtype: (domain(rng, shape, dtype),)


def two(domain, *shape, second=None):
    second = second or domain
    return lambda rng, dtype: (domain(rng, shape, dtype), second(rng, shape, dtype))


CASES: list[Case] = []


def case(name, f, draw, **flags):
    CASES.append(Case(name, f, draw, **flags))


# -- element-wise: lax_autodiff_test's LAX_GRAD_OPS ---------------------------------------------
for _name, _op, _domain in [
    ("neg", lax.neg, default), ("exp", lax.exp, small), ("exp2", lax.exp2, small),
    ("expm1", lax.expm1, default), ("log", lax.log, positive), ("log1p", lax.log1p, positive),
    ("sinh", lax.sinh, default), ("cosh", lax.cosh, default), ("tanh", lax.tanh, default),
    ("sin", lax.sin, default), ("cos", lax.cos, default), ("tan", lax.tan, uniform(-1.3, 1.3)),
    ("asin", lax.asin, uniform(-0.9, 0.9)), ("acos", lax.acos, uniform(-0.9, 0.9)),
    ("atan", lax.atan, default), ("asinh", lax.asinh, default),
    ("acosh", lax.acosh, uniform(1.2, 3.0)), ("atanh", lax.atanh, uniform(-0.9, 0.9)),
    ("erf", lax.erf, small), ("erfc", lax.erfc, small), ("erf_inv", lax.erf_inv, small),
    ("lgamma", lax.lgamma, positive), ("digamma", lax.digamma, positive),
    ("bessel_i0e", lax.bessel_i0e, default), ("bessel_i1e", lax.bessel_i1e, default),
    ("abs", lax.abs, positive), ("sqrt", lax.sqrt, positive), ("rsqrt", lax.rsqrt, positive),
    ("cbrt", lax.cbrt, not_small), ("logistic", lax.logistic, default),
    ("square", lax.square, default), ("integer_pow", lambda x: lax.integer_pow(x, 3), default),
    ("floor", lax.floor, uniform(0.1, 0.4)), ("round", lax.round, uniform(0.1, 0.4)),
    ("sign", lax.sign, not_small),
]:
    case(f"lax.{_name}", _op, one(_domain, 3, 4), family="element-wise")

for _name, _op, _domain, _second in [
    ("add", lax.add, default, None), ("sub", lax.sub, default, None),
    ("mul", lax.mul, default, None), ("div", lax.div, not_small, None),
    ("max", lax.max, default, None), ("min", lax.min, default, None),
    ("pow", lax.pow, positive, None), ("atan2", lax.atan2, default, None),
    ("rem", lax.rem, default, not_small),
    ("polygamma", lambda n, x: lax.polygamma(n, x), None, positive),
    ("igamma", lax.igamma, positive, None), ("igammac", lax.igammac, positive, None),
]:
    for _k in (0, 1):
        if _name == "polygamma" and _k == 0:
            continue
        _draw = (lambda rng, dtype: (np.full((2, 3), 1.0, dtype), positive(rng, (2, 3), dtype))) \
            if _name == "polygamma" else two(_domain, 2, 3, second=_second)
        case(f"lax.{_name}/{_k}", _op, _draw, argnums=_k, family="element-wise")

case("lax.clamp", lambda x: lax.clamp(jnp.asarray(-0.5, x.dtype), x, jnp.asarray(0.7, x.dtype)),
     one(default, 6), family="element-wise")
case("lax.betainc/x", lambda x: lax.betainc(jnp.asarray(2.0, x.dtype), jnp.asarray(3.0, x.dtype), x),
     one(uniform(0.1, 0.9), 5),
     family="element-wise")
case("lax.convert_element_type", lambda x: lax.convert_element_type(x, jnp.float32) * 2.0,
     one(default, 4), family="element-wise")
case("lax.select", lambda x: lax.select(x > 0.1, jnp.sin(x), jnp.cos(x)), one(default, 5),
     family="element-wise")

# -- special functions and nn: lax_scipy_special_functions_test, nn_test --------------------------
for _name, _fn, _domain in [
    ("xlogy", lambda x: jsp.xlogy(x, x + 1.5), positive),
    ("xlog1py", lambda x: jsp.xlog1py(x, x), positive),
    ("entr", jsp.entr, positive), ("logit", jsp.logit, uniform(0.1, 0.9)),
    ("expit", jsp.expit, default), ("ndtr", jsp.ndtr, default),
    ("ndtri", jsp.ndtri, uniform(0.1, 0.9)), ("log_ndtr", jsp.log_ndtr, default),
    ("gammaln", jsp.gammaln, positive), ("i0e", jsp.i0e, default), ("i1e", jsp.i1e, default),
    ("erfinv", jsp.erfinv, small), ("logsumexp", lambda x: jsp.logsumexp(x, axis=-1), default),
    ("multigammaln", lambda x: jsp.multigammaln(x + 2.0, 2), positive),
]:
    case(f"scipy.{_name}", _fn, one(_domain, 2, 5), family="special functions")
for _name, _fn in [
    ("relu", jax.nn.relu), ("relu6", jax.nn.relu6), ("softplus", jax.nn.softplus),
    ("sigmoid", jax.nn.sigmoid), ("silu", jax.nn.silu), ("gelu", jax.nn.gelu),
    ("gelu_exact", partial(jax.nn.gelu, approximate=False)), ("elu", jax.nn.elu),
    ("celu", jax.nn.celu), ("selu", jax.nn.selu), ("leaky_relu", jax.nn.leaky_relu),
    ("hard_tanh", jax.nn.hard_tanh), ("log_sigmoid", jax.nn.log_sigmoid),
    ("softmax", jax.nn.softmax), ("log_softmax", jax.nn.log_softmax),
    ("standardize", jax.nn.standardize), ("glu", jax.nn.glu), ("mish", jax.nn.mish),
    ("squareplus", jax.nn.squareplus), ("sparse_plus", jax.nn.sparse_plus),
]:
    case(f"nn.{_name}", _fn, one(default, 3, 4), family="nn")
case("nn.one_hot_cross_entropy", lambda z: -jnp.sum(jax.nn.log_softmax(z) * jax.nn.one_hot(
    jnp.array([1, 0, 3]), 4)), one(default, 3, 4), family="nn")
case("nn.take_along_axis_ce", lambda z: -jnp.sum(jnp.take_along_axis(
    jax.nn.log_softmax(z), jnp.array([[1], [0], [3]]), axis=1)), one(default, 3, 4),
    family="nn")

# -- shapes ---------------------------------------------------------------------------------------
case("lax.concatenate", lambda x: lax.concatenate([x, 2 * x, x[:1]], 0), one(default, 2, 3),
     family="shape")
case("lax.split", lambda x: lax.split(x, (1, 2), axis=1)[1] * 3.0, one(default, 2, 3),
     family="shape")
case("lax.broadcast", lambda x: lax.broadcast(x, (2, 3)), one(default, 4), family="shape")
case("lax.broadcast_in_dim", lambda x: lax.broadcast_in_dim(x, (3, 2, 4), (0, 2)),
     one(default, 3, 1), family="shape")
case("lax.reshape", lambda x: lax.reshape(x, (6, 2)), one(default, 3, 4), family="shape")
case("lax.reshape_dimensions", lambda x: lax.reshape(x, (4, 3), dimensions=(1, 0)),
     one(default, 3, 4), family="shape")
case("lax.pad", lambda x: lax.pad(x, jnp.asarray(0.5, x.dtype), ((1, 2, 1), (0, -1, 0))),
     one(default, 3, 4),
     family="shape")
case("lax.pad_value", lambda v: lax.pad(jnp.ones((2, 3), v.dtype), v, ((1, 0, 1), (2, 1, 0))),
     lambda rng, dtype: (default(rng, (), dtype),), family="shape")
case("lax.rev", lambda x: lax.rev(x, (0, 1)), one(default, 3, 4), family="shape")
case("lax.slice", lambda x: lax.slice(x, (1, 0), (3, 4), (1, 2)), one(default, 3, 4),
     family="shape")
case("lax.transpose", lambda x: lax.transpose(x, (2, 0, 1)), one(default, 2, 3, 4),
     family="shape")
case("jnp.tile", lambda x: jnp.tile(x, (2, 3)), one(default, 2, 3), family="shape")
case("jnp.stack", lambda x: jnp.stack([x, x ** 2], axis=1), one(default, 3, 2), family="shape")

# -- indexing -------------------------------------------------------------------------------------
case("lax.dynamic_slice", lambda x: lax.dynamic_slice(x, (1, 2), (2, 2)), one(default, 3, 5),
     family="indexing")
case("lax.dynamic_update_slice/0",
     lambda x: lax.dynamic_update_slice(x, jnp.ones((2, 2), x.dtype), (1, 1)), one(default, 3, 4),
     family="indexing")
case("lax.dynamic_update_slice/1",
     lambda u: lax.dynamic_update_slice(jnp.ones((3, 4), u.dtype), u, (2, 1)), one(default, 2, 2),
     family="indexing")
case("lax.index_take", lambda x: lax.index_take(x, (np.array([0, 2, 1]),), (0,)),
     one(default, 3, 4, 5), family="indexing")
case("jnp.embedding", lambda E: E[jnp.array([2, 0, 2, 1])], one(default, 4, 3),
     family="indexing")
for _mode in ("clip", "fill"):
    case(f"lax.gather_{_mode}", lambda x, m=_mode: lax.gather(
        x, np.array([[0], [2], [4]]), lax.GatherDimensionNumbers(
            offset_dims=(1,), collapsed_slice_dims=(), start_index_map=(0,)), (2,), mode=m),
        one(default, 5), family="indexing")
case("lax.scatter_add/0", lambda x: x.at[jnp.array([0, 2, 0])].add(jnp.ones(3, x.dtype)),
     one(default, 4), family="indexing")
case("lax.scatter_add/1", lambda u: jnp.zeros(4, u.dtype).at[jnp.array([0, 2, 0])].add(u),
     one(default, 3), family="indexing")
case("lax.scatter/0", lambda x: x.at[jnp.array([1, 3])].set(jnp.ones(2, x.dtype)), one(default, 5),
     family="indexing")
case("lax.scatter/1", lambda u: jnp.zeros(5, u.dtype).at[jnp.array([1, 3, 1])].set(u),
     one(default, 3), family="indexing")
case("lax.scatter_mul/0", lambda x: x.at[jnp.array([1, 3])].multiply(jnp.full(2, 2.0, x.dtype)),
     one(default, 5), family="indexing")
case("lax.scatter_mul/1", lambda u: jnp.ones(5, u.dtype).at[jnp.array([1, 3])].multiply(
    u, unique_indices=True), one(default, 2), family="indexing")
case("lax.scatter_max/0", lambda x: x.at[jnp.array([1, 3])].max(jnp.zeros(2, x.dtype)),
     one(unique, 5), family="indexing")
case("lax.scatter_min/1", lambda u: jnp.zeros(5, u.dtype).at[jnp.array([1, 3, 1])].min(u),
     one(unique, 3), family="indexing")

# -- reductions and ordering ----------------------------------------------------------------------
for _name, _op, _init, _domain in [
    ("sum", lax.add, 0.0, default), ("max", lax.max, -np.inf, unique),
    ("min", lax.min, np.inf, unique), ("prod", lax.mul, 1.0, not_small),
]:
    case(f"lax.reduce_{_name}", lambda x, op=_op, i=_init: lax.reduce(
        x, np.asarray(i, x.dtype), op, (0, 2)), one(_domain, 3, 4, 5), family="reductions")
case("lax.reduce_pair", lambda x: lax.reduce((x, x * 2), (np.asarray(0, x.dtype),
                                                          np.asarray(1, x.dtype)),
                                             lambda a, b: (a[0] + b[0], a[1] * b[1]), (1,))[1],
     one(not_small, 3, 4), family="reductions")
case("jnp.argmax_gather", lambda x: x[jnp.argmax(x)] * x, one(unique, 5), family="reductions")
for _name, _op in [("cumsum", lax.cumsum), ("cumprod", lax.cumprod), ("cummax", lax.cummax),
                   ("cummin", lax.cummin), ("cumlogsumexp", lax.cumlogsumexp)]:
    case(f"lax.{_name}", lambda x, op=_op: op(x, axis=1, reverse=True),
         one(unique if _name in ("cummax", "cummin") else small, 3, 4), family="reductions")
case("lax.sort", lambda x: lax.sort(x, dimension=1), one(unique, 4, 5), family="reductions")
case("lax.sort_key_val", lambda k: lax.sort_key_val(k, jnp.arange(12.0, dtype=k.dtype).reshape(3, 4) ** 2,
                                                     dimension=1)[1] + 0.0 * k,
     one(unique, 3, 4), family="reductions")
case("lax.sort_key_val/values", lambda v: lax.sort_key_val(
    jnp.asarray(np.random.default_rng(5).permutation(12).reshape(3, 4), v.dtype), v)[1],
    one(default, 3, 4), family="reductions")
case("lax.top_k", lambda x: lax.top_k(x, 3)[0], one(unique, 5, 5), family="reductions")
case("jnp.median", jnp.median, one(unique, 7), family="reductions")

# -- windows ----------------------------------------------------------------------------------------
for _op, _init, _domain in [(lax.add, 0.0, small), (lax.max, -np.inf, unique),
                            (lax.min, np.inf, unique)]:
    for _dims, _strides, _pad, _base in [((2, 1), (1, 1), "VALID", (1, 1)),
                                         ((1, 2), (2, 1), "SAME", (1, 1)),
                                         ((2, 1), (1, 2), ((0, 3), (1, 2)), (2, 3))]:
        case(f"lax.reduce_window_{_op.__name__}{_dims}{_strides}{_pad}{_base}",
             lambda x, op=_op, i=_init, d=_dims, s=_strides, p=_pad, b=_base: lax.reduce_window(
                 x, np.asarray(i, x.dtype), op, d, s, p, b), one(_domain, 4, 6), family="windows")
case("nn.avg_pool", lambda x: lax.reduce_window(x, 0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1),
                                                "VALID") / 4.0, one(default, 1, 4, 4, 2),
     family="windows")

# -- products and convolutions -----------------------------------------------------------------------
case("lax.dot/0", lambda a: lax.dot(a, jnp.ones((4, 2), a.dtype) * 0.5), one(default, 3, 4),
     family="products")
case("lax.dot/1", lambda b: lax.dot(jnp.ones((3, 4), b.dtype) * 0.5, b), one(default, 4, 2),
     family="products")
case("lax.dot_general_batch", lambda a: lax.dot_general(
    a, jnp.arange(24.0, dtype=a.dtype).reshape(2, 4, 3) / 10, (((2,), (1,)), ((0,), (0,)))),
    one(default, 2, 3, 4), family="products")
_dn = lax.conv_dimension_numbers((1, 2, 6, 6), (3, 2, 3, 3), ("NCHW", "OIHW", "NCHW"))
for _k, _name in ((0, "lhs"), (1, "rhs")):
    case(f"lax.conv/{_name}", lambda lhs, rhs: lax.conv_general_dilated(
        lhs, rhs, (1, 2), "SAME", (1, 1), (1, 1), _dn),
        lambda rng, dtype: (default(rng, (1, 2, 6, 6), dtype), default(rng, (3, 2, 3, 3), dtype)),
        argnums=_k, family="products")
case("lax.conv_dilated_groups", lambda lhs: lax.conv_general_dilated(
    lhs, jnp.ones((4, 1, 2, 2), lhs.dtype) * 0.3, (1, 1), ((1, 0), (0, 1)), (2, 1), (1, 2),
    ("NHWC", "OIHW", "NHWC"), feature_group_count=2), one(default, 1, 5, 5, 2),
    family="products")
case("jnp.einsum", lambda a: jnp.einsum("ij,jk,kl->il", a, a.T, a), one(default, 3, 3),
     family="products")

# -- linear algebra: linalg_test ----------------------------------------------------------------------
case("linalg.inv", jnp.linalg.inv, lambda rng, dtype: (well_conditioned(rng, 3, dtype),),
     family="linear algebra")
case("linalg.solve/0", lambda a: jnp.linalg.solve(a, jnp.arange(3.0).astype(a.dtype)),
     lambda rng, dtype: (well_conditioned(rng, 3, dtype),), family="linear algebra")
case("linalg.solve/1", lambda b: jnp.linalg.solve(jnp.eye(3, dtype=b.dtype) * 2 + 0.1, b),
     one(default, 3), family="linear algebra")
case("linalg.det", jnp.linalg.det, lambda rng, dtype: (well_conditioned(rng, 3, dtype),),
     family="linear algebra")
case("linalg.slogdet", lambda a: jnp.linalg.slogdet(a)[1],
     lambda rng, dtype: (well_conditioned(rng, 4, dtype),), family="linear algebra")
case("linalg.cholesky", jnp.linalg.cholesky, lambda rng, dtype: (spd(rng, 3, dtype),),
     family="linear algebra")
case("linalg.triangular_solve", lambda b: jax.scipy.linalg.solve_triangular(
    jnp.tril(jnp.ones((3, 3), b.dtype)) + jnp.eye(3, dtype=b.dtype), b, lower=True), one(default, 3, 2),
    family="linear algebra")
case("linalg.triangular_solve/a", lambda a: jax.scipy.linalg.solve_triangular(
    a, jnp.arange(6.0).reshape(3, 2).astype(a.dtype), lower=True),
    lambda rng, dtype: (np.tril(well_conditioned(rng, 3, dtype)),), family="linear algebra")
case("linalg.eigh", lambda a: jnp.linalg.eigh(a + a.T)[0],
     lambda rng, dtype: (well_conditioned(rng, 3, dtype),), decomposition=True,
     family="linear algebra")
case("linalg.svd", lambda a: jnp.linalg.svd(a, compute_uv=False),
     lambda rng, dtype: (well_conditioned(rng, 3, dtype),), decomposition=True,
     family="linear algebra")
case("linalg.qr", lambda a: jnp.linalg.qr(a)[1],
     lambda rng, dtype: (well_conditioned(rng, 3, dtype),), decomposition=True,
     family="linear algebra")
case("linalg.pinv", jnp.linalg.pinv, lambda rng, dtype: (well_conditioned(rng, 3, dtype),),
     decomposition=True, family="linear algebra")
case("linalg.norm", jnp.linalg.norm, one(default, 3, 4), family="linear algebra")
case("linalg.matrix_power", lambda a: jnp.linalg.matrix_power(a, 3),
     lambda rng, dtype: (well_conditioned(rng, 3, dtype) / 3,), family="linear algebra")

# -- control flow ------------------------------------------------------------------------------------
case("lax.cond", lambda x: lax.cond(jnp.sum(x) > 0, jnp.sin, jnp.cos, x), one(default, 4),
     family="control flow")
case("lax.switch", lambda x: lax.switch(1, [jnp.sin, jnp.cos, jnp.tanh], x), one(default, 4),
     family="control flow")
case("lax.scan", lambda x: lax.scan(lambda c, y: (c * y + 1.0, jnp.sin(c)), 1.0, x)[1],
     one(small, 5), family="control flow")
case("lax.fori_loop", lambda x: lax.fori_loop(0, 3, lambda i, c: c * x + 1.0, x),
     one(small, 4), family="control flow")
case("jax.checkpoint", jax.checkpoint(lambda x: jnp.sin(x) * x), one(default, 4),
     family="control flow")
case("jax.custom_jvp_logsumexp", lambda x: jsp.logsumexp(x), one(default, 5),
     family="control flow")

# -- at kinks: ties, zeros, edges ---------------------------------------------------------------------
for _name, _fn, _draw in [
    ("lax.max/tie", lambda x: lax.max(x, jnp.asarray([0.5, 2.0, -1.0, 0.5], x.dtype)),
     lambda rng, dtype: (np.asarray([0.5, 1.0, -1.0, 3.0], dtype),)),
    ("nn.relu/0", jax.nn.relu, lambda rng, dtype: (np.asarray([0.0, 1.5, -2.0, 0.0], dtype),)),
    ("jnp.maximum/0", lambda x: jnp.maximum(x, 0.0),
     lambda rng, dtype: (np.asarray([0.0, 1.5, -2.0], dtype),)),
    ("lax.abs/0", lax.abs, lambda rng, dtype: (np.asarray([0.0, -1.0, 2.0], dtype),)),
    ("lax.clamp/edge", lambda x: lax.clamp(jnp.asarray(-0.5, x.dtype), x, jnp.asarray(0.7, x.dtype)),
     lambda rng, dtype: (np.asarray([-0.5, 0.7, 0.1], dtype),)),
    ("lax.reduce_max/tie", lambda x: jnp.max(x, axis=1), one(some_equal, 3, 4)),
    ("lax.sort/tie", lambda x: jnp.sort(x * jnp.arange(1.0, 6.0).astype(x.dtype)),
     lambda rng, dtype: (np.asarray([1.0, 0.5, 1.0 / 3, 0.25, 2.0], dtype),)),
    ("nn.max_pool/tie", lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (2, 2), (2, 2),
                                                    "VALID"), one(some_equal, 4, 4)),
    ("lax.floor/edge", lambda x: lax.floor(x) * x,
     lambda rng, dtype: (np.asarray([1.0, -2.0, 0.5], dtype),)),
    ("lax.rem/edge", lambda x: lax.rem(x, jnp.asarray(1.5, x.dtype)),
     lambda rng, dtype: (np.asarray([3.0, -1.5, 0.7], dtype),)),
    ("nn.log_softmax/tie", lambda z: jnp.sum(jax.nn.log_softmax(z) * jnp.arange(4.0, dtype=z.dtype)),
     lambda rng, dtype: (np.zeros((2, 4), dtype),)),
    ("nn.hard_tanh/edge", jax.nn.hard_tanh,
     lambda rng, dtype: (np.asarray([1.0, -1.0, 0.3], dtype),)),
    ("jnp.where/edge", lambda x: jnp.where(x > 0, x ** 2, 0.0),
     lambda rng, dtype: (np.asarray([0.0, 1.0, -1.0], dtype),)),
]:
    case(_name, _fn, _draw, kink=True, family="kinks")
