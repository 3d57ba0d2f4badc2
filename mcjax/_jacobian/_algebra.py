r"""The structured Jacobian type and its one algebra.

Parr & Howard's central observation (§4.2-§4.4) is that the Jacobians of deep learning are
structured: element-wise operators give diagonal matrices, scalar expansion a column of ones,
sum reduction a row of ones, the affine map with respect to ``W`` a Kronecker-shaped tensor.
A ``mcjax.Jacobian`` is such a linear map from arrays of ``in_shape`` to arrays of
``out_shape``: it applies itself to a tangent (``jvp``, $J v$) or a cotangent (``vjp``,
$u^\top J$) without building the dense array, and turns into the dense numerator-layout array
on request (``J.dense()``, shape ``out_shape + in_shape``).

The algebra is written once, here, for every structure and every user (hand-written rules,
``mcjax.derive``, the checker):

- ``compose`` is the vector chain rule (§4.5.3), ``outer @ inner``: identities vanish,
  zeros absorb, a scalar factor scales the other one, a row $\mathbf{v}^\top$ (the derivative
  of a scalar) is pulled through whatever follows, so the derivative of a loss ends as its
  gradient, a column is pushed the same way, and adjacent factors multiply out where their
  product is one structure (a diagonal times a diagonal); the rest stays factored;
- ``mcjax.add`` is the total-derivative rule (§4.5.2): terms of one structure merge, and two
  paths that end in the same factors are factored, $(A + B) J$;
- ``scale`` multiplies by a scalar, keeping the structure.

What a structure contributes sits beside its class (the lineax pattern): its ``jvp``, ``vjp``
and ``dense``, and its registrations with the generic functions below (``scale``,
``pull``, ``push``, ``write``, ...) and with the
pair tables (``simplifies``, ``merges``).  This module holds the type, the generic
operations and the structures the algebra itself produces: the zero map, $cI$, a product and
a sum.  Every value is frozen and carries, beside its arrays, the expressions they stand
for (``symbols``, set by ``mcjax.derive``; ``None`` for a Jacobian built by hand).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._core._conventions import wider
from mcjax._core._errors import ShapeError, shape_str
from mcjax._jacobian import _expr as E
from mcjax._jacobian import _formula as F
from mcjax._jacobian import _lineax as L
from mcjax._jacobian._print import ATOM, PRODUCT, SUM
from mcjax._jacobian._sym import Sym, lift
from mcjax._program._compile import compiler_options, run_compiled
from mcjax._program._trace import has_tracers

Shape = tuple[int, ...]


def _eye_tensor(shape: Shape, dtype) -> jax.Array:
    """The identity on arrays of ``shape``, as a tensor of shape ``shape + shape``."""
    size = math.prod(shape)
    return jnp.eye(size, dtype=dtype).reshape(tuple(shape) + tuple(shape))


def common_prefix(a: Shape, b: Shape) -> int:
    """The number of leading axes on which the shapes ``a`` and ``b`` agree."""
    t = 0
    while t < min(len(a), len(b)) and a[t] == b[t]:
        t += 1
    return t


class Jacobian:
    """A linear map from arrays of ``in_shape`` to arrays of ``out_shape``: a derivative.

    Subclasses store only what their structure needs (their ``_arrays`` are pytree leaves,
    their ``_static`` fields the pytree's auxiliary data) and implement ``jvp``,
    ``vjp`` and ``dense``.  Values are immutable: every operation builds a new one.
    """

    kind: str = "jacobian"
    """A short name of the structure, used in error messages (``"diagonal"``, ...)."""
    placeholder: str = "A"
    """The letter a hand-built Jacobian's array is printed with in ``formula``."""
    out_shape: Shape
    """The shape of the function's output: the leading axes of ``dense``."""
    in_shape: Shape
    """The shape of the argument: the trailing axes of ``dense``."""
    symbols: tuple | None
    """What each stored array stands for, as expressions (set by ``mcjax.derive``, which
    prints them in ``formula``); ``None`` for a Jacobian built by hand."""

    symbols_are_values: bool = True
    """Whether each symbol is the value of its array (so that the formula can be evaluated
    and compared with what is held); a selection's symbol names its index instead."""

    _arrays: tuple[str, ...] = ()
    _static: tuple[str, ...] = ()

    def _init(self, symbols=None, **fields) -> None:
        """Set the fields once, at construction (the only writes a Jacobian ever sees)."""
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "symbols", None if symbols is None else tuple(symbols))

    def __setattr__(self, name, value):
        raise AttributeError(f"mcjax.{type(self).__name__} is immutable: build a new one "
                             f"instead of setting {name!r}")

    # -- what every structured form provides -------------------------------------------
    def jvp(self, v):
        """$J v$: push a tangent of shape ``in_shape`` forward to shape ``out_shape``."""
        raise NotImplementedError

    def vjp(self, u):
        """$u^\\top J$: pull a cotangent of shape ``out_shape`` back to shape ``in_shape``."""
        return transpose_apply(self, u)

    def dense(self) -> jax.Array:
        """The dense Jacobian in numerator layout, shape ``out_shape + in_shape``.

        Called on arrays, it is one compiled program per structure (the types, their static
        fields and shapes: a formula's names are no part of it), kept in mcjax's bounded
        cache of compiled programs: a derived Jacobian with a hundred blocks compiles once,
        not once per operation.  Under ``jax.jit`` (traced leaves) it is traced in place."""
        if has_tracers(self) or not _keyed_by_value(self):
            return self._dense()
        return run_compiled(_dense_program, None, _without_names(self),
                            compiler_options=compiler_options())

    def _dense(self) -> jax.Array:
        """``dense`` for this structure (traced, or eager where no program is compiled)."""
        return dense_by_columns(self)

    by_value: bool = True
    """Whether the structure's static part is values (shapes, parameters), so that one
    compiled ``dense`` serves every Jacobian of the same structure; ``False`` where it holds a
    function (an opaque block's linear map), which would make a program per call."""

    def children(self) -> tuple[Jacobian, ...]:
        """The Jacobians this one is made of (the factors of a product, the terms of a sum)."""
        return ()

    holds_scalar: bool = False
    """Whether a scalar factor multiplies into this structure's own array (a diagonal, a
    dense array) rather than standing in front of it."""

    def is_unit_factor(self) -> bool:
        """Whether this factor is an identity matrix that a printed product leaves out (a
        reshape)."""
        return False

    def leading_batch(self) -> int:
        """How many leading axes this map is block diagonal along: the largest ``t`` with
        ``out_shape[:t] == in_shape[:t]`` and ``J[b, i; c, j] = 0`` wherever ``b != c``
        (``b``, ``c`` indices of those axes), as the structure shows it, never read from
        the numbers.  A per-example computation (a loss summed over a batch's rows) keeps
        its batch axis; ``0`` where the structure does not show one."""
        return 0

    def label(self) -> str:
        """The class name, as ``structure`` draws it."""
        return type(self).__name__

    def structure(self) -> str:
        """The tree of structures this Jacobian is made of, each with its shapes ``out ← in``
        (what ``mcjax derive`` prints): ``Composed  (8,) ← (8, 4)`` over ``Diagonal`` and
        ``Kronecker``."""
        return F.structure(self)

    @property
    def dtype(self):
        """The dtype of the stored arrays, or of the argument for a map that stores none."""
        if "dtype_name" in self._static:
            return jnp.dtype(getattr(self, "dtype_name"))
        leaves = jax.tree_util.tree_leaves(self)
        return wider(*leaves) if leaves else jnp.dtype(jnp.float32)

    @property
    def in_dtype(self):
        """The dtype of the vectors it is applied to: ``dtype``, except for a map between
        real and complex values (``real``, a cast to complex: ``mcjax.Applied``)."""
        return self.dtype

    # -- derived behaviour --------------------------------------------------------------
    @property
    def shape(self) -> Shape:
        """``out_shape + in_shape``: the shape of ``dense``."""
        return tuple(self.out_shape) + tuple(self.in_shape)

    def __matmul__(self, inner: Jacobian) -> Jacobian:
        """The vector chain rule (§4.5.3): ``(self @ inner)`` is $J_f J_g$ for $f(g(x))$."""
        if not isinstance(inner, Jacobian):
            return NotImplemented
        return compose(self, inner)

    def __add__(self, other: Jacobian) -> Jacobian:
        """Sum of two Jacobians of one shape (the total-derivative rule, §4.5.2)."""
        if not isinstance(other, Jacobian):
            return NotImplemented
        return add(self, other)

    def scaled(self, c) -> Jacobian:
        """$c J$ for a scalar ``c``, keeping the structure."""
        if not isinstance(c, Sym):  # a number; a hand-built Jacobian writes it as c
            known = isinstance(c, (int, float)) and derived(self)
            c = Sym(jnp.asarray(c), E.num(c) if known else E.arg("c", "c", ()))
        return scale(self, c)

    def __neg__(self) -> Jacobian:
        return scale(self, lift(-1.0))

    def __sub__(self, other: Jacobian) -> Jacobian:
        return self + (-other)

    def __mul__(self, c) -> Jacobian:
        return self.scaled(c)

    __rmul__ = __mul__

    def __repr__(self) -> str:
        try:
            return (f"{type(self).__name__}(out_shape={shape_str(self.out_shape)}, "
                    f"in_shape={shape_str(self.in_shape)})")
        except Exception:  # noqa: BLE001 - leaves a tree map put in (flax's repr puts its
            # ArrayRepr, a jax.tree.map may put None): say what they are instead of raising
            leaves = jax.tree_util.tree_leaves(self, is_leaf=lambda leaf: leaf is None)
            return f"{type(self).__name__}({', '.join(type(a).__name__ for a in leaves)})"

    def _repr_markdown_(self) -> str:
        """A notebook's view: the structure, its shapes and the formula, typeset."""
        return F.markdown(self)

    def _repr_latex_(self) -> str | None:
        """The formula for LaTeX front ends (nbconvert to PDF)."""
        return F.display_latex(self)

    def to_lineax(self):
        """This Jacobian as a ``lineax.AbstractLinearOperator`` (``pip install 'mcjax[lineax]'``).

        The operator maps arrays of ``in_shape`` to arrays of ``out_shape``
        (``op.in_structure()`` and ``op.out_structure()`` are ``jax.ShapeDtypeStruct`` of
        those shapes); ``op.mv(v)`` is ``jvp``, ``op.as_matrix()`` is ``dense``
        reshaped to ``(prod(out_shape), prod(in_shape))``.  It is lineax's own structure where
        there is one (``DiagonalLinearOperator`` for a diagonal, a ``PyTreeLinearOperator``
        for a dense array, ``@`` and ``+`` of the factors and terms), else a
        ``FunctionLinearOperator`` on ``jvp``.  It carries the lineax tags mcjax has
        established (a diagonal is ``diagonal_tag`` and ``symmetric_tag``; positive
        semidefinite only where its formula shows every entry to be $\\ge 0$), never
        assumed ones: lineax picks its solver by them and does not check them.

        Raises:
          ImportError: lineax is not installed.

        Example:

            >>> import lineax
            >>> J = mcjax.derive(jnp.exp)(jnp.array([0.0, 1.0]))
            >>> op = J.to_lineax()
            >>> lineax.linear_solve(op, jnp.array([1.0, 1.0])).value  # exp(-x)
            Array([1.        , 0.36787945], dtype=float32)
            >>> lineax.is_positive_semidefinite(op)  # exp(x) > 0, from the formula
            True
        """
        return L.to_lineax(self)

    def verify(self, f: Callable, *args, argnums: int = 0, probes: int = 4, seed: int = 0):
        """Check this Jacobian of ``f`` at ``args`` against JAX by random probes.

        A few random tangents $\\mathbf{v}$ and cotangents $\\mathbf{u}$ (``probes`` of
        each, from ``seed``): $J\\mathbf{v}$ by ``jvp`` against ``jax.jvp(f)``, and
        $\\mathbf{u}^\\top J$ by ``vjp`` against ``jax.vjp(f)``, within the checker's
        tolerance for the dtype, relative to the products' size (the Derive page
        of the docs states the policy).  It never builds the dense Jacobian.  For a
        derivative that is a pytree of Jacobians (``f`` of pytrees, a tuple of ``argnums``)
        use ``mcjax.derive(f, argnums).verify(*args)``.

        Args:
          f: the function this is the Jacobian of (one array out).
          *args: the point: ``f``'s positional arguments.
          argnums: which argument this is the Jacobian with respect to.
          probes: how many random tangents, and cotangents.
          seed: the seed of the probes.

        Returns:
          A ``Verification``: ``.ok`` (also its truth value), ``.error`` and ``.tolerance``
          (relative), ``.where`` it disagrees most; ``str()`` is the verdict in one line.

        Raises:
          ShapeError: this Jacobian's shape is not ``f``'s output shape then the argument's.

        Example:

            >>> x = jnp.array([0.5, -1.0, 2.0])
            >>> J = mcjax.derive(jnp.tanh)(x)
            >>> J.verify(jnp.tanh, x).ok
            True
        """
        from mcjax._jacobian._verify import verify

        return verify(f, self, args, argnums, probes=probes, seed=seed)

    # -- the formula ------------------------------------------------------------------------
    def formula(self) -> str:
        """The Jacobian in the paper's notation, e.g. ``diag(1[z > 0]) (I_8 ⊗ xᵀ), z = W x + b``.

        Sub-expressions used more than once, or long, are named and defined after a comma.
        A Jacobian built by hand (not by ``mcjax.derive``) prints its structure with
        placeholder names (``diag(d)``).
        """
        return F.formula(self, latex=False)

    def latex(self) -> str:
        """``formula`` in LaTeX, e.g. ``\\operatorname{diag}(\\mathbb{1}[z > 0])\\,(I_{8} \\otimes \\mathbf{x}^\\top)``."""
        return F.formula(self, latex=True)

    # -- pytree plumbing ---------------------------------------------------------------------
    def tree_flatten(self):
        """JAX pytree protocol: the arrays are leaves; static fields and symbols auxiliary data."""
        return (tuple(getattr(self, a) for a in self._arrays),
                (tuple(getattr(self, s) for s in self._static), self.symbols))

    @classmethod
    def tree_unflatten(cls, aux, arrays):
        """JAX pytree protocol: rebuild from ``tree_flatten``'s output, without checks."""
        static, symbols = aux
        obj = object.__new__(cls)
        obj._init(symbols, **dict(zip(cls._arrays, arrays)), **dict(zip(cls._static, static)))
        return obj

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node_class(cls)


