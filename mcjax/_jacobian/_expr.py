r"""Expressions: what a value *is*, in the paper's notation, for the printed formula.

Every value :func:`mcjax.derive` meets (an argument, an intermediate of ``f``, an entry of a
structured Jacobian) carries an :class:`Expr` beside its array: ``z = W x + b`` is
``Expr("add", (Expr("matmul", (W, x)), b))``.  Expressions are immutable and hashable (they
ride in the static part of a Jacobian's pytree) and are built only through the constructors
below, which fold constants and drop neutral elements (``1 x`` is ``x``, ``x - 0`` is ``x``)
so that a derivative reads as a person would write it.

Nothing here computes a number: :mod:`mcjax._jacobian._sym` pairs each expression with its
value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Expr:
    """One node of an expression.

    Attributes:
      op: what the node does: ``"arg"``, ``"num"``, ``"add"``, ``"mul"``, ``"call"``, ...
      args: the operands.
      param: the node's hashable parameter: a name, a number, a comparison, a slice.
      shape: the shape of the value (a scalar is ``()``).
      var: whether the node is the value of one variable of ``f``'s program, which the printer
        may name (``z = W x + b``) instead of writing it out each time.
      hint: the letter such a name should use (``"z"`` for a pre-activation), or ``""``.
    """

    op: str
    args: tuple[Expr, ...] = ()
    param: Any = None
    shape: tuple[int, ...] = ()
    # how to print it, not what it is: an expression equals the same value computed elsewhere
    var: bool = field(default=False, compare=False)
    hint: str = field(default="", compare=False)
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self):
        # computed once: Jacobian pytrees hash their static part, which holds expressions
        object.__setattr__(self, "_hash", hash((self.op, self.args, self.param, self.shape)))

    def __hash__(self) -> int:
        return self._hash

    def as_var(self, hint: str = "") -> Expr:
        """This expression as the value of a program variable (nameable by the printer)."""
        if self.op in ("arg", "num", "const"):
            return self
        return Expr(self.op, self.args, self.param, self.shape, True, hint or self.hint)


# -- leaves ----------------------------------------------------------------------------------
def arg(text: str, latex: str, shape=()) -> Expr:
    """An argument of ``f`` (or a constant it closes over), named ``text`` / ``latex``."""
    return Expr("arg", (), (text, latex), tuple(shape))


def num(value: float, shape=()) -> Expr:
    """A number; ``shape`` when it stands for an array filled with it."""
    value = float(value)
    if math.isfinite(value) and value == int(value):
        value = float(int(value))
    return Expr("num", (), value, tuple(shape))


ZERO, ONE = num(0.0), num(1.0)


def _is(e: Expr, value: float) -> bool:
    e = core(e)
    return e.op == "num" and e.param == value


def core(e: Expr) -> Expr:
    """``e`` without the reshapes and broadcasts around it (which printing leaves implicit)."""
    while e.op == "reshape":
        e = e.args[0]
    return e


def _scalar(e: Expr) -> Expr:
    """A one-entry value broadcast in an element-wise operation is written as the scalar
    itself: broadcasting is implicit in the notation (and ``u / s`` then equals ``u / s``
    however ``s`` was broadcast)."""
    c = core(e)
    return c if math.prod(c.shape) == 1 and c.op != "num" else e


def _broadcast(*shapes) -> tuple[int, ...]:
    """The broadcast shape of operands (a scalar operand takes the other's shape)."""
    ndim = max(len(s) for s in shapes)
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
    return tuple(max(dims) for dims in zip(*padded))


# -- arithmetic, simplifying as it goes -------------------------------------------------------
def neg(a: Expr) -> Expr:
    if a.op == "num":
        return num(-a.param, a.shape)
    if a.op == "neg":
        return a.args[0]
    if a.op == "sub":  # -(a - b) is b - a
        return sub(a.args[1], a.args[0])
    if a.op == "mul" and a.args[0].op == "num":
        return mul(num(-a.args[0].param), a.args[1])
    return Expr("neg", (a,), None, a.shape)


def add(a: Expr, b: Expr) -> Expr:
    shape = _broadcast(a.shape, b.shape)
    a, b = _scalar(a), _scalar(b)
    if _is(a, 0.0) and b.shape == shape:
        return _reshaped(b, shape)
    if _is(b, 0.0) and a.shape == shape:
        return _reshaped(a, shape)
    if a.op == "num" and b.op == "num":
        return num(a.param + b.param, shape)
    if b.op == "neg":
        return sub(a, b.args[0])
    if b.op == "num" and b.param < 0:
        return sub(a, num(-b.param, b.shape))
    c = core(b)
    if c.op == "mul" and c.args[0].op == "num" and c.args[0].param < 0:
        return sub(a, _reshaped(mul(num(-c.args[0].param), c.args[1]), b.shape))
    ca, ta = coefficient(a)
    cb, tb = coefficient(b)
    if ta == tb:  # like terms: x + 2 x is 3 x
        return _reshaped(mul(num(ca + cb), ta), shape)
    return Expr("add", (a, b), None, shape)


def coefficient(e: Expr) -> tuple[float, Expr]:
    """``(c, x)`` for ``e = c x`` with a number ``c``, ``(-1, x)`` for ``-x``, else ``(1, e)``."""
    e = core(e)
    if e.op == "mul" and e.args[0].op == "num" and e.args[0].shape == ():
        return e.args[0].param, e.args[1]
    if e.op == "neg":
        c, x = coefficient(e.args[0])
        return -c, x
    return 1.0, e


def sub(a: Expr, b: Expr) -> Expr:
    shape = _broadcast(a.shape, b.shape)
    a, b = _scalar(a), _scalar(b)
    if _is(b, 0.0) and b.shape == ():
        return _reshaped(a, shape)
    if _is(a, 0.0) and a.shape == ():
        return _reshaped(neg(b), shape)
    if a.op == "num" and b.op == "num":
        return num(a.param - b.param, shape)
    if b.op == "neg":
        return add(a, b.args[0])
    return Expr("sub", (a, b), None, shape)


def mul(a: Expr, b: Expr) -> Expr:
    """The element-wise product (numbers first: ``2 x``, never ``x 2``)."""
    shape = _broadcast(a.shape, b.shape)
    a, b = _scalar(a), _scalar(b)
    if b.op == "num" and a.op != "num":
        a, b = b, a
    if a.op == "num":
        if a.param == 0.0:
            return num(0.0, shape)
        if a.param == 1.0:
            return _reshaped(b, shape)
        if a.param == -1.0:
            return _reshaped(neg(b), shape)
        if b.op == "num":
            return num(a.param * b.param, shape)
        if b.op == "mul" and b.args[0].op == "num":
            return mul(num(a.param * b.args[0].param), b.args[1])
        if b.op == "neg":
            return mul(num(-a.param), b.args[0])
    if a.op == "neg":
        return neg(mul(a.args[0], b))
    if b.op == "neg":
        return neg(mul(a, b.args[0]))
    for x, y in ((a, b), (b, a)):  # (u / s) s is u
        if core(x).op == "div" and core(core(x).args[1]) == core(y):
            return _reshaped(core(x).args[0], shape)
    if b.op == "mul" and b.args[0].op == "num":  # x (2 y) -> 2 (x y)
        return mul(b.args[0], mul(a, b.args[1]))
    if a == b:
        return power(a, 2.0)
    if a.op == "mul" and a.args[0].op == "num":  # (2 x) y -> 2 (x y)
        return mul(a.args[0], mul(a.args[1], b))
    if core(a).op == "div" and _is(core(a).args[0], 1.0):  # (1/s) v -> v / s
        return div(_reshaped(b, shape), core(a).args[1])
    if core(b).op == "div" and _is(core(b).args[0], 1.0):
        return div(_reshaped(a, shape), core(b).args[1])
    return Expr("mul", (a, b), None, shape)


def div(a: Expr, b: Expr) -> Expr:
    shape = _broadcast(a.shape, b.shape)
    a, b = _scalar(a), _scalar(b)
    if _is(b, 1.0):
        return _reshaped(a, shape)
    if a.op == "num" and b.op == "num" and b.param != 0:
        return num(a.param / b.param, shape)
    if a.op == "num" and a.param < 0:
        return neg(div(num(-a.param, a.shape), b))
    if a.op == "neg":
        return neg(div(a.args[0], b))
    if core(a).op == "div":  # (u / v) / w is u / (v w): x / z / z is x / z^2
        return _reshaped(div(core(a).args[0], mul(core(a).args[1], b)), shape)
    cancelled = _cancel(a, b)
    if cancelled is not None:  # sigmoid(z) u x / sigmoid(z) is u x
        return _reshaped(cancelled, shape)
    softmax = _softmax(a, b)
    if softmax is not None:  # exp(x - c) / sum(exp(x - c)), whatever the shift c
        return _reshaped(softmax, shape)
    return Expr("div", (a, b), None, shape)


def _factors(e: Expr) -> list[Expr]:
    """The factors of a product ``a b c`` (one for anything else)."""
    e = core(e)
    return _factors(e.args[0]) + _factors(e.args[1]) if e.op == "mul" else [e]


def _cancel(a: Expr, b: Expr) -> Expr | None:
    """``a / b`` with a factor ``b`` of ``a`` cancelled, or None."""
    factors = _factors(a)
    if len(factors) < 2 or core(b) not in factors:
        return None
    factors.remove(core(b))
    product = factors[0]
    for f in factors[1:]:
        product = mul(product, f)
    return product


def _softmax(a: Expr, b: Expr) -> Expr | None:
    """``softmax(x)`` if ``a / b`` is ``exp(x - c) / sum(exp(x - c))`` (the shift ``c``, a max
    under ``stop_gradient`` in ``jax.nn.softmax``, leaves no trace on the value)."""
    a, b = core(a), core(b)
    if not (a.op == "call" and a.param == "exp" and b.op == "sum" and core(b.args[0]) == a):
        return None
    axes = b.param
    x = core(a.args[0])
    if x.op == "sub":  # a shift that is constant along the summed axes leaves no trace
        shift = core(x.args[1]).shape
        if shift == () or (len(shift) == len(x.shape) and all(shift[i] == 1 for i in axes)):
            x = x.args[0]
    name = "softmax" if len(axes) == len(a.shape) or axes == (len(a.shape) - 1,) else \
        f"softmax_{{{','.join(map(str, axes))}}}"
    return Expr("call", (x,), name, a.shape, True, "s")


def power(a: Expr, exponent: float) -> Expr:
    if exponent == 1.0:
        return a
    if exponent == 0.0:
        return num(1.0, a.shape)
    if a.op == "num":
        return num(a.param**exponent, a.shape)
    if a.op == "pow":
        return power(a.args[0], a.param * exponent)
    if a.op == "call" and a.param == "sqrt" and exponent == 2.0:  # sqrt(v)² is v
        return a.args[0]
    return Expr("pow", (a,), float(exponent), a.shape)


def pow_expr(a: Expr, b: Expr) -> Expr:
    """``a`` to the power ``b``, both expressions."""
    if b.op == "num" and b.shape == ():
        return power(a, b.param)
    return Expr("powe", (a, b), None, _broadcast(a.shape, b.shape))


def call(name: str, *args: Expr, shape=None) -> Expr:
    """A named function: ``exp(x)``, ``sigmoid(x)``, ``max(x, y)``, ``sum(x)``."""
    if shape is None:
        shape = _broadcast(*(a.shape for a in args)) if args else ()
    return Expr("call", tuple(args), name, tuple(shape))


def compare(op: str, a: Expr, b: Expr) -> Expr:
    """``a op b`` with op one of ``> < >= <= == !=`` (a boolean); ``k == (0, 1, ...)`` is the
    one-hot vector ``e_k``."""
    shape = _broadcast(a.shape, b.shape)
    if core(a).op == "num" and core(b).op == "num":  # 4 > 0: known
        truth = {">": float.__gt__, "<": float.__lt__, ">=": float.__ge__, "<=": float.__le__,
                 "==": float.__eq__, "!=": float.__ne__}[op](core(a).param, core(b).param)
        return Expr("truth", (), bool(truth), shape)
    if op == "==":
        for k, indices in ((a, b), (b, a)):
            if core(indices).op == "iota":
                axis, size = core(indices).param
                return Expr("onehot", (core(k),), (axis, size), shape)
    return Expr("cmp", (a, b), op, shape)


_NEGATED = {">": "<=", "<": ">=", ">=": "<", "<=": ">", "==": "!=", "!=": "=="}


def logical_not(a: Expr) -> Expr:
    if a.op == "cmp":
        return Expr("cmp", a.args, _NEGATED[a.param], a.shape)
    if a.op == "not":
        return a.args[0]
    return Expr("not", (a,), None, a.shape)


def indicator(condition: Expr) -> Expr:
    """$\\mathbb{1}[c]$: 1 where the condition holds, else 0 (a one-hot is its own)."""
    if core(condition).op == "onehot":
        return condition
    if core(condition).op == "truth":
        return num(1.0 if core(condition).param else 0.0, condition.shape)
    return Expr("ind", (condition,), None, condition.shape)


def transpose(a: Expr, perm: tuple[int, ...] | None = None) -> Expr:
    """``aᵀ`` (a matrix transposed; a vector or scalar is left as it is)."""
    if len(a.shape) < 2:
        return a
    perm = tuple(reversed(range(len(a.shape)))) if perm is None else tuple(perm)
    if a.op == "T" and len(a.shape) == 2:
        return a.args[0]
    shape = tuple(a.shape[p] for p in perm)
    return Expr("T", (a,), perm, shape)


def matmul(a: Expr, b: Expr, shape) -> Expr:
    """A matrix product as a person writes it: ``W x``, ``X w``, ``x Wᵀ``, ``A B``."""
    return Expr("matmul", (a, b), None, tuple(shape))


def dot(a: Expr, b: Expr) -> Expr:
    """The dot product of two vectors, ``w·x``."""
    return Expr("dot", (a, b), None, ())


def outer(a: Expr, b: Expr, shape) -> Expr:
    """The outer product ``a bᵀ``."""
    return Expr("outer", (a, b), None, tuple(shape))


def reshaped(a: Expr, shape) -> Expr:
    """The same entries in another shape: printed as ``a`` itself (shapes are implicit)."""
    return _reshaped(a, tuple(shape))


def _reshaped(a: Expr, shape) -> Expr:
    shape = tuple(shape)
    if a.shape == shape:
        return a
    if a.op == "num":
        return num(a.param, shape)
    if a.op == "reshape":
        a = a.args[0]
        if a.shape == shape:
            return a
    return Expr("reshape", (a,), None, shape)


def part(a: Expr, text: str, latex: str, shape) -> Expr:
    """A part of ``a`` picked by indexing: ``x[1:3]``, ``X[:, 0]``."""
    return Expr("index", (a,), (text, latex), tuple(shape))


def total(a: Expr, axes: tuple[int, ...], shape) -> Expr:
    """The sum of ``a`` over ``axes`` (all of them: ``sum(a)``); numbers factor out."""
    if not axes:
        return _reshaped(a, shape)
    if a.op == "onehot" and a.param[0] in axes:  # sum(e_k) is 1
        return num(1.0, shape)
    if _centred(a, axes):  # sum(x - mean(x)) is 0
        return num(0.0, shape)
    if a.op == "neg":
        return neg(total(a.args[0], axes, shape))
    if a.op == "mul" and a.args[0].op == "num" and a.args[0].shape == ():
        return mul(a.args[0], total(a.args[1], axes, shape))
    return Expr("sum", (a,), tuple(axes), tuple(shape))


def _centred(a: Expr, axes) -> bool:
    """Whether ``a`` is ``x - sum(x, axes) / n`` over the same axes (its sum is 0)."""
    a = core(a)
    if a.op != "sub":
        return False
    x, mean = core(a.args[0]), core(a.args[1])
    if mean.op != "div" or core(mean.args[1]).op != "num":
        return False
    total_ = core(mean.args[0])
    n = math.prod(x.shape[i] for i in axes) if all(i < len(x.shape) for i in axes) else -1
    return (total_.op == "sum" and core(total_.args[0]) == x and tuple(total_.param) == tuple(axes)
            and core(mean.args[1]).param == n)


def where(cond: Expr, yes: Expr, no: Expr) -> Expr:
    c = core(cond)
    if c.op == "truth":
        return yes if c.param else no
    if c.op == "cmp" and c.param == "<" and _is(c.args[1], 0.0) and core(no) == core(c.args[0]) \
            and core(yes).op == "add" and core(core(yes).args[0]) == core(no):
        return no  # where(i < 0, i + n, i): an index read from the end, as written
    return Expr("where", (cond, yes, no), None, _broadcast(cond.shape, yes.shape, no.shape))


def iota(size: int, axis: int, shape) -> Expr:
    """The indices ``0, 1, ..., size - 1`` along ``axis``."""
    return Expr("iota", (), (axis, size), tuple(shape))


def vecmat(v: Expr, m: Expr, shape) -> Expr:
    """``Mᵀ v`` as a value; written as the row ``vᵀ M`` when it is a gradient."""
    if math.prod(core(m).shape) == 1 or math.prod(core(v).shape) == 1:  # a number: a product
        return _reshaped(mul(v, m), shape)
    if v.op == "neg":
        return neg(vecmat(v.args[0], m, shape))
    if v.op == "mul" and v.args[0].op == "num" and v.args[0].shape == ():
        return mul(v.args[0], vecmat(v.args[1], m, shape))
    return Expr("vecmat", (v, m), None, tuple(shape))


def concat(parts: tuple[Expr, ...], axis: int, shape) -> Expr:
    return Expr("concat", tuple(parts), axis, tuple(shape))


def opaque(name: str, args: tuple[Expr, ...], shape) -> Expr:
    """A primitive mcjax prints by its JAX name: ``cumsum(x)``."""
    return Expr("call", tuple(args), name, tuple(shape))


def nodes(e: Expr):
    """Every node of ``e``, depth first, parents before children (repeats included)."""
    stack = [e]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.args))
