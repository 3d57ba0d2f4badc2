r"""Expressions: what a value *is*, in the paper's notation, for the printed formula.

Every value ``mcjax.derive`` meets (an argument, an intermediate of ``f``, an entry of a
structured Jacobian) carries an ``Expr`` beside its array: ``z = W x + b`` is
``Expr("add", (Expr("matmul", (W, x)), b))``.  Expressions are immutable and hashable (they
ride in the static part of a Jacobian's pytree) and are built only through the constructors
below, which fold constants and drop neutral elements (``1 x`` is ``x``, ``x - 0`` is ``x``)
so that a derivative reads as a person would write it.

Nothing here computes a number: ``mcjax._jacobian._sym`` pairs each expression with its
value.
"""

from __future__ import annotations

import math
from collections import Counter
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
    """An argument of ``f``, named ``text`` / ``latex``."""
    return Expr("arg", (), (text, latex), tuple(shape))


def constant(text: str, latex: str, shape=()) -> Expr:
    """An array ``f`` closes over, named ``text`` / ``latex`` (written as an argument is, but
    no function of ``f``'s arguments)."""
    return Expr("arg", (), (text, latex, "constant"), tuple(shape))


def reads_argument(e: Expr) -> bool:
    """Whether ``e`` depends on an argument of ``f`` (not only on numbers and constants)."""
    stack, seen = [e], set()
    while stack:
        node = stack.pop()
        if node.op == "arg" and len(node.param) == 2:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(node.args)
    return False


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
    if a.op == "mul" and core(a.args[0]).op == "sub":  # -(y - s) x is (s - y) x
        return mul(neg(a.args[0]), a.args[1])
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
    if a.op == "neg" and b.op != "num":  # -e_1 + s is s - e_1
        return sub(b, a.args[0])
    if a.op == "num" and a.param < 0 and b.op != "num":  # -0.3 + s is s - 0.3
        return sub(b, num(-a.param, a.shape))
    if b.op == "num" and b.param < 0:
        return sub(a, num(-b.param, b.shape))
    c = core(b)
    if c.op == "mul" and c.args[0].op == "num" and c.args[0].param < 0:
        return sub(a, _reshaped(mul(num(-c.args[0].param), c.args[1]), b.shape))
    ca, ta = coefficient(a)
    cb, tb = coefficient(b)
    if ta == tb:  # like terms: x + 2 x is 3 x
        return _reshaped(mul(num(ca + cb), ta), shape)
    collected = _collected(a, b, 1.0, shape)
    if collected is not None:
        return collected
    factored = _factored(a, b, add, shape)
    if factored is not None:
        return factored
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
    collected = _collected(a, b, -1.0, shape)
    if collected is not None:
        return collected
    factored = _factored(a, b, sub, shape)
    if factored is not None:
        return factored
    return Expr("sub", (a, b), None, shape)


# -- like terms, collected where expanding products cancels some ----------------------------------
_MAX_TERMS = 12


def _collected(a: Expr, b: Expr, sign: float, shape) -> Expr | None:
    """``a + sign b`` with its products expanded and like terms collected, where some cancel:
    ``(1 - y) σ(z) x - y (1 - σ(z)) x`` is ``(σ(z) - y) x``.  None where nothing cancels (the
    sum as written is kept) or the expansion would pass ``_MAX_TERMS`` terms."""
    if not (_distributes(a) or _distributes(b)):
        return None
    terms_a, terms_b = _expanded(a), _expanded(b)
    if terms_a is None or terms_b is None:
        return None
    terms = terms_a + [(sign * c, f) for c, f in terms_b]
    if len(terms) > _MAX_TERMS:
        return None
    collected: dict = {}
    for c, factors in terms:
        key = frozenset(Counter(factors).items())
        previous = collected.get(key, (0.0, factors))
        collected[key] = (previous[0] + c, previous[1])
    kept = [(c, f) for c, f in collected.values() if c != 0.0]
    if len(kept) >= len(terms):
        return None
    if not kept:
        return num(0.0, shape)
    common = Counter(kept[0][1])
    for _, f in kept[1:]:
        common &= Counter(f)
    common_factors = []
    for f in kept[0][1]:
        if common[f] > 0:
            common[f] -= 1
            common_factors.append(f)
    result = None
    for c, factors in kept:
        rest = Counter(factors)
        rest.subtract(common_factors)
        term = num(c)
        for f in factors:
            if rest[f] > 0:
                rest[f] -= 1
                term = mul(term, f)
        result = term if result is None else add(result, term)
    assert result is not None
    for f in common_factors:
        result = mul(result, f)
    return _reshaped(result, shape)