def replace(J: Jacobian, **changes) -> Jacobian:
    """``J`` with some fields (or ``symbols``) replaced, unchecked: a new value."""
    fields = {name: getattr(J, name) for name in J._arrays + J._static}
    symbols = changes.pop("symbols", J.symbols)
    fields.update(changes)
    obj = object.__new__(type(J))
    obj._init(symbols, **fields)
    return obj


def _dense_program(_, J: Jacobian) -> jax.Array:
    return J._dense()


def _jacobians_in(J: Jacobian) -> list[Jacobian]:
    """The Jacobians ``J``'s arrays hold (its factors, terms, blocks)."""
    return [leaf for a in J._arrays for leaf in jax.tree_util.tree_leaves(
        getattr(J, a), is_leaf=lambda x: isinstance(x, Jacobian)) if isinstance(leaf, Jacobian)]


def _keyed_by_value(J: Jacobian) -> bool:
    return J.by_value and all(_keyed_by_value(c) for c in _jacobians_in(J))


def _without_names(J: Jacobian) -> Jacobian:
    """``J`` without the formula's symbols, at every depth: the key of its dense program."""
    def strip(x):
        return _without_names(x) if isinstance(x, Jacobian) else x

    fields = {a: jax.tree_util.tree_map(strip, getattr(J, a),
                                        is_leaf=lambda x: isinstance(x, Jacobian))
              for a in J._arrays}
    return replace(J, symbols=None, **fields)


