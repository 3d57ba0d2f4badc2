r"""The structured symmetric operator a Hessian is returned as, and its one algebra.

A ``Curvature`` is a symmetric linear map on the flattened argument, $\mathbb{R}^n \to
\mathbb{R}^n$ (``shape == (n, n)``), stored as its structure: a diagonal, $cI$, a Kronecker
product $A \otimes B$, a diagonal plus low rank $\operatorname{diag}(d) + U C U^\top$ (or one
per example of a batch), a Gram
form $X^\top \operatorname{diag}(D) X + \operatorname{diag}(d)$, a block diagonal (one block per
parameter leaf), a sum of these, a dense array, or, where no structure was found,
Hessian-vector products of the function itself (named so in ``structure``).

Every operation is a ``functools.singledispatch`` function registered beside its structure
(lineax's pattern): ``mv`` ($Hv$), ``dense``, ``diagonal``, ``trace``, ``solve``
($(H + \lambda I)^{-1} b$) and ``slogdet``.  The defaults are the dense computation, with its
cost stated in the method's docstring; a structure overrides what it does cheaper.  Every
type is a JAX pytree (arrays are leaves, the structure is static), so operators pass through
``jax.jit``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


@dataclass(frozen=True)
class Layout:
    """How the flattened argument of an operator is laid out in the argument itself: its
    pytree structure and each leaf's shape, in ``jax.flatten_util.ravel_pytree``'s order
    (leaf by leaf, each row-major).  ``mcjax.hessian`` sets it, so that ``hvp`` and ``solve``
    take and give vectors shaped as the argument (a parameter dict) as well as flat ones."""

    tree: Any  # a PyTreeDef
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, x) -> Layout:
        """The layout of ``x`` (an array or a pytree of arrays)."""
        leaves, tree = jax.tree_util.tree_flatten(x)
        return cls(tree, tuple(tuple(np.shape(leaf)) for leaf in leaves))

    @property
    def size(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes)

    def matches(self, v) -> bool:
        """Whether ``v`` is shaped as the argument (its tree, its leaves' shapes)."""
        leaves, tree = jax.tree_util.tree_flatten(v)
        return tree == self.tree and tuple(tuple(np.shape(a)) for a in leaves) == self.shapes

    def ravel(self, v) -> jax.Array:
        """``v``, shaped as the argument, as one flat vector."""
        return ravel_pytree(v)[0]

    def unravel(self, flat: jax.Array):
        """A flat vector shaped as the argument."""
        parts, at = [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            parts.append(flat[at:at + size].reshape(shape))
            at += size
        return jax.tree_util.tree_unflatten(self.tree, parts)

    def describe(self) -> str:
        """The argument's structure in words, for an error message."""
        if self.tree == jax.tree_util.tree_structure(0):
            return f"an array of shape {self.shapes[0]}"
        return f"a pytree {self.tree} with leaves of shapes {list(self.shapes)}"


class Curvature:
    """A structured symmetric $n \\times n$ operator: a Hessian as its structure.

    Subclasses store only what their structure needs (``_arrays`` are pytree leaves,
    ``_static`` the pytree's auxiliary data).  Values are immutable.  ``formula()`` and
    ``latex()`` print the second derivative as ``mcjax.derive`` found it (set by
    ``mcjax.hessian``), or the structure's template for an operator built by hand.
    """

    kind: str = "curvature"
    """A short name of the structure (``"diagonal"``, ``"gram"``, ...)."""
    template: str = "H"
    """The structure's formula with its own symbols (``"Xᵀ diag(D) X + diag(d)"``)."""
    _arrays: tuple[str, ...] = ()
    _static: tuple[str, ...] = ()
    text: tuple[str, str] | None
    """``(formula, latex)`` of the derived second derivative, or ``None``."""
    layout: Layout | None
    """The argument's layout (``mcjax.hessian`` sets it), or ``None``: flat vectors only."""

    def _init(self, text=None, layout=None, **fields) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "layout", layout)

    def __setattr__(self, name, value):
        raise AttributeError(f"mcjax.curvature.{type(self).__name__} is immutable: build a "
                             f"new one instead of setting {name!r}")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node_class(cls)

    def tree_flatten(self):
        """JAX pytree protocol: the arrays are leaves, the structure is static."""
        return (tuple(getattr(self, a) for a in self._arrays),
                (tuple(getattr(self, s) for s in self._static), self.text, self.layout))

    @classmethod
    def tree_unflatten(cls, aux, arrays):
        """JAX pytree protocol: rebuild from ``tree_flatten``'s output, without checks."""
        static, text, layout = aux
        obj = object.__new__(cls)
        obj._init(text, layout, **dict(zip(cls._arrays, arrays)),
                  **dict(zip(cls._static, static)))
        return obj

    # -- what every structure has ---------------------------------------------------------
    @property
    def size(self) -> int:
        """$n$, the size of the flattened argument."""
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``: the shape of ``dense()``."""
        return (self.size, self.size)

    @property
    def dtype(self):
        """The dtype of the stored arrays."""
        leaves = jax.tree_util.tree_leaves(self)
        return jnp.result_type(*leaves) if leaves else jnp.dtype(jnp.float32)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays the operator holds: O(structure), not $n^2$."""
        return sum(int(a.size) * jnp.dtype(a.dtype).itemsize
                   for a in jax.tree_util.tree_leaves(self))

    @property
    def structure(self) -> str:
        """The structure in words and shapes: ``"gram: Xᵀ diag(D) X + diag(d), X 8×5"``."""
        return describe(self)

    def hvp(self, v):
        """$H v$ for ``v`` of shape ``(n,)`` (the flattened argument), or shaped as the
        argument (a parameter dict, for an operator from ``mcjax.hessian``: the result is
        shaped so too), at the structure's cost (O(n) for a diagonal, O(Nn) for a Gram
        form)."""
        flat, back = _vector(self, v, "hvp", "v")
        return back(mv(self, flat))

    def dense(self) -> jax.Array:
        """$H$ as a dense ``(n, n)`` array: ``jax.hessian`` of ``f`` with respect to the
        flattened argument."""
        return dense(self)

    def diagonal(self) -> jax.Array:
        """The diagonal of $H$, shape ``(n,)``, without building $H$ where the structure
        allows (every structure here but the HVP fallback, which builds $H$: $n$ HVPs)."""
        return diagonal(self)

    def trace(self) -> jax.Array:
        """$\\operatorname{tr} H$, a scalar (the sum of ``diagonal()``; factor-wise for a
        Kronecker product)."""
        return trace(self)

    def solve(self, b: jax.Array, damping: float | jax.Array = 0.0) -> jax.Array:
        """$(H + \\lambda I)^{-1} b$ (a Newton step with Levenberg damping $\\lambda$).

        Uses the structure: element-wise for a diagonal, Woodbury's identity for a diagonal
        plus low rank and for a Gram form with fewer samples than features ($N < n$: an
        $N \\times N$ system), an $n \\times n$ system for a Gram form with $N \\ge n$,
        factor-wise by eigendecompositions for a Kronecker product, block by block for a
        block diagonal.  A sum of structures, a dense operator and the HVP fallback solve the
        dense $n \\times n$ system: $O(n^3)$ time, $O(n^2)$ memory.  $H$ need not be
        positive definite: a system is solved by LU, except a Gram form's where its weights
        $D \\ge 0$ and $d + \\lambda > 0$ make it positive definite (Cholesky, half the
        flops; chosen at run time).

        Args:
          b: shape ``(n,)``, or shaped as the argument (for an operator from
            ``mcjax.hessian``: a gradient as ``jax.grad`` returns it).
          damping: $\\lambda \\ge 0$, a scalar added to the diagonal.

        Returns:
          Shaped as ``b``.
        """
        flat, back = _vector(self, b, "solve", "b")
        return back(solve(self, flat, jnp.asarray(damping, self.dtype)))

    def ravel(self, v) -> jax.Array:
        """``v``, shaped as the argument, as the flat ``(n,)`` vector the operator acts on
        (``jax.flatten_util.ravel_pytree``'s order)."""
        return _vector(self, v, "ravel", "v")[0]

    def unravel(self, flat) -> Any:
        """A flat ``(n,)`` vector (``diagonal()``, say) shaped as the argument: a parameter
        dict for a dict argument.  The vector itself where the layout is unknown (an
        operator built by hand)."""
        flat = jnp.asarray(flat)
        if flat.shape != (self.size,):
            raise ValueError(f"mcjax.curvature.{type(self).__name__}.unravel: the vector has "
                             f"shape {flat.shape}; expected ({self.size},), the flattened "
                             "argument")
        return flat if self.layout is None else self.layout.unravel(flat)

    def slogdet(self) -> tuple[jax.Array, jax.Array]:
        """``(sign, log|det H|)`` as ``jnp.linalg.slogdet``: by the determinant lemma for a
        diagonal plus low rank and a Gram form, factor-wise for a Kronecker product; the
        dense $O(n^3)$ computation for a sum, a dense operator and the HVP fallback."""
        return slogdet(self)

    def logdet(self) -> jax.Array:
        """$\\log \\det H$, a scalar: ``nan`` where $\\det H \\le 0$ (an indefinite or
        singular Hessian; ``slogdet`` gives the sign and $\\log|\\det H|$)."""
        sign, logabs = slogdet(self)
        return jnp.where(sign > 0, logabs, jnp.nan)

    def formula(self) -> str:
        """The second derivative in the paper's notation (as ``mcjax.derive`` prints it), or
        the structure's template for an operator built by hand."""
        return self.text[0] if self.text else self.template

    def latex(self) -> str:
        """``formula()`` in LaTeX."""
        return self.text[1] if self.text else self.template

    def to_lineax(self):
        """This operator as a symmetric ``lineax.FunctionLinearOperator`` on ``(n,)``
        vectors applying ``hvp`` (``pip install 'mcjax[lineax]'``)."""
        from mcjax._jacobian._lineax import lineax_module, structure
        lx = lineax_module()
        return lx.FunctionLinearOperator(self.hvp, structure((self.size,), self.dtype),
                                         lx.symmetric_tag)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.structure})"


