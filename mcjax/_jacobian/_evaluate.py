r"""A formula's expression evaluated: the numbers the text stands for.

``evaluate`` computes an ``Expr`` from the values of the
arguments and constants it names, so that what a formula *says* can be compared with what the
Jacobian *holds*: every rewrite the printer's algebra makes (a cancelled factor, a collected
sum, softmax recognised, a sign of a positive value dropped) is then a claim a test can refute.
An expression with a part that has no value of its own (``vᵀ J`` written by the formula
printer, a part picked by text, a derivative named ``∂f``) raises ``NotWritten``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from fractions import Fraction

import jax
import jax.numpy as jnp
import jax.scipy.special as jss

from mcjax._core._conventions import standard_promotion
from mcjax._jacobian import _formula as F
from mcjax._jacobian._algebra import Jacobian, replace
from mcjax._jacobian._expr import Expr


class NotWritten(Exception):
    """The expression has a part that stands for no value mcjax can compute."""


_CMP: dict[str, Callable] = {">": jnp.greater, "<": jnp.less, ">=": jnp.greater_equal,
                             "<=": jnp.less_equal, "==": jnp.equal, "!=": jnp.not_equal}

# names a formula writes that are not JAX's own
_CALLS: dict[str, Callable] = {
    "sigmoid": jax.nn.sigmoid, "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    "relu": jax.nn.relu, "max": jnp.maximum, "min": jnp.minimum, "clip": jnp.clip,
    "atan2": jnp.arctan2, "is_finite": jnp.isfinite, "logaddexp": jnp.logaddexp,
    "i0e": jss.i0e, "i1e": jss.i1e, "digamma": jss.digamma,
    "gamma": jss.gamma, "polygamma": lambda n, x: jss.polygamma(jnp.asarray(n).astype(int), x),
    "gammainc": jss.gammainc, "gammaincc": jss.gammaincc,
    "betainc": jss.betainc, "lgamma": jss.gammaln, "erf": jss.erf, "erfc": jss.erfc,
    "erf_inv": jax.lax.erf_inv, "trunc": jnp.trunc, "sign": jnp.sign, "abs": jnp.abs,
    "select": lambda which, *cases: jax.lax.select_n(which, *cases),
    "det": jnp.linalg.det, "logabsdet": lambda a: jnp.linalg.slogdet(a)[1],
    "solve": jnp.linalg.solve,
}

_REDUCE: dict[str, Callable] = {
    "max": jnp.max, "min": jnp.min, "prod": jnp.prod,
    "argmax": lambda x, axis: jnp.argmax(x, axis=axis[0]),
    "argmin": lambda x, axis: jnp.argmin(x, axis=axis[0])}


def evaluate(e: Expr, values: Mapping[str, jax.Array]) -> jax.Array:
    """The value of ``e``, its arguments and constants read from ``values`` by name."""
    return _Evaluator(values, {})(e)


def as_written(J: Jacobian, values: Mapping[str, jax.Array]) -> tuple[Jacobian, int, int]:
    """The Jacobian ``J``'s formula describes: ``J`` as printed (``for_printing``), each array it holds replaced by the value of its expression.
    Returns it with the counts of arrays computed from their text and of those kept as held
    (their expression has no value of its own)."""
    counts = [0, 0]
    evaluator = _Evaluator(values, {})

    def rebuild(node: Jacobian) -> Jacobian:
        changes = {}
        for i, field in enumerate(node._arrays):
            held = getattr(node, field)
            if isinstance(held, Jacobian):
                changes[field] = rebuild(held)
            elif isinstance(held, tuple) and held and all(isinstance(h, Jacobian) for h in held):
                changes[field] = tuple(rebuild(h) for h in held)
            elif node.symbols and node.symbols_are_values and isinstance(node.symbols[i], Expr) \
                    and isinstance(held, jax.Array):
                try:
                    value = evaluator(node.symbols[i])
                except NotWritten:
                    counts[1] += 1
                    continue
                changes[field] = jnp.broadcast_to(value, held.shape).astype(held.dtype)
                counts[0] += 1
        return replace(node, **changes) if changes else node

    return rebuild(F.for_printing(J)), counts[0], counts[1]


class _Evaluator:
    def __init__(self, values: Mapping[str, jax.Array], memo: dict):
        self.values, self.memo = values, memo

    def __call__(self, e: Expr) -> jax.Array:
        key = id(e)
        if key not in self.memo:
            method = getattr(self, "_" + e.op, None)
            if method is None:
                raise NotWritten(f"{e.op!r} has no value of its own")
            with standard_promotion():  # the text's arithmetic, whatever the user's setting
                self.memo[key] = self._fit(method(e), e.shape)
        return self.memo[key]

    @staticmethod
    def _fit(value, shape) -> jax.Array:
        """``value`` in ``e``'s shape: reshaped where it has as many entries, else broadcast
        (a number standing for an array; a reduction's result along the axes it kept)."""
        value, shape = jnp.asarray(value), tuple(shape)
        if value.shape == shape:
            return value
        if value.size == math.prod(shape):
            return value.reshape(shape)
        try:
            return jnp.broadcast_to(value, shape)
        except ValueError:
            return jnp.broadcast_to(_kept_axes(value, shape), shape)

    # -- leaves -----------------------------------------------------------------------------
    def _arg(self, e):
        name = e.param[0]
        if name not in self.values:
            raise NotWritten(f"no value for {name!r}")
        return self.values[name]

    def _num(self, e):
        return jnp.full(e.shape, e.param)

    def _const(self, e):
        return jnp.asarray(e.param).reshape(e.shape)

    def _truth(self, e):
        return jnp.full(e.shape, bool(e.param))

    def _iota(self, e):
        axis, _ = e.param
        return jax.lax.broadcasted_iota(jnp.int32, e.shape, axis)

    def _onehot(self, e):
        axis, size = e.param
        k = self(e.args[0])
        index = jax.lax.broadcasted_iota(jnp.int32, e.shape, axis)
        if k.ndim == len(e.shape) or k.ndim == 0:
            return (index == k).astype(jnp.float32)
        return (index == jnp.expand_dims(k, axis)).astype(jnp.float32)

    # -- arithmetic ---------------------------------------------------------------------------
    def _add(self, e):
        return self(e.args[0]) + self(e.args[1])

    def _sub(self, e):
        return self(e.args[0]) - self(e.args[1])

    def _mul(self, e):
        return self(e.args[0]) * self(e.args[1])

    def _div(self, e):
        return self(e.args[0]) / self(e.args[1])

    def _neg(self, e):
        return -self(e.args[0])

    def _pow(self, e):
        """A power; an odd root of a negative number is real (``x^(-2/3)`` for ``cbrt``)."""
        x, p = self(e.args[0]), e.param
        ratio = Fraction(p).limit_denominator(64)
        if float(ratio) == p and ratio.denominator % 2 == 1 and ratio.denominator > 1:
            magnitude = jnp.abs(x) ** p
            return jnp.where(x < 0, magnitude * (-1.0) ** ratio.numerator, magnitude)
        return x ** p

    def _inv(self, e):
        return jnp.linalg.inv(self(e.args[0]))

    def _powe(self, e):
        return self(e.args[0]) ** self(e.args[1])

    def _reshape(self, e):
        return self(e.args[0])

    def _sum(self, e):
        return jnp.sum(self(e.args[0]), axis=tuple(e.param))

    def _reduce(self, e):
        name, axes = e.param
        if name not in _REDUCE:
            raise NotWritten(f"no reduction {name!r}")
        return _REDUCE[name](self(e.args[0]), axis=tuple(axes))

    # -- logic --------------------------------------------------------------------------------
    def _cmp(self, e):
        return _CMP[e.param](self(e.args[0]), self(e.args[1]))

    def _not(self, e):
        return jnp.logical_not(self(e.args[0]))

    def _ind(self, e):
        return self(e.args[0]).astype(jnp.float32)

    def _where(self, e):
        return jnp.where(*(self(a) for a in e.args))

    # -- linear algebra -----------------------------------------------------------------------
    def _T(self, e):
        return jnp.transpose(self(e.args[0]), e.param)

    def _matmul(self, e):
        return jnp.matmul(self(e.args[0]), self(e.args[1]))

    def _dot(self, e):
        return jnp.vdot(self(e.args[0]), self(e.args[1]))

    def _outer(self, e):
        return jnp.multiply.outer(self(e.args[0]), self(e.args[1]))

    def _vecmat(self, e):
        v, m = self(e.args[0]), self(e.args[1])
        return jnp.tensordot(v, m, axes=v.ndim)

    def _concat(self, e):
        return jnp.concatenate([self(a) for a in e.args], axis=e.param)

    def _call(self, e):
        name = e.param
        if name.startswith("softmax_{"):
            axes = tuple(int(a) for a in name[len("softmax_{"):-1].split(","))
            return jax.nn.softmax(self(e.args[0]), axis=axes)
        fn = _CALLS.get(name) or _jax_function(name)
        if fn is None:
            raise NotWritten(f"no function {name!r}")
        args = [self(a) for a in e.args]
        try:
            return fn(*args)
        except TypeError as error:  # JAX's operation needs parameters the text leaves out
            raise NotWritten(f"{name} is written without its parameters ({error})") from None


def _kept_axes(value: jax.Array, shape: tuple) -> jax.Array:
    """``value`` with size-1 axes inserted where ``shape`` has axes it lacks: its axes matched
    in order to the axes of ``shape`` of the same size (``(4,)`` in ``(3, 4, 5)``)."""
    out, k = [], 0
    dims = [d for d in value.shape if d != 1]
    for n in shape:
        if k < len(dims) and dims[k] == n:
            out.append(n)
            k += 1
        else:
            out.append(1)
    if k != len(dims):
        raise NotWritten(f"an array of shape {value.shape} does not fit {shape}")
    return value.reshape(out)


def _jax_function(name: str) -> Callable | None:
    """``jax.numpy``'s or ``jax.lax``'s element-wise function of that name."""
    for module in (jnp, jax.lax):
        fn = getattr(module, name, None)
        if callable(fn):
            return fn
    return None