def dense_by_columns(J: Jacobian) -> jax.Array:
    """``J.dense()`` from ``J.jvp`` applied to every basis vector (one vmapped call)."""
    n = math.prod(J.in_shape)
    basis = jnp.eye(n, dtype=J.in_dtype).reshape((n,) + tuple(J.in_shape))
    columns = jax.vmap(J.jvp)(basis)  # (n,) + out_shape
    return jnp.moveaxis(columns.reshape((n, -1)), 0, 1).reshape(J.shape)


def transpose_apply(J: Jacobian, u):
    """$u^\\top J$ for a Jacobian that only knows ``jvp``: JAX transposes the linear map, or
    where one of JAX's transpose rules fails (``lax.pad`` of a constant with respect to its
    padding value) ``u`` meets the dense form's columns."""
    primal = jax.ShapeDtypeStruct(tuple(J.in_shape), J.in_dtype)
    # the cotangent has the output's dtype: real for a block from complex values to real ones
    u = jnp.asarray(_cast(jnp.asarray(u), jax.eval_shape(J.jvp, primal).dtype))
    try:
        (out,) = jax.linear_transpose(J.jvp, primal)(u)
    except TypeError:
        return jnp.tensordot(u, dense_by_columns(J), axes=len(J.out_shape))
    return out


