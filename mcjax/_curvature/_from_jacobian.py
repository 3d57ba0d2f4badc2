r"""A structured second derivative (``mcjax.derive`` of a gradient) read as a ``Curvature``.

``from_jacobian(H, n)`` returns the *symmetric part* $\frac{1}{2}(H + H^\top)$ of the
Jacobian $H$ of $\nabla f$, on the flattened argument of size $n$ — the Hessian wherever $f$
is twice continuously differentiable.  Terms of a sum need not be symmetric on their own
($x^\top A x$ gives $A$ and $A^\top$), so every term is read as its own symmetric part:

- $cI$, $\operatorname{diag}(d)$: themselves;
- a product $P \operatorname{diag}(D) Q$ whose outer factors the formulas show to be
  transposes ($P = Q^\top$, read from the expressions ``mcjax.derive`` attached, never from
  the numbers) is a Gram form $Q^\top \operatorname{diag}(D) Q$; $(I_B \otimes W^\top)\, cI\,
  (I_B \otimes W)$ is the Kronecker product $I_B \otimes c W^\top W$;
- another product through an intermediate space of size $k$, $H = L R$, is of low rank where
  its rank is below $n$:
  $\frac{1}{2}(L R + R^\top L^\top) = [L, R^\top] \begin{bmatrix} 0 & I/2 \\ I/2 & 0
  \end{bmatrix} [L, R^\top]^\top$ (rank $2k$; or $L L^\top$, rank $k$, when $R = L^\top$
  is shown); where every factor keeps the leading axes apart (``Jacobian.leading_batch``:
  a loss summed over a batch's rows) it is one such low rank per block, ``BatchedLowRank``;
- anything else square is dense, $\frac{1}{2}(M + M^\top)$ — except an opaque block (a
  primitive ``mcjax.derive`` has no rule for), which raises ``NoStructure``.

A sum's terms merge: diagonals add up, a diagonal joins one Gram form or the low-rank terms
(dense where their ranks add up to $n$ or more), batched low-rank terms of one block shape
merge block by block (beside other terms, each is one low rank over the whole argument), a
dense term makes the whole sum dense; other mixtures stay a ``Sum``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from mcjax._curvature import _structures as S
from mcjax._curvature._operator import Curvature
from mcjax._jacobian import _algebra as A
from mcjax._jacobian import _expr as E
from mcjax._jacobian._elementwise import Diagonal
from mcjax._jacobian._opaque import Opaque
from mcjax._jacobian._products import BlockDiagonal, Dense
from mcjax._jacobian._rearrange import Embed, Expand, Permutation, Reshape, Slice


class NoStructure(Exception):
    """No structure was found; the message says why (one clause)."""


def from_jacobian(J: A.Jacobian, n: int) -> Curvature:
    """The symmetric part of the square Jacobian ``J`` (of size ``n``) as a ``Curvature``.

    Raises:
      NoStructure: ``J`` holds an opaque block.
    """
    opaque = _opaque_in(J)
    if opaque is not None:
        raise NoStructure(f"mcjax.derive has no structured rule for {opaque.name!r} "
                          "(an opaque block)")
    return _convert(J, n)


def diagonal_grid(rows: list[A.Jacobian], sizes: list[int]) -> S.DiagonalGrid | None:
    r"""The $L \times L$ blocks ``rows`` (row-major) of the Jacobian of a gradient over $L$
    variables as a ``DiagonalGrid``, where every block is a diagonal of one size $m$ (a
    scaled identity, zero, or a sum of these: what ``mcjax.derive`` finds for an element-wise
    function of several arguments); else None.  The symmetric part:
    $\frac{1}{2}(D_{ij} + D_{ji})$ off the diagonal."""
    L = len(sizes)
    m = sizes[0]
    if L < 2 or any(k != m for k in sizes) or any(_opaque_in(J) is not None for J in rows):
        return None
    if not all(_is_diagonal(J) and tuple(J.out_shape) == tuple(J.in_shape) for J in rows):
        return None  # read from the types, before any block is made dense
    diagonals = []
    for J in rows:
        op = _convert(J, m)
        if not isinstance(op, (S.Diagonal, S.ScaledIdentity)):
            return None
        diagonals.append(op.diagonal())
    D = jnp.stack(diagonals).reshape(L, L, m)
    return S.DiagonalGrid((D + jnp.swapaxes(D, 0, 1)) / 2)


def _is_diagonal(J: A.Jacobian) -> bool:
    """Whether ``J`` is a diagonal by its type: a diagonal, a scaled identity, zero, or a sum
    of these (the only structures ``_convert`` reads as a diagonal)."""
    if isinstance(J, A.Sum):
        return all(_is_diagonal(t) for t in J.terms)
    return isinstance(J, (Diagonal, A.ScaledIdentity, A.Zero))


def _opaque_in(J: A.Jacobian):
    if isinstance(J, Opaque):
        return J
    for child in J.children():
        found = _opaque_in(child)
        if found is not None:
            return found
    return None


def _symmetric(M):
    return (M + M.T) / 2


def dense_product(factors: list[A.Jacobian]) -> jax.Array:
    r"""The product of ``factors`` as a matrix ``(out size, in size)``, built outward from its
    first dense factor: each factor to its right is applied to the rows (``vjp``), each to
    its left to the columns (``jvp``), so a diagonal, a scalar or a rearrangement costs
    $O(\text{size})$ per row instead of a matrix product with its dense form."""
    j = next((i for i, f in enumerate(factors) if isinstance(f, Dense)), 0)
    F = factors[j]
    M = F.dense().reshape(math.prod(F.out_shape), math.prod(F.in_shape))
    for F in factors[j + 1:]:  # M F, row by row
        rows = M.reshape((M.shape[0],) + tuple(F.out_shape))
        M = jax.vmap(F.vjp)(rows).reshape(M.shape[0], -1)
    for F in reversed(factors[:j]):  # F M, column by column
        columns = M.T.reshape((M.shape[1],) + tuple(F.in_shape))
        M = jax.vmap(F.jvp)(columns).reshape(M.shape[1], -1).T
    return M


@functools.singledispatch
def _convert(J: A.Jacobian, n: int) -> Curvature:
    return S.Dense(_symmetric(J.dense().reshape(n, n)))


@_convert.register
def _(J: A.ScaledIdentity, n):
    return S.ScaledIdentity(J.scale, n)


@_convert.register
def _(J: A.Zero, n):
    return S.ScaledIdentity(jnp.zeros((), J.dtype), n)


@_convert.register
def _(J: Diagonal, n):
    return S.Diagonal(J.diagonal.reshape(n))


@_convert.register
def _(J: BlockDiagonal, n):
    if not J.batch_shape:
        return S.Dense(_symmetric(J.block))
    eye = jnp.eye(math.prod(J.batch_shape), dtype=J.block.dtype)
    return S.Kronecker(eye, _symmetric(J.block))


@_convert.register
def _(J: A.Sum, n):
    return combine([_convert(t, n) for t in J.terms], n)


@_convert.register
def _(J: A.Composed, n):
    factors = A.factors_of(J)
    for j in range(1, len(factors) - 1):  # P diag(D) Q with P = r Qᵀ shown: a Gram form
        middle, left, right = factors[j], factors[:j], factors[j + 1:]
        ratio = _transpose_ratio(left, right)
        if isinstance(middle, (Diagonal, A.ScaledIdentity)) and ratio is not None:
            return _gram(middle, right, n, ratio)
    sizes = [math.prod(f.in_shape) for f in factors[:-1]]
    k = min(sizes)
    j = sizes.index(k)
    ratio = _transpose_ratio(factors[: j + 1], factors[j + 1:])
    batched = _batched_low_rank(factors, j, J.leading_batch(), ratio)
    if batched is not None:
        return batched
    if (k if ratio is not None else 2 * k) < n:  # through a narrow space: of low rank
        L = dense_product(factors[: j + 1])
        R = dense_product(factors[j + 1:])
        if ratio is not None:  # L = r Rᵀ
            return S.DiagonalPlusLowRank(jnp.zeros(n, L.dtype), R.T,
                                         ratio * jnp.eye(k, dtype=L.dtype))
        C = _halves(k, L.dtype)
        return S.DiagonalPlusLowRank(jnp.zeros(n, L.dtype), jnp.concatenate([L, R.T], 1), C)
    return S.Dense(_symmetric(dense_product(factors)))


def _batched_low_rank(factors: list[A.Jacobian], j: int, t: int,
                      ratio: float | None) -> S.BatchedLowRank | None:
    r"""The product ``factors`` split after factor ``j`` as $L R$, block diagonal along its
    ``t`` leading axes (every factor keeps them, ``Jacobian.leading_batch``): $B$ blocks
    $L_b R_b$ of size $q$ through a narrow space of size $k_b$ each, held per block — where
    that is of low rank in the block ($k_b$, or $2k_b$ for $L \ne r R^\top$, below $q$)
    and there are several blocks.

    The blocks are found together: one product with the $j$-th unit vector of the narrow
    space, copied to every block, is column $j$ of every $L_b$ (row $j$ of every $R_b$),
    as no block reaches into another: $k_b$ products, not $B k_b$."""
    out_shape = tuple(factors[0].out_shape)
    narrow = tuple(factors[j].in_shape)
    B = math.prod(out_shape[:t])
    q = math.prod(out_shape[t:])
    kb = math.prod(narrow[t:])
    rank = kb if ratio is not None else 2 * kb
    if t == 0 or B < 2 or rank >= q:
        return None
    dtype = factors[0].dtype
    units = jnp.broadcast_to(jnp.eye(kb, dtype=dtype)[:, None, :], (kb, B, kb))
    units = units.reshape((kb,) + narrow)

    def left(u):  # L u: the factors up to j, applied right to left
        for F in reversed(factors[: j + 1]):
            u = F.jvp(u)
        return u.reshape(B, q)

    def right(u):  # uᵀ R: the factors after j, pulled back left to right
        for F in factors[j + 1:]:
            u = F.vjp(u)
        return u.reshape(B, q)

    R = jnp.transpose(jax.vmap(right)(units), (1, 2, 0))  # (B, q, kb): the R_bᵀ
    d = jnp.zeros((B, q), dtype)
    if ratio is not None:  # L = r Rᵀ: U_b = R_bᵀ, C = r I
        C = jnp.broadcast_to(ratio * jnp.eye(kb, dtype=dtype), (B, kb, kb))
        return S.BatchedLowRank(d, R, C)
    L = jnp.transpose(jax.vmap(left)(units), (1, 2, 0))  # (B, q, kb)
    C = jnp.broadcast_to(_halves(kb, dtype), (B, 2 * kb, 2 * kb))
    return S.BatchedLowRank(d, jnp.concatenate([L, R], 2), C)


def _halves(k: int, dtype) -> jax.Array:
    r"""$\begin{bmatrix} 0 & I/2 \\ I/2 & 0 \end{bmatrix}$, $2k \times 2k$: the middle of
    $\frac{1}{2}(L R + R^\top L^\top) = [L, R^\top]\, C\, [L, R^\top]^\top$."""
    half = jnp.eye(k, dtype=dtype) / 2
    zero = jnp.zeros((k, k), dtype)
    return jnp.block([[zero, half], [half, zero]])


SELECTIONS = (Permutation, Reshape, Slice, Embed, Expand)
r"""Structures whose every output entry is one input entry or zero: $S^\top \operatorname{diag}(D)
S$ is then the diagonal $S^\top D$ (a row of $S$ reaches one column)."""


def _gram(middle: A.Jacobian, right: list[A.Jacobian], n: int, ratio: float) -> Curvature:
    if all(isinstance(F, SELECTIONS) for F in right):  # S^T diag(D) S, S a selection
        D = (middle.diagonal if isinstance(middle, Diagonal)  # type: ignore[attr-defined]
             else jnp.full(tuple(middle.in_shape), middle.scale, middle.dtype))  # type: ignore[attr-defined]
        D = jnp.broadcast_to(D, tuple(middle.out_shape))
        for F in right:
            D = F.vjp(D)
        return S.Diagonal(ratio * D.reshape(n))
    c = _constant(middle)
    if (c is not None and len(right) == 1 and isinstance(right[0], BlockDiagonal)
            and right[0].batch_shape):
        W = right[0].block  # (I_B ⊗ Wᵀ) c I (I_B ⊗ W) = I_B ⊗ c WᵀW
        eye = jnp.eye(math.prod(right[0].batch_shape), dtype=W.dtype)
        return S.Kronecker(eye, ratio * c * (W.T @ W))
    X = dense_product(right)
    N = X.shape[0]
    if isinstance(middle, Diagonal):
        D = middle.diagonal.reshape(N)
    else:  # a scaled identity
        D = jnp.full((N,), middle.scale, X.dtype)  # type: ignore[attr-defined]
    return S.Gram(X, ratio * D)


def _constant(middle: A.Jacobian):
    """``c`` where ``middle`` is $cI$: a scaled identity, or a diagonal whose formula is one
    number (``diag(2)``)."""
    if isinstance(middle, A.ScaledIdentity):
        return middle.scale  # type: ignore[attr-defined]
    e = E.core(middle.symbols[0]) if middle.symbols and middle.symbols_are_values else None
    return e.param if e is not None and e.op == "num" else None


def _transpose_ratio(left: list[A.Jacobian], right: list[A.Jacobian]) -> float | None:
    """``r`` where the product ``left`` is ``r`` times the transpose of the product
    ``right``, as the formulas show it (factor by factor, numbers aside); else None."""
    if len(left) != len(right):
        return None
    ratio = 1.0
    for a, b in zip(left, reversed(right)):
        r = _pair_ratio(a, b)
        if r is None:
            return None
        ratio *= r
    return ratio


def _pair_ratio(a: A.Jacobian, b: A.Jacobian) -> float | None:
    if isinstance(a, Embed) and isinstance(b, Slice):  # Sᵀ, S: the same entries
        t = a.as_slice()
        same = (tuple(t.start), tuple(t.limit), tuple(t.strides), tuple(t.in_shape)) == (
            tuple(b.start), tuple(b.limit), tuple(b.strides), tuple(b.in_shape))
        return 1.0 if same else None
    if type(a) is not type(b) or a.in_shape != b.out_shape or a.out_shape != b.in_shape:
        return None
    if isinstance(a, Reshape):
        return 1.0
    if isinstance(a, A.ScaledIdentity):
        return _symbol_ratio(a, b, transpose=False)
    if isinstance(a, Dense) and len(a.out_shape) <= 1 and len(a.in_shape) <= 1:
        return _symbol_ratio(a, b, transpose=True)
    if isinstance(a, BlockDiagonal) and a.batch_shape == getattr(b, "batch_shape", None):
        return _symbol_ratio(a, b, transpose=True)
    return None


def _symbol_ratio(a: A.Jacobian, b: A.Jacobian, *, transpose: bool) -> float | None:
    """``ca / cb`` where ``a``'s expression is ``ca Mᵀ`` and ``b``'s is ``cb M``."""
    if not (a.symbols and b.symbols and a.symbols_are_values and b.symbols_are_values):
        return None
    (ca, x), (cb, y) = E.coefficient(a.symbols[0]), E.coefficient(b.symbols[0])
    if cb == 0:
        return None
    same = x == y if not transpose else (x == E.transpose(y) or E.transpose(x) == y)
    return float(ca) / float(cb) if same else None


def combine(pieces: list[Curvature], n: int) -> Curvature:
    """The sum of symmetric operators, merged where their structures merge."""
    flat: list[Curvature] = []
    for p in pieces:
        flat.extend(p.terms if isinstance(p, S.Sum) else [p])
    diagonals = [p for p in flat if isinstance(p, (S.Diagonal, S.ScaledIdentity))]
    others = [p for p in flat if not isinstance(p, (S.Diagonal, S.ScaledIdentity))]
    if any(isinstance(p, (S.Dense, S.Sum)) for p in others):
        return S.Dense(_total([p.dense() for p in flat]))
    if not others:
        if all(isinstance(p, S.ScaledIdentity) for p in diagonals):
            return S.ScaledIdentity(sum(p.scale for p in diagonals), n)  # type: ignore[attr-defined]
        return S.Diagonal(_diagonal_sum(diagonals))
    d = _diagonal_sum(diagonals) if diagonals else None
    batched = [p for p in others if isinstance(p, S.BatchedLowRank)]
    if batched and len(batched) == len(others) and len({p.blocks for p in batched}) == 1:
        return _batched_sum(batched, d)
    if batched:  # beside terms with no batch: one low rank over the whole argument
        others = [p.as_low_rank() if isinstance(p, S.BatchedLowRank) else p for p in others]
    if len(others) == 1 and isinstance(others[0], S.Gram) and not others[0].has_diagonal:
        g = others[0]
        return S.Gram(g.X, g.D, d) if d is not None else g
    if all(isinstance(p, S.DiagonalPlusLowRank) for p in others):
        low = [p for p in others if isinstance(p, S.DiagonalPlusLowRank)]
        total = sum((p.d for p in low[1:]), low[0].d)
        U = jnp.concatenate([p.U for p in low], 1)
        if U.shape[1] >= n:  # of full rank together: dense is smaller and solves faster
            return S.Dense(_total([p.dense() for p in flat]))
        C = _block_diag([p.C for p in low])
        return S.DiagonalPlusLowRank(total if d is None else total + d, U, C)
    terms = others + ([S.Diagonal(d)] if d is not None else [])
    return S.Sum(terms) if len(terms) > 1 else terms[0]


def _batched_sum(terms: list[S.BatchedLowRank], d) -> S.BatchedLowRank:
    """Batched low-rank terms of one block shape, and a diagonal ``d``: one, the blocks'
    $U_b$ side by side and their $C_b$ block diagonal."""
    shape = terms[0].d.shape
    total = sum((p.d for p in terms[1:]), terms[0].d)
    if d is not None:
        total = total + d.reshape(shape)
    if len(terms) == 1:
        return S.BatchedLowRank(total, terms[0].U, terms[0].C)
    U = jnp.concatenate([p.U for p in terms], 2)
    C = jax.vmap(lambda *Cs: jsl.block_diag(*Cs))(*(p.C for p in terms))
    return S.BatchedLowRank(total, U, C)


def _total(parts):
    return functools.reduce(jnp.add, parts)


def _diagonal_sum(diagonals):
    return sum((p.diagonal() for p in diagonals[1:]), diagonals[0].diagonal())


def _block_diag(blocks):
    return jsl.block_diag(*blocks)
