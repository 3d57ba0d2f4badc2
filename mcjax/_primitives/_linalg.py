r"""Linear algebra: the formulas a person writes where one exists, JAX's own map where none does.

- ``inv``: $d(A^{-1}) = -A^{-1}\,dA\,A^{-1}$, a ``mcjax.Sandwich``;
- ``solve(A, b)``: $A^{-1}$ applied to $db$; $-A^{-1}\,dA\,\mathbf{x}$ for $dA$;
- ``det``: $\partial \det A / \partial A = \det(A)\,A^{-\top}$; ``slogdet``: $\partial \log|\det A| /
  \partial A = A^{-\top}$;
- ``cholesky``: $dL = L\,\Phi(L^{-1}\,dA\,L^{-\top})$, $\Phi$ the lower triangle with its diagonal
  halved (Murray, 2016);
- ``triangular_solve``: linear in ``b``; $-A^{-1}\,dA\,X$ for ``A`` (its triangle);
- ``fft``: linear, the transform itself.

``inv``, ``solve``, ``det`` and ``slogdet`` are JAX's own jitted functions (built from an LU
decomposition), known by name (``jit:inv``); a user's function of the same name is walked as
any other.  The decompositions (``lu``, ``qr``, ``eigh``, ``eig``, ``svd``) have no
structured rule: their Jacobian is JAX's linear map, named.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from mcjax._jacobian import _build as B
from mcjax._jacobian import _expr as E
from mcjax._jacobian._sym import Sym
from mcjax._primitives._linear import linear, traced
from mcjax._primitives._table import Eqn, register

FAMILY = "linear algebra"
_DECOMPOSITION = "a matrix decomposition: no structured rule, JAX's linear map of it"


def _inverse(A: Sym) -> Sym:
    return Sym(jnp.linalg.inv(A.value), E.inverse(A.expr))


def _square(e: Eqn, ins: int) -> bool:
    """Whether a call named like ``jnp.linalg``'s takes ``ins`` operands, the first a square
    matrix: a rule read from a name (``jit:solve``) checks the signature it assumes, as JAX's
    own code names other functions alike (the backward pass of ``solve`` is a ``solve`` too)."""
    shape = e.ins[0].shape if e.ins else ()
    return len(e.ins) == ins and len(shape) == 2 and shape[0] == shape[1]


def _inv(e: Eqn):
    """$d(A^{-1}) = -A^{-1}\\,dA\\,A^{-1}$."""
    if not _square(e, 1) or e.out.shape != e.ins[0].shape:
        return None  # another function of that name: the body is walked
    if 0 not in e.active:
        return {}
    inv = e.out.sym
    return {0: B.sandwich(-inv, inv)}


def _solve(e: Eqn):
    """$\\mathbf{x} = A^{-1}\\mathbf{b}$: $A^{-1}$ applied to $d\\mathbf{b}$, and
    $-A^{-1}\\,dA\\,\\mathbf{x}$."""
    if not _square(e, 2) or len(e.outs) > 1:
        return None  # batched, or another function of that name: the body is walked
    A, b = e.ins
    if len(b.shape) not in (1, 2) or b.shape[0] != A.shape[0] or e.out.shape != b.shape:
        return None
    inv = _inverse(A.sym)
    out = {}
    if 0 in e.active:
        out[0] = B.sandwich(-inv, e.out.sym)
    if 1 in e.active:
        out[1] = B.contraction(inv, (((1,), (0,)), ((), ())), 1, b.shape)
    return out


def _gradient_row(e: Eqn, k: int, written: E.Expr) -> object:
    """The gradient of a scalar output as a row, JAX's own numbers, written as ``written``."""
    values = [op.value for op in e.ins]

    def of(z):
        return e.apply(values[:k] + [z] + values[k + 1:])[-1]

    return B.dense(Sym(jax.grad(of)(values[k]), written), len(e.ins[k].shape))


def _det(e: Eqn):
    """$\\det(A)\\,A^{-\\top}$."""
    A = e.ins[0]
    if 0 not in e.active or not _square(e, 1) or e.out.shape != () or len(e.outs) > 1:
        return None
    written = E.mul(e.out.expr, E.transpose(E.inverse(A.expr)))
    return {0: _gradient_row(e, 0, written)}


def _slogdet(e: Eqn):
    """The sign has no derivative; $\\log|\\det A|$ has $A^{-\\top}$."""
    A = e.ins[0]
    if 0 not in e.active or not _square(e, 1) or [o.shape for o in e.outs] != [(), ()]:
        return None
    return [{}, {0: _gradient_row(e, 0, E.transpose(E.inverse(A.expr)))}]