# -- the arrays and the expressions they stand for --------------------------------------------
def symbol(J: Jacobian, index: int = 0) -> E.Expr:
    """The expression of ``J``'s ``index``-th array (a placeholder for a hand-built J)."""
    return F.symbols_of(J)[index]


def sym(J: Jacobian, field: str, index: int = 0) -> Sym:
    """The ``field`` array of ``J`` with its expression."""
    return Sym(getattr(J, field), symbol(J, index))


def derived(J: Jacobian) -> bool:
    """Whether ``J`` (or a part of it) carries the formulas ``mcjax.derive`` attaches."""
    return J.symbols is not None or any(derived(c) for c in J.children())


def dtype_of(*Js: Jacobian):
    return wider(*(J.dtype for J in Js))


# -- the generic functions: each structure registers its own -----------------------------------
@functools.singledispatch
def scale(J: Jacobian, c: Sym) -> Jacobian:
    """$c J$ for a scalar ``c``: structures that hold a number to scale register how; the
    rest get a factor $cI$ in front."""
    if c.is_constant(1.0):
        return J
    return compose(scaled_identity(c, J.out_shape, J.dtype), J)


def absorbs_scalar(J: Jacobian) -> bool:
    """Whether ``J`` holds a number that a scalar factor multiplies into."""
    return type(J).holds_scalar


@functools.singledispatch
def as_scalar(J: Jacobian) -> Sym | None:
    """The number a Jacobian multiplies by, if it is one ($cI$, or any map from () to ())."""
    return None


@functools.singledispatch
def as_dtype(J: Jacobian, dtype) -> Jacobian:
    """``J`` computing in ``dtype`` (a function that rounds to float32 inside still has the
    Jacobian of its output's dtype, as ``jax.jacfwd``'s)."""
    dtype = jnp.dtype(dtype)
    if jnp.dtype(J.dtype) == dtype:
        return J
    changes = {a: _cast(getattr(J, a), dtype) for a in J._arrays}
    if "dtype_name" in J._static:
        changes["dtype_name"] = dtype.name
    return replace(J, **changes)


def _cast(value, dtype):
    """A stored field in ``dtype``: an inexact array cast, a tuple of them (``None`` and
    integer entries kept) field by field."""
    if isinstance(value, tuple):
        return tuple(_cast(v, dtype) for v in value)
    if value is None or not jnp.issubdtype(jnp.result_type(value), jnp.inexact):
        return value
    if (jnp.issubdtype(jnp.result_type(value), jnp.complexfloating)
            and not jnp.issubdtype(dtype, jnp.complexfloating)):
        value = jnp.real(value)  # a real map's entries, computed through complex values
    return value.astype(dtype)


def cast_to(v: Sym, J: Jacobian) -> Sym:
    """``v`` in the dtype ``J`` computes in (the wider of the two)."""
    return Sym(jnp.asarray(v.value).astype(wider(v.value, J.dtype)), v.expr)


def expr_pull(v: E.Expr, J: Jacobian) -> E.Expr:
    """``vᵀ J`` written as such (``1ᵀ S[1:3]``), for a structure without a shorter form; a
    number through the pick of one entry ``k`` of a vector is ``v e_k``."""
    k = _picked_entry(J) if math.prod(v.shape) == 1 else None
    if k is not None:
        n = J.in_shape[0]
        return E.mul(E.reshaped(v, ()), E.onehot(E.num(float(k)), n, (n,)))
    return E.Expr("pull", (v,), (F.formula(J), F.formula(J, latex=True)), tuple(J.in_shape))


def _picked_entry(J: Jacobian) -> int | None:
    r"""``k`` where ``J`` is the row $\mathbf{e}_k^\top$ whatever the argument: one entry of a
    vector picked by a slice, or by an index that is a constant of the program (a label)."""
    if math.prod(J.out_shape) != 1 or len(J.in_shape) != 1 or _reads_argument(J):
        return None
    try:
        row = J.vjp(jnp.ones(J.out_shape, J.dtype))
        if isinstance(row, jax.core.Tracer):  # pyright: ignore[reportAttributeAccessIssue]
            return None  # asked before np.asarray: JAX's error for a tracer walks the whole
            # program for its message (seconds each, for a gradient through a scan)
        row = np.asarray(row)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None  # under a trace: no value to read
    nonzero = np.flatnonzero(row)
    return int(nonzero[0]) if len(nonzero) == 1 and row[nonzero[0]] == 1 else None