_KEEP: Any = object()


def with_meta(op: Curvature, *, text=_KEEP, layout=_KEEP) -> Curvature:
    """``op`` printing as ``text`` (``(formula, latex)``) and laid out as ``layout``: a copy,
    its arrays shared."""
    arrays, (static, old_text, old_layout) = op.tree_flatten()
    return type(op).tree_unflatten((static, old_text if text is _KEEP else text,
                                    old_layout if layout is _KEEP else layout), arrays)


def _vector(op: Curvature, v, method: str, name: str):
    """``v`` as the flat vector the operator acts on (in its dtype, whatever the promotion
    setting), and the function that gives a flat result back in ``v``'s form."""
    layout = op.layout
    if layout is not None and layout.matches(v) and not (
            isinstance(v, (jax.Array, np.ndarray)) and np.shape(v) == (op.size,)):
        return layout.ravel(v).astype(op.dtype), layout.unravel
    if not isinstance(v, (jax.Array, np.ndarray, np.generic, list, tuple, int, float)) or (
            isinstance(v, (list, tuple)) and not all(isinstance(a, (int, float)) for a in v)):
        shaped = f" or {layout.describe()}, shaped as the argument" if layout else ""
        raise ValueError(f"mcjax.curvature.{type(op).__name__}.{method}: {name} is "
                         f"{type(v).__name__} {jax.tree_util.tree_structure(v)}; expected a "
                         f"vector of shape ({op.size},), the flattened argument{shaped}")
    flat = jnp.asarray(v)
    if flat.shape != (op.size,):
        shaped = f", or {layout.describe()}, shaped as the argument" if layout else ""
        raise ValueError(f"mcjax.curvature.{type(op).__name__}.{method}: {name} has shape "
                         f"{flat.shape}; expected shape ({op.size},), the flattened "
                         f"argument{shaped}")
    return flat.astype(op.dtype), lambda result: result