def _factored(a: Expr, b: Expr, combine, shape) -> Expr | None:
    """``(p ± q) f`` for ``p f ± q f``: the factors two products share, taken out."""
    fa, fb = _factors(a), _factors(b)
    if len(fa) < 2 or len(fb) < 2:
        return None
    rest_b = Counter(fb)
    common = []
    for f in fa:
        if f.op != "num" and rest_b[f] > 0:
            rest_b[f] -= 1
            common.append(f)
    if not common or len(common) == len(fa) or len(common) == len(fb):
        return None
    taken = Counter(common)
    rest_a = []
    for f in fa:
        if taken[f] > 0:
            taken[f] -= 1
        else:
            rest_a.append(f)
    rest = []
    for f in fb:
        if rest_b[f] > 0:
            rest_b[f] -= 1
            rest.append(f)
    return _reshaped(mul(combine(_product(rest_a), _product(rest)), _product(common)), shape)


def _product(factors: list[Expr]) -> Expr:
    out = factors[0]
    for f in factors[1:]:
        out = mul(out, f)
    return out


def _distributes(e: Expr) -> bool:
    """Whether ``e`` holds a product with a sum for a factor (one expansion could cancel)."""
    e = core(e)
    if e.op == "mul":
        return any(core(x).op in ("add", "sub") or _distributes(x)
                   for x in e.args) or _sigmoid_of_negative(e.args[0]) or \
            _sigmoid_of_negative(e.args[1])
    if e.op in ("add", "sub", "neg"):
        return any(_distributes(x) for x in e.args)
    return False


def _sigmoid_of_negative(e: Expr) -> bool:
    e = core(e)
    return e.op == "call" and e.param == "sigmoid" and core(e.args[0]).op == "neg"


def _expanded(e: Expr) -> list[tuple[float, tuple[Expr, ...]]] | None:
    """``e`` as a sum of monomials ``(c, factors)``; ``σ(-z)`` is ``1 - σ(z)``."""
    e = core(e)
    if e.op == "num" and e.shape == ():
        return [(e.param, ())]
    if _sigmoid_of_negative(e):
        inner = core(e.args[0]).args[0]
        return [(1.0, ()), (-1.0, (call("sigmoid", inner, shape=e.shape),))]
    if e.op not in ("add", "sub", "neg", "mul"):
        return [(1.0, (e,))]
    parts = []
    for x in e.args:
        part = _expanded(x)
        if part is None:
            return None
        parts.append(part)
    if e.op == "neg":
        return [(-c, f) for c, f in parts[0]]
    if e.op in ("add", "sub"):
        sign = 1.0 if e.op == "add" else -1.0
        out = parts[0] + [(sign * c, f) for c, f in parts[1]]
    else:
        out = [(ca * cb, fa + fb) for ca, fa in parts[0] for cb, fb in parts[1]]
    return out if len(out) <= _MAX_TERMS else None


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
        d = core(b)
        if d.op == "div" and d.args[0].op == "num" and core(d.args[1]).op == "mul" and \
                core(d.args[1]).args[0].op == "num":  # 2 (1 / (2 u)) is 1 / u
            inner = core(d.args[1])
            return _reshaped(div(num(a.param * d.args[0].param / inner.args[0].param),
                                 inner.args[1]), shape)
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
    if core(a).op == "vecmat" and b.shape == ():  # (uᵀ M) / s is (u / s)ᵀ M where u / s is one
        v, m = core(a).args
        moved = div(v, b)
        if core(moved).op != "div":
            return _reshaped(vecmat(moved, m, core(a).shape), shape)
    d = core(b)
    if d.op == "mul" and d.args[0].op == "num" and d.args[0].shape == () and d.args[0].param \
            and a.op != "num":
        # x / (2 u) is 1/2 (x / u): the number joins the others
        return _reshaped(mul(num(1.0 / d.args[0].param), div(a, d.args[1])), shape)
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
    # softmax(x) is over the last axis, as jax.nn.softmax's default
    name = "softmax" if tuple(axes) == (len(a.shape) - 1,) else \
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
    even = exponent == int(exponent) and int(exponent) % 2 == 0
    if a.op == "neg" and even:  # (-x)² is x²
        return power(a.args[0], exponent)
    if a.op == "mul" and a.args[0].op == "num" and a.args[0].shape == () and \
            exponent == int(exponent):  # (c x)² is c² x²
        return mul(num(a.args[0].param ** exponent), power(a.args[1], exponent))
    if a.op == "call" and a.param == "sqrt" and exponent == 2.0:  # sqrt(v)² is v
        return a.args[0]
    return Expr("pow", (a,), float(exponent), a.shape)


def inverse(a: Expr) -> Expr:
    """The matrix inverse $A^{-1}$ (of each matrix in a batch: the last two axes)."""
    if core(a).op == "inv":
        return core(a).args[0]
    return Expr("inv", (a,), None, a.shape)


def pow_expr(a: Expr, b: Expr) -> Expr:
    """``a`` to the power ``b``, both expressions."""
    if b.op == "num" and b.shape == ():
        return power(a, b.param)
    return Expr("powe", (a, b), None, _broadcast(a.shape, b.shape))