def _reads_argument(J: Jacobian) -> bool:
    """Whether ``J``'s formula depends on f's arguments (an index computed from ``x``)."""
    return any(E.reads_argument(e) for e in (J.symbols or ()) if isinstance(e, E.Expr)) or any(
        _reads_argument(c) for c in J.children())


@functools.singledispatch
def _pull(J: Jacobian, v: Sym) -> Sym:
    return Sym(J.vjp(cast_to(v, J).value), expr_pull(v.expr, J))


def pull(v: Sym, J: Jacobian) -> Sym:
    """$\\mathbf{v}^\\top J$ (shape ``J.in_shape``) with its formula, by the structure of ``J``
    (the vector-Jacobian product: backpropagation).  Register with ``pulls``."""
    return _pull(J, v)


def pulls(cls):
    """Register how a row is pulled through ``cls``: ``fn(J, v) -> Sym``."""
    return _pull.register(cls)


@functools.singledispatch
def _push(J: Jacobian, v: Sym) -> Sym:
    return Sym(J.jvp(cast_to(v, J).value), E.Expr("push", (v.expr,), (F.formula(J), F.formula(
        J, latex=True)), tuple(J.out_shape)))


def push(J: Jacobian, v: Sym) -> Sym:
    """$J\\mathbf{v}$ (shape ``J.out_shape``) with its formula, by the structure of ``J``.
    Register with ``pushes``."""
    return _push(J, v)


def pushes(cls):
    """Register how a column is pushed through ``cls``: ``fn(J, v) -> Sym``."""
    return _push.register(cls)


@functools.singledispatch
def number_out(J: Jacobian) -> tuple[float, Jacobian]:
    """``(c, J / c)`` where ``J`` is written ``c A`` with a number ``c`` (else ``(1, J)``):
    the chain rule's product prints its numbers first."""
    return 1.0, J


def number_of_symbol(J: Jacobian) -> tuple[float, Jacobian]:
    """``number_out`` for a structure written by its one expression (``-2 xᵀ``)."""
    if J.symbols is None:
        return 1.0, J
    c, rest = E.coefficient(J.symbols[0])
    return (1.0, J) if c == 1.0 else (c, replace(J, symbols=(E.reshaped(rest, J.symbols[0].shape),)))


# -- pair tables: products and sums of two structures ----------------------------------------------
PairRule = Callable[[Any, Any], "Jacobian | None"]
SIMPLIFY: dict[tuple[type, type], PairRule] = {}
"""``(type(outer), type(inner)) -> rule(outer, inner)``: the product as one structure, or
``None`` to keep the two factored.  ``Jacobian`` on one side stands for any structure (see
``_pair`` for the order they are tried in)."""
MERGE: dict[tuple[type, type], PairRule] = {}
"""``(type(a), type(b)) -> rule(a, b)``: the sum as one term, or ``None``."""


def simplifies(outer: type, inner: type):
    """Register the product ``outer @ inner`` of two classes (beside one of them)."""
    def register(rule: PairRule) -> PairRule:
        SIMPLIFY[outer, inner] = rule
        return rule

    return register


def merges(a: type, b: type):
    """Register the sum ``a + b`` of two classes (either order)."""
    def register(rule: PairRule) -> PairRule:
        MERGE[a, b] = rule
        if (b, a) not in MERGE:
            MERGE[b, a] = lambda x, y: rule(y, x)
        return rule

    return register


# -- the vector chain rule -----------------------------------------------------------------------
def compose(outer: Jacobian, inner: Jacobian) -> Jacobian:
    """``outer @ inner``, simplified.

    Both sides are read as chains of factors; adjacent factors are multiplied out wherever
    the product is one structure (``_pair``), from the inside out, and what is left is
    kept factored.
    """
    if tuple(outer.in_shape) != tuple(inner.out_shape):
        raise ShapeError(
            f"mcjax.Jacobian: cannot compose a {outer.kind} Jacobian taking "
            f"{shape_str(outer.in_shape)} with a {inner.kind} Jacobian giving "
            f"{shape_str(inner.out_shape)}; expected the inner output shape "
            f"{shape_str(outer.in_shape)}")
    factors = factors_of(outer) + factors_of(inner)
    if any(isinstance(f, Zero) for f in factors):
        return Zero(outer.out_shape, inner.in_shape, dtype_of(outer, inner))
    reduced: list[Jacobian] = []
    for f in factors:
        if is_identity(f):
            continue
        reduced.append(f)
        while len(reduced) >= 2:
            product = _pair(reduced[-2], reduced[-1])
            if product is None:
                break
            reduced[-2:] = [] if is_identity(product) else [product]
    if not reduced:
        return identity(inner.in_shape, dtype_of(outer, inner))
    return product_of(reduced)


def factors_of(J: Jacobian) -> list[Jacobian]:
    """The chain ``[A, B, C]`` of ``A @ B @ C`` (a single factor for anything else)."""
    if isinstance(J, Composed):
        return factors_of(J.outer) + factors_of(J.inner)
    return [J]


def product_of(factors: list[Jacobian]) -> Jacobian:
    J = factors[-1]
    for f in reversed(factors[:-1]):
        J = Composed(f, J)
    return J