# -- the one algebra: each structure registers what it does cheaper ------------------------
@functools.singledispatch
def mv(op: Curvature, v: jax.Array) -> jax.Array:
    """$H v$."""
    raise NotImplementedError(type(op).__name__)


@functools.singledispatch
def dense(op: Curvature) -> jax.Array:
    """$H$ from ``mv`` on every basis vector ($n$ products)."""
    eye = jnp.eye(op.size, dtype=op.dtype)
    return jax.vmap(lambda e: mv(op, e), out_axes=1)(eye)


@functools.singledispatch
def diagonal(op: Curvature) -> jax.Array:
    return jnp.diagonal(dense(op))


@functools.singledispatch
def trace(op: Curvature) -> jax.Array:
    return jnp.sum(diagonal(op))


@functools.singledispatch
def solve(op: Curvature, b: jax.Array, damping: jax.Array) -> jax.Array:
    """The dense $n \\times n$ LU solve: $O(n^3)$."""
    return jnp.linalg.solve(dense(op) + damping * jnp.eye(op.size, dtype=op.dtype), b)


@functools.singledispatch
def slogdet(op: Curvature) -> tuple[jax.Array, jax.Array]:
    """The dense $O(n^3)$ ``jnp.linalg.slogdet``."""
    sign, logabs = jnp.linalg.slogdet(dense(op))
    return sign, logabs


@functools.singledispatch
def describe(op: Curvature) -> str:
    return f"{op.kind}: {op.template}, n = {op.size}"


def shape_text(*dims: int) -> str:
    return "×".join(str(d) for d in dims)


def total_size(shapes) -> int:
    return sum(math.prod(s) for s in shapes)