def call(name: str, *args: Expr, shape=None) -> Expr:
    """A named function: ``exp(x)``, ``sigmoid(x)``, ``max(x, y)``, ``sum(x)``; the sign and
    the absolute value of what is positive are known (``logsumexp``'s ``sign(u) / abs(u)``)."""
    if shape is None:
        shape = _broadcast(*(a.shape for a in args)) if args else ()
    if name in ("sign", "abs") and len(args) == 1 and positive(args[0]):
        return _reshaped(num(1.0, args[0].shape) if name == "sign" else args[0], shape)
    return Expr("call", tuple(args), name, tuple(shape))


_POSITIVE_CALLS = frozenset({"exp", "sigmoid", "cosh", "exp2"})


def positive(e: Expr) -> bool:
    """Whether ``e`` is positive wherever it is defined: exponentials, and sums, products and
    quotients of positive values."""
    e = core(e)
    if e.op == "num":
        return e.param > 0
    if e.op == "const":
        return all(v > 0 for v in e.param)
    if e.op == "call":
        return e.param in _POSITIVE_CALLS or (e.param == "sqrt" and positive(e.args[0]))
    if e.op in ("sum", "add", "mul", "div"):
        return all(positive(a) for a in e.args)
    if e.op == "pow":
        return positive(e.args[0])
    return False


_NONNEGATIVE_CALLS = frozenset({"abs", "relu", "sqrt", "softplus"})


def sign(e: Expr) -> int:
    """What is known of the sign of ``e`` wherever it is defined: ``1`` if every entry is
    ``>= 0``, ``-1`` if every entry is ``<= 0``, ``0`` if nothing is known.  Only what the
    expression shows counts (an exponential, an indicator, a square, a product of known
    signs); a value that happens to be positive at one point is not known to be."""
    e = core(e)
    if e.op == "num":
        return 0 if math.isnan(e.param) else 1 if e.param >= 0 else -1
    if e.op in ("index", "T"):  # a part of a value, its transpose: the same entries
        return sign(e.args[0])
    if e.op == "const":
        return 1 if all(v >= 0 for v in e.param) else -1 if all(v <= 0 for v in e.param) else 0
    if positive(e) or e.op in ("ind", "onehot"):
        return 1
    if e.op == "call":
        known = e.param in _NONNEGATIVE_CALLS or str(e.param).startswith("softmax")
        return 1 if known else 0
    if e.op == "pow":
        even = e.param == int(e.param) and int(e.param) % 2 == 0
        return 1 if even or sign(e.args[0]) == 1 else 0
    if e.op == "neg":
        return -sign(e.args[0])
    if e.op in ("mul", "div"):
        a, b = sign(e.args[0]), sign(e.args[1])
        return a * b
    if e.op in ("add", "sum"):
        signs = {sign(a) for a in e.args}
        return signs.pop() if len(signs) == 1 else 0
    if e.op == "sub":
        a, b = sign(e.args[0]), -sign(e.args[1])
        return a if a == b else 0
    return 0


def compare(op: str, a: Expr, b: Expr) -> Expr:
    """``a op b`` with op one of ``> < >= <= == !=`` (a boolean); ``k == (0, 1, ...)`` is the
    one-hot vector ``e_k``."""
    shape = _broadcast(a.shape, b.shape)
    if core(a).op == "num" and core(b).op == "num":  # 4 > 0: known
        truth = {">": float.__gt__, "<": float.__lt__, ">=": float.__ge__, "<=": float.__le__,
                 "==": float.__eq__, "!=": float.__ne__}[op](core(a).param, core(b).param)
        return Expr("truth", (), bool(truth), shape)
    if op == "==" and core(a).op == core(b).op == "iota" and len(shape) == 2 and \
            core(a).param[0] != core(b).param[0] and shape[0] == shape[1]:
        return constant("I", "I", shape)  # i == j: the identity's mask (a trace, a diagonal)
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
    if core(condition).op == "onehot" or _is_identity(condition):
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
    for x, y in ((a, b), (b, a)):
        if _is_identity(x) and core(y).shape == tuple(shape):
            return y
    return Expr("matmul", (a, b), None, tuple(shape))


def _is_identity(e: Expr) -> bool:
    e = core(e)
    return e.op == "arg" and e.param[:2] == ("I", "I") and len(e.shape) == 2


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
    """``a`` in ``shape``: its entries in another shape, or broadcast (NumPy's rule: leading
    axes added, axes of size 1 repeated).  A reshape of a reshape is one, but a broadcast
    keeps the shape it broadcasts from (``x[:, None]`` spread over columns is not ``x``
    spread over rows)."""
    shape = tuple(shape)
    if a.shape == shape:
        return a
    if a.op == "num":
        return num(a.param, shape)
    if a.op == "reshape" and math.prod(shape) == math.prod(a.shape):
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


def onehot(k: Expr, size: int, shape) -> Expr:
    r"""$\mathbf{e}_k$: 1 at index ``k`` of ``size`` along the first axis, else 0."""
    if size == 1:  # the one entry there is
        return num(1.0, shape)
    return Expr("onehot", (core(k),), (0, size), tuple(shape))


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