def _pair(outer: Jacobian, inner: Jacobian) -> Jacobian | None:
    """The product of two adjacent factors as one structure, or None.

    A scalar factor is multiplied into a structure that holds a number; then the pair rules
    are tried: those of ``outer``'s class with any inner factor (a row pulled through:
    backprop), those of ``inner``'s class with any outer factor (a column pushed forward),
    and those of the exact pair."""
    for a, b in ((outer, inner), (inner, outer)):
        c = as_scalar(a)
        if c is not None and absorbs_scalar(b):
            return scale(b, c)
    for key in ((type(outer), Jacobian), (Jacobian, type(inner)), (type(outer), type(inner))):
        rule = SIMPLIFY.get(key)
        product = None if rule is None else rule(outer, inner)
        if product is not None:
            return product
    return None


# -- the total-derivative rule ------------------------------------------------------------------
def add(a: Jacobian, b: Jacobian) -> Jacobian:
    """``a + b`` (same shapes), merging terms of one structure."""
    if a.shape != b.shape:
        raise ShapeError(
            f"mcjax.Jacobian: cannot add a {a.kind} Jacobian of shape {shape_str(a.shape)} to "
            f"a {b.kind} Jacobian of shape {shape_str(b.shape)}")
    terms = list(a.terms) if isinstance(a, Sum) else [a]
    for new in b.terms if isinstance(b, Sum) else (b,):
        for i, old in enumerate(terms):
            merged = _merge(old, new)
            if merged is not None:
                terms[i] = merged
                break
        else:
            terms.append(new)
    terms = [t for t in terms if not isinstance(t, Zero)]
    if not terms:
        return Zero(a.out_shape, a.in_shape, dtype_of(a, b))
    return terms[0] if len(terms) == 1 else Sum(terms)


def _merge(a: Jacobian, b: Jacobian) -> Jacobian | None:
    """``a + b`` as one term, or None."""
    if isinstance(a, Zero):
        return b
    if isinstance(b, Zero):
        return a
    rule = MERGE.get((type(a), type(b)))
    merged = None if rule is None else rule(a, b)
    return merged if merged is not None else _common_factor(a, b)


def _common_factor(a: Jacobian, b: Jacobian) -> Jacobian | None:
    """Two paths that end in the same factors: $A J + B J = (A + B) J$."""
    fa, fb = factors_of(a), factors_of(b)
    k = 0
    while k < min(len(fa), len(fb)) and fa[-1 - k] is fb[-1 - k]:
        k += 1
    if k == 0 or (k == len(fa) and k == len(fb)):
        return None
    common = fa[len(fa) - k:]
    head = [product_of(f[: len(f) - k]) if len(f) > k else
            identity(common[0].out_shape, dtype_of(a, b)) for f in (fa, fb)]
    return compose(add(head[0], head[1]), product_of(common))


# == the structures the algebra itself produces ====================================================
class Zero(Jacobian):
    """The zero map: the output does not depend on the argument (or only through
    ``stop_gradient``).  ``out_shape + in_shape`` zeros, none stored."""

    out_shape: Shape
    in_shape: Shape
    dtype_name: str

    kind = "zero"
    _static = ("out_shape", "in_shape", "dtype_name")

    def __init__(self, out_shape: Sequence[int], in_shape: Sequence[int], dtype=jnp.float32):
        self._init(None, out_shape=tuple(out_shape), in_shape=tuple(in_shape),
                   dtype_name=jnp.dtype(dtype).name)

    def jvp(self, v):
        return jnp.zeros(self.out_shape, jnp.result_type(v))

    def leading_batch(self) -> int:
        return common_prefix(self.out_shape, self.in_shape)

    def vjp(self, u):
        return jnp.zeros(self.in_shape, jnp.result_type(u))

    def _dense(self):
        return jnp.zeros(self.shape, self.dtype)


@L.established.register
def _(J: Zero):
    return frozenset(L.TAGS)  # the zero matrix is every one of them (where it is square)


def zero(out_shape, in_shape, dtype) -> Jacobian:
    return Zero(out_shape, in_shape, dtype)


scale.register(Zero)(lambda J, c: J)


@pulls(Zero)
def _(J: Zero, v):
    return Sym(jnp.zeros(J.in_shape, J.dtype), E.num(0.0, J.in_shape))


@F.write.register
def _(J: Zero, p):
    return ("\\mathbf{0}" if p.latex else "0"), ATOM


class ScaledIdentity(Jacobian):
    """$c I$: the Jacobian of ``x + y`` (``c = 1``) or ``x * z`` for scalar ``z`` (``c = z``).

    Args:
      scale: a scalar.
      shape: the shape of input and output.
    """

    scale: jax.Array
    in_shape: Shape

    kind = "scaled identity"
    placeholder = "c"
    holds_scalar = True
    _arrays = ("scale",)
    _static = ("in_shape",)

    def __init__(self, scale, shape: Sequence[int], *, symbols=None):
        self._init(symbols, scale=jnp.asarray(scale), in_shape=tuple(shape))

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    def leading_batch(self) -> int:
        return len(self.in_shape)

    def jvp(self, v):
        return self.scale * v

    def vjp(self, u):
        return self.scale * u

    def _dense(self):
        return self.scale * _eye_tensor(self.in_shape, self.scale.dtype)


@L.as_operator.register
def _(J: ScaledIdentity, lx):
    eye = lx.IdentityLinearOperator(L.structure(J.in_shape, J.dtype))
    return eye if is_identity(J) else eye * J.scale


