r"""The structures a Hessian is found in, each with the operations it does cheaper than dense.

Notation: $n$ is the size of the flattened argument, $\lambda$ the damping of ``solve``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from mcjax._curvature._operator import (
    Curvature,
    describe,
    diagonal,
    mv,
    shape_text,
    slogdet,
    solve,
    trace,
)
from mcjax._curvature._operator import dense as dense_of


class ScaledIdentity(Curvature):
    """$cI_n$ (the Hessian of $\\frac{c}{2}\\lVert x \\rVert^2$).

    Args:
      scale: a scalar $c$.
      n: the size of the flattened argument.
    """

    kind = "scaled identity"
    template = "c I"
    _arrays = ("scale",)
    _static = ("n",)
    scale: jax.Array
    n: int

    def __init__(self, scale, n: int):
        self._init(scale=jnp.asarray(scale), n=int(n))

    @property
    def size(self) -> int:
        return self.n


@mv.register
def _(op: ScaledIdentity, v):
    return op.scale * v


@dense_of.register
def _(op: ScaledIdentity):
    return op.scale * jnp.eye(op.n, dtype=op.dtype)


@diagonal.register
def _(op: ScaledIdentity):
    return jnp.full((op.n,), op.scale, op.dtype)


@solve.register
def _(op: ScaledIdentity, b, damping):
    return b / (op.scale + damping)


@slogdet.register
def _(op: ScaledIdentity):
    sign = jnp.sign(op.scale) ** op.n
    return sign, op.n * jnp.log(jnp.abs(op.scale))


class Diagonal(Curvature):
    """$\\operatorname{diag}(d)$ (the Hessian of a separable function $\\sum_i g(x_i)$).

    Args:
      d: shape ``(n,)``.
    """

    kind = "diagonal"
    template = "diag(d)"
    _arrays = ("d",)
    d: jax.Array

    def __init__(self, d):
        self._init(d=jnp.asarray(d))

    @property
    def size(self) -> int:
        return int(self.d.shape[0])


@mv.register
def _(op: Diagonal, v):
    return op.d * v


@dense_of.register
def _(op: Diagonal):
    return jnp.diag(op.d)


@diagonal.register
def _(op: Diagonal):
    return op.d


@solve.register
def _(op: Diagonal, b, damping):
    return b / (op.d + damping)


@slogdet.register
def _(op: Diagonal):
    return _diagonal_slogdet(op.d)


def _diagonal_slogdet(d):
    return jnp.prod(jnp.sign(d)), jnp.sum(jnp.log(jnp.abs(d)))


def _woodbury_solve(e, U, C, b):
    """$(\\operatorname{diag}(e) + U C U^\\top)^{-1} b$ by Woodbury's identity,
    $E^{-1} - E^{-1} U (I + C U^\\top E^{-1} U)^{-1} C U^\\top E^{-1}$: a $k \\times k$ system
    for $U$ of shape ``(n, k)``; ``C`` is ``(k, k)`` or its diagonal ``(k,)``."""
    Ue = U / e[:, None]
    M = _times_c(C, U.T @ Ue)
    M = M + jnp.eye(M.shape[0], dtype=M.dtype)
    be = b / e
    return be - Ue @ jnp.linalg.solve(M, _times_c(C, U.T @ be))


def _woodbury_slogdet(e, U, C):
    """$\\det(E + U C U^\\top) = \\det E \\, \\det(I + C U^\\top E^{-1} U)$ (the matrix
    determinant lemma), as ``(sign, log|det|)``."""
    M = _times_c(C, U.T @ (U / e[:, None]))
    sign, logabs = jnp.linalg.slogdet(M + jnp.eye(M.shape[0], dtype=M.dtype))
    sign_e, log_e = _diagonal_slogdet(e)
    return sign * sign_e, logabs + log_e


def _times_c(C, M):
    if C.ndim == 2:
        return C @ M
    return C[:, None] * M if M.ndim == 2 else C * M


class DiagonalPlusLowRank(Curvature):
    """$\\operatorname{diag}(d) + U C U^\\top$ with $U$ of rank $k \\ll n$ (softmax
    cross-entropy: $\\operatorname{diag}(p) - p p^\\top$).

    Args:
      d: shape ``(n,)``.
      U: shape ``(n, k)``.
      C: shape ``(k, k)``, symmetric.
    """

    kind = "diagonal plus low rank"
    template = "diag(d) + U C Uᵀ"
    _arrays = ("d", "U", "C")
    d: jax.Array
    U: jax.Array
    C: jax.Array

    def __init__(self, d, U, C):
        self._init(d=jnp.asarray(d), U=jnp.asarray(U), C=jnp.asarray(C))

    @property
    def size(self) -> int:
        return int(self.d.shape[0])


@mv.register
def _(op: DiagonalPlusLowRank, v):
    return op.d * v + op.U @ (op.C @ (op.U.T @ v))


@dense_of.register
def _(op: DiagonalPlusLowRank):
    return jnp.diag(op.d) + op.U @ op.C @ op.U.T


@diagonal.register
def _(op: DiagonalPlusLowRank):
    return op.d + jnp.einsum("ik,kl,il->i", op.U, op.C, op.U)


@solve.register
def _(op: DiagonalPlusLowRank, b, damping):
    e = op.d + damping
    return _unless_singular(e, lambda: _woodbury_solve(e, op.U, op.C, b),
                            lambda: _dense_solve(op, b, damping))


@slogdet.register
def _(op: DiagonalPlusLowRank):
    return _unless_singular(op.d, lambda: _woodbury_slogdet(op.d, op.U, op.C),
                            lambda: _dense_slogdet(op))


def _unless_singular(e, woodbury, dense):
    """Woodbury's identity and the determinant lemma divide by the diagonal $E$: where it
    has a zero (a pure low-rank term, no damping), the dense $O(n^3)$ computation instead,
    chosen at run time (``lax.cond`` runs one branch)."""
    return jax.lax.cond(jnp.all(e != 0), woodbury, dense)


def _dense_solve(op: Curvature, b, damping):
    return jnp.linalg.solve(dense_of(op) + damping * jnp.eye(op.size, dtype=op.dtype), b)


def _dense_slogdet(op: Curvature):
    sign, logabs = jnp.linalg.slogdet(dense_of(op))
    return sign, logabs


@describe.register
def _(op: DiagonalPlusLowRank):
    return f"{op.kind}: {op.template}, U {shape_text(*op.U.shape)}"


class BatchedLowRank(Curvature):
    r"""$\operatorname{blockdiag}_b(\operatorname{diag}(d_b) + U_b C_b U_b^\top)$: $B$
    independent blocks of size $q$ (one per example of a batch), each a diagonal plus a rank
    $r \ll q$ (softmax cross-entropy summed over a batch: $\operatorname{diag}(p_b) - p_b
    p_b^\top$ for each row $b$).  The flattened argument is ``(B, q)`` row-major; every
    operation is the single block's, batched: $O(Bqr)$ for ``hvp``, $O(B(qr^2 + r^3))$ for
    ``solve``, where ``DiagonalPlusLowRank`` would hold a $Bq \times Br$ matrix of zeros
    between blocks.

    Args:
      d: shape ``(B, q)``.
      U: shape ``(B, q, r)``.
      C: shape ``(B, r, r)``, each symmetric.
    """

    kind = "batched diagonal plus low rank"
    template = "blockdiag_b(diag(d_b) + U_b C_b U_bᵀ)"
    _arrays = ("d", "U", "C")
    d: jax.Array
    U: jax.Array
    C: jax.Array

    def __init__(self, d, U, C):
        self._init(d=jnp.asarray(d), U=jnp.asarray(U), C=jnp.asarray(C))

    @property
    def size(self) -> int:
        return int(self.d.size)

    @property
    def blocks(self) -> tuple[int, int]:
        """``(B, q)``: the number of blocks and the size of each."""
        return int(self.d.shape[0]), int(self.d.shape[1])

    def block_matrices(self) -> jax.Array:
        """The blocks as dense matrices, shape ``(B, q, q)``."""
        UC = jnp.einsum("bqr,brs->bqs", self.U, self.C)
        return jnp.einsum("bqs,bps->bqp", UC, self.U) + jax.vmap(jnp.diag)(self.d)

    def as_low_rank(self) -> DiagonalPlusLowRank:
        """The same operator as one ``DiagonalPlusLowRank`` (its $U$ of shape $(Bq, Br)$,
        zero between blocks): how it meets a term with no batch structure in a sum."""
        B, q = self.blocks
        r = self.U.shape[2]
        eye = jnp.eye(B, dtype=self.U.dtype)
        U = jnp.einsum("bqr,bc->bqcr", self.U, eye).reshape(B * q, B * r)
        C = jnp.einsum("brs,bc->brcs", self.C, eye).reshape(B * r, B * r)
        return DiagonalPlusLowRank(self.d.reshape(-1), U, C)


def _per_block(op: BatchedLowRank, v):
    return v.reshape(op.blocks)


@mv.register
def _(op: BatchedLowRank, v):
    x = _per_block(op, v)
    inner = jnp.einsum("brs,bqs,bq->br", op.C, op.U, x)
    return (op.d * x + jnp.einsum("bqr,br->bq", op.U, inner)).reshape(-1)


@dense_of.register
def _(op: BatchedLowRank):
    B, q = op.blocks
    eye = jnp.eye(B, dtype=op.d.dtype)
    return jnp.einsum("bqp,bc->bqcp", op.block_matrices(), eye).reshape(B * q, B * q)


@diagonal.register
def _(op: BatchedLowRank):
    return (op.d + jnp.einsum("bqr,brs,bqs->bq", op.U, op.C, op.U)).reshape(-1)


@solve.register
def _(op: BatchedLowRank, b, damping):
    e = op.d + damping
    x = _per_block(op, b)
    return _unless_singular(
        e, lambda: jax.vmap(_woodbury_solve)(e, op.U, op.C, x).reshape(-1),
        lambda: jnp.linalg.solve(
            op.block_matrices() + damping * jnp.eye(op.blocks[1], dtype=op.dtype)[None],
            x[..., None])[..., 0].reshape(-1))


@slogdet.register
def _(op: BatchedLowRank):
    def woodbury():
        signs, logs = jax.vmap(_woodbury_slogdet)(op.d, op.U, op.C)
        return jnp.prod(signs), jnp.sum(logs)

    def dense():
        signs, logs = jnp.linalg.slogdet(op.block_matrices())
        return jnp.prod(signs), jnp.sum(logs)

    return _unless_singular(op.d, woodbury, dense)


@describe.register
def _(op: BatchedLowRank):
    B, q = op.blocks
    return (f"{op.kind}: {op.template}, {B} blocks of {shape_text(q, q)}, "
            f"U_b {shape_text(q, op.U.shape[2])}")


class DiagonalGrid(Curvature):
    r"""An $L \times L$ grid of diagonal blocks, $H_{ij} = \operatorname{diag}(D_{ij})$, each
    of size $m$: the Hessian of a function summed element by element over $L$ variables of
    one shape, $\sum_k g(x_k, y_k, \dots)$ (a Gaussian's negative log-likelihood in its
    mean and log-variance, $x \odot y$, ``lax.atan2``).  Element $k$ of every variable
    meets only element $k$ of the others: $m$ independent $L \times L$ systems, so ``solve``
    and ``slogdet`` cost $O(mL^3)$, ``hvp`` $O(mL^2)$.

    Args:
      D: shape ``(L, L, m)``, ``D[i, j] == D[j, i]``; the flattened argument is the $L$
        variables one after another (``jax.flatten_util.ravel_pytree``'s order).
    """

    kind = "grid of diagonals"
    template = "[diag(D_ij)]_ij"
    _arrays = ("D",)
    D: jax.Array

    def __init__(self, D):
        self._init(D=jnp.asarray(D))

    @property
    def size(self) -> int:
        return int(self.D.shape[0] * self.D.shape[2])

    def element_blocks(self) -> jax.Array:
        """The $m$ systems, shape ``(m, L, L)``: element $k$'s second derivatives."""
        return jnp.moveaxis(self.D, 2, 0)


def _by_variable(op: DiagonalGrid, v):
    return v.reshape(op.D.shape[0], op.D.shape[2])


@mv.register
def _(op: DiagonalGrid, v):
    return jnp.einsum("ijk,jk->ik", op.D, _by_variable(op, v)).reshape(-1)


@dense_of.register
def _(op: DiagonalGrid):
    L, m = op.D.shape[0], op.D.shape[2]
    return jnp.einsum("ijk,kl->ikjl", op.D, jnp.eye(m, dtype=op.D.dtype)).reshape(L * m, L * m)


@diagonal.register
def _(op: DiagonalGrid):
    return jnp.einsum("iik->ik", op.D).reshape(-1)


@solve.register
def _(op: DiagonalGrid, b, damping):
    L = op.D.shape[0]
    M = op.element_blocks() + damping * jnp.eye(L, dtype=op.dtype)[None]
    x = jnp.linalg.solve(M, _by_variable(op, b).T[..., None])[..., 0]  # (m, L)
    return x.T.reshape(-1)


@slogdet.register
def _(op: DiagonalGrid):
    signs, logs = jnp.linalg.slogdet(op.element_blocks())
    return jnp.prod(signs), jnp.sum(logs)


@describe.register
def _(op: DiagonalGrid):
    L, m = op.D.shape[0], op.D.shape[2]
    return f"{op.kind}: {op.template}, {L}×{L} blocks of size {m}"


class Gram(Curvature):
    """$X^\\top \\operatorname{diag}(D) X + \\operatorname{diag}(d)$ (a generalised linear
    model's Hessian, $X^\\top \\operatorname{diag}(s(1 - s)) X / N + \\lambda I$).

    Args:
      X: shape ``(N, n)``.
      D: shape ``(N,)``.
      d: shape ``(n,)`` (zeros where the form has no diagonal).
      has_diagonal: whether ``d`` is part of the form (printing only).

    ``solve`` with damping $\\lambda$: for $N < n$ Woodbury's $N \\times N$ system
    $I + S X E^{-1} X^\\top S$ ($E = \\operatorname{diag}(d + \\lambda)$, $S = D^{1/2}$), else
    the $n \\times n$ one; by Cholesky where $D \\ge 0$ and $d + \\lambda > 0$ (the form is
    then positive definite: a convex GLM's Hessian), by LU otherwise.
    """

    kind = "gram"
    _arrays = ("X", "D", "d")
    _static = ("has_diagonal",)
    X: jax.Array
    D: jax.Array
    d: jax.Array
    has_diagonal: bool

    def __init__(self, X, D, d=None, *, has_diagonal: bool | None = None):
        X = jnp.asarray(X)
        if has_diagonal is None:
            has_diagonal = d is not None
        d = jnp.zeros(X.shape[1], X.dtype) if d is None else jnp.asarray(d)
        self._init(X=X, D=jnp.asarray(D), d=d, has_diagonal=bool(has_diagonal))

    @property
    def template(self) -> str:  # type: ignore[override]
        return "Xᵀ diag(D) X" + (" + diag(d)" if self.has_diagonal else "")

    @property
    def size(self) -> int:
        return int(self.X.shape[1])


@mv.register
def _(op: Gram, v):
    return (op.D * (op.X @ v)) @ op.X + op.d * v  # uᵀX, not Xᵀu: no transposed copy of X


def _gram_matrix(op: Gram, damping=0.0):
    return _inner(op.X, op.D[:, None] * op.X, 0) + jnp.diag(op.d + damping)


def _inner(P, Q, axis: int):
    r"""$P^\top Q$ (``axis=0``) or $P Q^\top$ (``axis=1``) as one ``dot_general``, with no
    transposed copy."""
    return jax.lax.dot_general(P, Q, (((axis,), (axis,)), ((), ())))


@dense_of.register
def _(op: Gram):
    return _gram_matrix(op)


@diagonal.register
def _(op: Gram):
    return op.D @ (op.X * op.X) + op.d


def _small_system(op: Gram, e):
    r"""$I + \operatorname{diag}(D) X E^{-1} X^\top$, the $N \times N$ matrix of Woodbury's
    identity and of the determinant lemma for $E + X^\top \operatorname{diag}(D) X$."""
    Xe = op.X / e[None, :]
    M = op.D[:, None] * _inner(Xe, op.X, 1)
    return M + jnp.eye(M.shape[0], dtype=M.dtype), Xe


@solve.register
def _(op: Gram, b, damping):
    N, n = op.X.shape
    e = op.d + damping
    positive = jnp.all(op.D >= 0) & jnp.all(e > 0)
    if N < n:  # Woodbury: an N × N system
        def woodbury():
            Xe = op.X / e[None, :]
            K = _inner(Xe, op.X, 1)  # X E⁻¹ Xᵀ, symmetric
            u = Xe @ b

            def cholesky():  # I + S K S, S = diag(√D): symmetric positive definite
                s = jnp.sqrt(op.D)
                M = s[:, None] * K * s[None, :] + jnp.eye(N, dtype=K.dtype)
                return s * _cholesky_solve(M, s * u)

            def lu():  # I + D K, as it comes
                return jnp.linalg.solve(op.D[:, None] * K + jnp.eye(N, dtype=K.dtype), op.D * u)
            return b / e - jax.lax.cond(positive, cholesky, lu) @ Xe
        return _unless_singular(e, woodbury, lambda: _dense_solve(op, b, damping))
    M = _gram_matrix(op, damping)
    return jax.lax.cond(positive, lambda: _cholesky_solve(M, b),
                        lambda: jnp.linalg.solve(M, b))


def _cholesky_solve(M, b):
    r"""$M^{-1} b$ for a symmetric positive definite $M$ (half the flops of an LU solve)."""
    return jsl.cho_solve(jsl.cho_factor(M, lower=True), b)


@slogdet.register
def _(op: Gram):
    N, n = op.X.shape
    if N < n:
        def lemma():
            M, _ = _small_system(op, op.d)
            sign, logabs = jnp.linalg.slogdet(M)
            sign_e, log_e = _diagonal_slogdet(op.d)
            return sign * sign_e, logabs + log_e
        return _unless_singular(op.d, lemma, lambda: _dense_slogdet(op))
    sign, logabs = jnp.linalg.slogdet(_gram_matrix(op))
    return sign, logabs


@describe.register
def _(op: Gram):
    N, n = op.X.shape
    how = "Woodbury, N×N" if N < n else "n×n"
    return f"{op.kind}: {op.template}, X {shape_text(N, n)} (solve: {how})"


class Kronecker(Curvature):
    """$A \\otimes B$ on the row-major flattening of a ``(p, q)`` argument
    ($(A \\otimes B)\\operatorname{vec}(V) = \\operatorname{vec}(A V B^\\top)$; the Hessian of a
    linear layer's squared error, $I \\otimes X^\\top X$).

    Args:
      A: shape ``(p, p)``, symmetric.
      B: shape ``(q, q)``, symmetric.
    """

    kind = "kronecker"
    template = "A ⊗ B"
    _arrays = ("A", "B")
    A: jax.Array
    B: jax.Array

    def __init__(self, A, B):
        self._init(A=jnp.asarray(A), B=jnp.asarray(B))

    @property
    def size(self) -> int:
        return int(self.A.shape[0] * self.B.shape[0])


def _as_matrix(op: Kronecker, v):
    return v.reshape(op.A.shape[0], op.B.shape[0])


@mv.register
def _(op: Kronecker, v):
    return (op.A @ _as_matrix(op, v) @ op.B.T).reshape(-1)


@dense_of.register
def _(op: Kronecker):
    return jnp.kron(op.A, op.B)


@diagonal.register
def _(op: Kronecker):
    return jnp.outer(jnp.diagonal(op.A), jnp.diagonal(op.B)).reshape(-1)


@trace.register
def _(op: Kronecker):
    return jnp.trace(op.A) * jnp.trace(op.B)


@solve.register
def _(op: Kronecker, b, damping):
    """Factor-wise: $A = Q_a \\Lambda_a Q_a^\\top$, $B = Q_b \\Lambda_b Q_b^\\top$, and
    $(A \\otimes B + \\lambda I)^{-1}$ divides by $\\lambda_a \\lambda_b^\\top + \\lambda$ in
    the eigenbases: $O(p^3 + q^3 + pq(p + q))$."""
    la, Qa = jnp.linalg.eigh(op.A)
    lb, Qb = jnp.linalg.eigh(op.B)
    inner = Qa.T @ _as_matrix(op, b) @ Qb / (jnp.outer(la, lb) + damping)
    return (Qa @ inner @ Qb.T).reshape(-1)


@slogdet.register
def _(op: Kronecker):
    p, q = op.A.shape[0], op.B.shape[0]
    sa, la = jnp.linalg.slogdet(op.A)
    sb, lb = jnp.linalg.slogdet(op.B)
    return sa ** q * sb ** p, q * la + p * lb


@describe.register
def _(op: Kronecker):
    return f"{op.kind}: {op.template}, A {shape_text(*op.A.shape)}, B {shape_text(*op.B.shape)}"


class BlockDiagonal(Curvature):
    """$\\operatorname{blockdiag}(H_1, \\dots, H_L)$: one block per parameter leaf, where the
    leaves do not interact (every off-diagonal block of the Hessian is zero).

    Args:
      blocks: the ``Curvature`` of each leaf, in ``jax.tree_util`` leaf order.
    """

    kind = "block diagonal"
    template = "blockdiag(H₁, …, H_L)"
    _arrays = ("blocks",)
    blocks: tuple[Curvature, ...]

    def __init__(self, blocks):
        self._init(blocks=tuple(blocks))

    @property
    def size(self) -> int:
        return sum(b.size for b in self.blocks)

    def split(self, v):
        """``v`` cut into the blocks' pieces."""
        cuts, at = [], 0
        for b in self.blocks[:-1]:
            at += b.size
            cuts.append(at)
        return jnp.split(v, cuts)


@mv.register
def _(op: BlockDiagonal, v):
    return jnp.concatenate([mv(b, p) for b, p in zip(op.blocks, op.split(v))])


@dense_of.register
def _(op: BlockDiagonal):
    return jsl.block_diag(*(dense_of(b) for b in op.blocks))


@diagonal.register
def _(op: BlockDiagonal):
    return jnp.concatenate([diagonal(b) for b in op.blocks])


@solve.register
def _(op: BlockDiagonal, b, damping):
    return jnp.concatenate([solve(k, p, damping) for k, p in zip(op.blocks, op.split(b))])


@slogdet.register
def _(op: BlockDiagonal):
    signs, logs = zip(*(slogdet(b) for b in op.blocks))
    return jnp.prod(jnp.stack(signs)), jnp.sum(jnp.stack(logs))


@describe.register
def _(op: BlockDiagonal):
    return f"{op.kind}: [" + "; ".join(describe(b) for b in op.blocks) + "]"


class Sum(Curvature):
    """$\\sum_k H_k$: structures that do not merge into one (``solve`` and ``slogdet`` are
    dense, $O(n^3)$).

    Args:
      terms: ``Curvature`` operators of one size.
    """

    kind = "sum"
    template = "H₁ + … + H_k"
    _arrays = ("terms",)
    terms: tuple[Curvature, ...]

    def __init__(self, terms):
        self._init(terms=tuple(terms))

    @property
    def size(self) -> int:
        return self.terms[0].size


@mv.register
def _(op: Sum, v):
    return _total([mv(t, v) for t in op.terms])


@dense_of.register
def _(op: Sum):
    return _total([dense_of(t) for t in op.terms])


@diagonal.register
def _(op: Sum):
    return _total([diagonal(t) for t in op.terms])


def _total(parts: list[jax.Array]) -> jax.Array:
    return functools.reduce(jnp.add, parts)


@describe.register
def _(op: Sum):
    return f"{op.kind}: " + " + ".join(f"({describe(t)})" for t in op.terms)


class Dense(Curvature):
    """A Hessian with no structure beyond symmetry, stored as its ``(n, n)`` array.

    Args:
      M: shape ``(n, n)``, symmetric.
    """

    kind = "dense"
    template = "H"
    _arrays = ("M",)
    M: jax.Array

    def __init__(self, M):
        self._init(M=jnp.asarray(M))

    @property
    def size(self) -> int:
        return int(self.M.shape[0])


@mv.register
def _(op: Dense, v):
    return op.M @ v


@dense_of.register
def _(op: Dense):
    return op.M