register("jit:inv", FAMILY, jacobian=_inv, expr=lambda a, s, p: E.inverse(a[0]))
register("jit:solve", FAMILY, jacobian=_solve, expr=lambda a, s, p: E.call("solve", *a, shape=s))
register("jit:det", FAMILY, jacobian=_det, expr=lambda a, s, p: E.call("det", *a, shape=s))
register("jit:slogdet", FAMILY, jacobian=_slogdet,
         expr=lambda a, s, p: E.call("logabsdet", *a, shape=s))


def _phi_mask(n: int, dtype) -> jax.Array:
    """$\\Phi$: the lower triangle, its diagonal halved."""
    return jnp.tril(jnp.ones((n, n), dtype)) - 0.5 * jnp.eye(n, dtype=dtype)


def _cholesky(e: Eqn):
    """$dL = L\\,\\Phi(L^{-1}\\,dA\\,L^{-\\top})$ (JAX's forward rule)."""
    A = e.ins[0]
    if 0 not in e.active or len(A.shape) != 2:
        return None
    n = A.shape[-1]
    L = Sym(jnp.tril(e.out.value), e.out.expr)
    L_inv = Sym(lax.linalg.triangular_solve(L.value, jnp.eye(n, dtype=L.value.dtype),
                                            left_side=True, lower=True),
                E.inverse(L.expr))
    identity = Sym(jnp.eye(n, dtype=L.value.dtype), E.constant("I", "I", (n, n)))
    phi = Sym(_phi_mask(n, A.dtype), E.call("Φ", shape=(n, n)))
    return {0: B.compose(B.sandwich(L, identity), B.compose(
        B.diagonal(phi, (n, n), A.dtype),
        B.sandwich(L_inv, Sym(L_inv.value.T, E.transpose(L_inv.expr)))))}


register("cholesky", FAMILY, jacobian=_cholesky, fallback="batched matrices (JAX's linear map)")


def _triangular_solve(e: Eqn):
    """Linear in ``b``; for ``A``: $-A^{-1}(\\text{its triangle of } dA)\\,X$ (or $X\\,dA\\,A^{-1}$
    solving from the right), as JAX differentiates it."""
    a, b = e.ins
    p = e.params
    out = {}
    solve_b = linear("triangular_solve", shown=(0,))(e) if 1 in e.active else {}
    if 1 in e.active:
        out[1] = solve_b[1]
    if 0 in e.active:
        nd = len(a.shape)
        batch = tuple(range(nd - 2))
        k = 1 if p["unit_diagonal"] else 0
        mask = jnp.tril(jnp.ones(a.shape, a.dtype), -k) if p["lower"] else jnp.triu(
            jnp.ones(a.shape, a.dtype), k)
        J = B.diagonal(Sym(-mask, E.neg(E.call("tri", shape=a.shape))), a.shape, a.dtype)
        if p["transpose_a"]:
            J = B.compose(B.permutation(batch + (nd - 1, nd - 2), a.shape, a.dtype), J)
        X = e.out.sym
        if p["left_side"]:  # (-dA) X, then A^{-1}
            times_x = B.contraction(X, (((nd - 1,), (nd - 2,)), (batch, batch)), 0, a.shape)
        else:  # X (-dA), then A^{-1} from the right
            times_x = B.contraction(X, (((nd - 1,), (nd - 2,)), (batch, batch)), 1, a.shape)
        held = [a.value, None]
        solve = B.applied(B.Operation.of(e.primitive, e.params, "triangular_solve"), held, 1,
                          times_x.out_shape, e.out.shape, e.out.dtype, (a.expr,))
        out[0] = B.compose(solve, B.compose(times_x, J))
    return out


register("triangular_solve", FAMILY, jacobian=_triangular_solve)
register("fft", FAMILY, jacobian=linear("fft"))
register("tridiagonal_solve", FAMILY, jacobian=lambda e: linear("tridiagonal_solve",
                                                                   shown=())(e)
         if e.active == (3,) else None,
         fallback="the three diagonals (JAX's linear map); linear in the right-hand side")
register("custom_linear_solve", FAMILY,
         fallback="a solve by the user's own solver (JAX's linear map: its transpose rule)")
for _name in ("lu", "qr", "eigh", "eig", "svd", "schur", "hessenberg", "tridiagonal",
              "geqrf", "householder_product", "lu_pivots_to_permutation"):
    register(_name, FAMILY, fallback=_DECOMPOSITION)
del traced