@L.established.register
def _(J: ScaledIdentity):
    return frozenset({"diagonal", "symmetric"}) | L.sign_tags(J)


def identity(shape, dtype) -> Jacobian:
    """$I$ on arrays of ``shape``."""
    return ScaledIdentity(jnp.asarray(1, dtype), shape, symbols=(E.ONE,))


def is_identity(J: Jacobian) -> bool:
    return isinstance(J, ScaledIdentity) and J.symbols is not None and \
        J.symbols[0].op == "num" and J.symbols[0].param == 1.0


def scaled_identity(c: Sym, shape, dtype) -> Jacobian:
    """$c I$ for a scalar ``c``."""
    c = lift(c)
    return ScaledIdentity(jnp.asarray(c.value, dtype), shape, symbols=(c.expr,))


@scale.register
def _(J: ScaledIdentity, c):
    return scaled_identity(c * sym(J, "scale"), J.in_shape, J.dtype)


@as_scalar.register
def _(J: ScaledIdentity):
    return sym(J, "scale")


@pulls(ScaledIdentity)
def _(J: ScaledIdentity, v):
    return v * sym(J, "scale")


@pushes(ScaledIdentity)
def _(J: ScaledIdentity, v):
    return sym(J, "scale") * v


@F.write.register
def _(J: ScaledIdentity, p):
    (c,) = F.symbols_of(J)
    if not J.in_shape:
        return p.write(c)
    return F.scaled(c, F.identity(p), p, ATOM)


class Composed(Jacobian):
    """``outer @ inner``: the vector chain rule $J_{f \\circ g} = J_f J_g$ (§4.5.3), kept lazy."""

    outer: Jacobian
    inner: Jacobian

    kind = "composed"
    _arrays = ("outer", "inner")

    def __init__(self, outer: Jacobian, inner: Jacobian):
        self._init(None, outer=outer, inner=inner)

    @property
    def out_shape(self) -> Shape:
        return tuple(self.outer.out_shape)

    @property
    def in_shape(self) -> Shape:
        return tuple(self.inner.in_shape)

    def jvp(self, v):
        return self.outer.jvp(self.inner.jvp(v))

    def leading_batch(self) -> int:
        return min(self.outer.leading_batch(), self.inner.leading_batch())

    def vjp(self, u):
        return self.inner.vjp(self.outer.vjp(u))

    def _dense(self):
        # the outer factor applied to each column of the inner one: its structure is used
        # (a diagonal or a permutation costs O(size) per column, not a dense matrix product)
        if math.prod(self.inner.out_shape) == 0 or math.prod(self.in_shape) == 0:
            return jnp.zeros(self.shape, self.dtype)  # through an empty intermediate (a scan's)
        columns = self.inner.dense().reshape(tuple(self.inner.out_shape) + (-1,))
        applied = jax.vmap(self.outer.jvp, in_axes=-1, out_axes=-1)(columns)
        return applied.reshape(self.shape)

    def children(self):
        return tuple(factors_of(self))


@L.as_operator.register
def _(J: Composed, lx):
    # lineax composes operators of one dtype: each factor in the product's
    return as_dtype(J.outer, J.dtype).to_lineax() @ as_dtype(J.inner, J.dtype).to_lineax()


@L.established.register
def _(J: Composed):
    """A product of diagonals is diagonal, and its sign the product of theirs."""
    tags = [L.tags_of(f) for f in factors_of(J)]
    if not all("diagonal" in t for t in tags):
        return frozenset()
    sign = 1
    for t in tags:
        sign *= 1 if "positive_semidefinite" in t else -1 if "negative_semidefinite" in t else 0
    return frozenset({"diagonal", "symmetric"}) | L._SIGN_TAGS[sign]


@as_dtype.register
def _(J: Composed, dtype):
    # a complex intermediate (an FFT's) stays complex: the composition is real where its
    # outer map (``real``) makes it so, and casting the inner would drop its imaginary part
    if (jnp.issubdtype(J.inner.dtype, jnp.complexfloating)
            and not jnp.issubdtype(dtype, jnp.complexfloating)):
        return J
    return Composed(as_dtype(J.outer, dtype), as_dtype(J.inner, dtype))


@pulls(Composed)
def _(J: Composed, v):
    return _pull(J.inner, _pull(J.outer, v))


@pushes(Composed)
def _(J: Composed, v):
    return _push(J.outer, _push(J.inner, v))


@F.roots.register
def _(J: Composed):
    return F.roots(J.outer) + F.roots(J.inner)


@functools.singledispatch
def in_product(J: Jacobian, p) -> tuple[str, int]:
    """``(text, precedence)`` of ``J`` as one factor of a printed chain (a structure may
    write itself otherwise there than alone)."""
    return F.write(J, p)


@F.write.register
def _(J: Composed, p):
    """The chain rule's product, with its numbers first: ``-1/8 u vᵀ``, ``2 S[4:]ᵀ``."""
    coefficient, parts = 1.0, []
    factors = [f for f in factors_of(J) if not f.is_unit_factor()]  # identities left out
    for f in factors:
        if isinstance(f, ScaledIdentity) and E.core(F.symbols_of(f)[0]).op == "num":
            coefficient *= E.core(F.symbols_of(f)[0]).param
            continue
        if isinstance(f, ScaledIdentity) and f.in_shape:
            (c,) = F.symbols_of(f)
            text, prec = p.write(c)
        else:
            c, f = number_out(f)
            coefficient *= c
            text, prec = in_product(f, p)
        while text.startswith("-"):
            coefficient, text = -coefficient, text[1:]
        parts.append(f"({text})" if prec < PRODUCT else text)
    if not parts:
        parts = ["I"]
    if coefficient == 1.0 and len(parts) == 1 and parts[0].startswith("(") and factors:
        return F.write(factors[0], p)
    if coefficient != 1.0:
        head = "-" if coefficient == -1.0 else p(E.num(coefficient), PRODUCT)
        if head.startswith("-") and head != "-":
            head = "-" + head[1:]
        parts.insert(0, head)
    out = p._space().join(parts)
    return (out.replace("-" + p._space(), "-", 1) if out.startswith("-" + p._space()) else out,
            PRODUCT)


def _scalar_divisors(e: E.Expr) -> list[E.Expr]:
    """The one-entry divisors of ``e`` (``s`` of ``-(u / s)``)."""
    e = E.core(e)
    if e.op == "neg":
        return _scalar_divisors(e.args[0])
    if e.op == "div" and math.prod(E.core(e.args[1]).shape) == 1:
        return [E.core(e.args[1])] + _scalar_divisors(e.args[0])
    if e.op == "mul":
        return _scalar_divisors(e.args[0]) + _scalar_divisors(e.args[1])
    return []


def balanced(factors: list[Jacobian]) -> list[Jacobian]:
    """An outer product ``(u / s) vᵀ`` written ``u (v / s)ᵀ`` where that makes the row a value
    of its own (``(s / sum(u)) uᵀ`` is ``s sᵀ`` for ``s = softmax(x)``): a number may stand on
    either side of a product of a column and a row."""
    out = list(factors)
    for i in range(len(out) - 1):
        column, row = out[i], out[i + 1]
        if column.in_shape != () or row.out_shape != () or not (
                column.symbols and row.symbols and len(column.symbols) == len(row.symbols) == 1):
            continue
        (c,), (r,) = column.symbols, row.symbols
        for divisor in _scalar_divisors(c):
            moved = E.div(r, divisor)
            if E.core(moved).op != "div":  # the row became a value of its own
                out[i] = replace(column, symbols=(E.reshaped(E.mul(c, divisor), c.shape),))
                out[i + 1] = replace(row, symbols=(E.reshaped(moved, r.shape),))
                break
    return out




class Sum(Jacobian):
    """$\\sum_k J_k$: the total-derivative chain rule adds the paths (§4.5.2)."""

    terms: tuple[Jacobian, ...]

    kind = "sum"
    _arrays = ("terms",)

    def __init__(self, terms: Sequence[Jacobian]):
        self._init(None, terms=tuple(terms))

    @property
    def out_shape(self) -> Shape:
        return tuple(self.terms[0].out_shape)

    @property
    def in_shape(self) -> Shape:
        return tuple(self.terms[0].in_shape)

    def jvp(self, v):
        return sum(t.jvp(v) for t in self.terms[1:]) + self.terms[0].jvp(v)

    def vjp(self, u):
        return sum(t.vjp(u) for t in self.terms[1:]) + self.terms[0].vjp(u)

    def leading_batch(self) -> int:
        return min(t.leading_batch() for t in self.terms)

    def _dense(self):
        return sum(t.dense() for t in self.terms[1:]) + self.terms[0].dense()

    def children(self):
        return self.terms


@L.as_operator.register
def _(J: Sum, lx):
    return functools.reduce(lambda a, b: a + b, (as_dtype(t, J.dtype).to_lineax()
                                                 for t in J.terms))


@L.established.register
def _(J: Sum):
    """What every term is, the sum is (symmetric, diagonal, semidefinite of one sign)."""
    return frozenset.intersection(*(L.tags_of(t) for t in J.terms))


@scale.register
def _(J: Sum, c):
    return Sum(tuple(scale(t, c) for t in J.terms)) if not c.is_constant(1.0) else J


@as_dtype.register
def _(J: Sum, dtype):
    return Sum(tuple(as_dtype(t, dtype) for t in J.terms))


@pulls(Sum)
def _(J: Sum, v):
    parts = [_pull(t, v) for t in J.terms]
    return sum(parts[1:], parts[0])


@pushes(Sum)
def _(J: Sum, v):
    parts = [_push(t, v) for t in J.terms]
    return sum(parts[1:], parts[0])




@F.roots.register
def _(J: Sum):
    return [e for t in J.terms for e in F.roots(t)]


@F.write.register
def _(J: Sum, p):
    out = ""
    for i, term in enumerate(J.terms):
        text, prec = F.write(term, p)
        text = f"({text})" if prec < SUM else text
        if i == 0:
            out = text
        elif text.startswith("-"):
            out += " - " + text[1:]
        else:
            out += " + " + text
    return out, SUM


def densify(derivative: Any) -> Any:
    """The dense numerator-layout value of a derivative.

    Args:
      derivative: a ``mcjax.Jacobian``, an array, or a pytree of either (for instance the
        gradient of a scalar loss with respect to a parameter pytree).

    Returns:
      The same structure with every ``mcjax.Jacobian`` replaced by ``mcjax.Jacobian.dense``.
    """
    return jax.tree_util.tree_map(
        lambda leaf: leaf.dense() if isinstance(leaf, Jacobian) else jnp.asarray(leaf),
        derivative, is_leaf=lambda leaf: isinstance(leaf, Jacobian))
