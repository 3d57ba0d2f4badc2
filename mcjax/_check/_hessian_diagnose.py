r"""The slips of a hand-derived second derivative, named from Hessian-vector products.

The true Hessian, the Gauss-Newton matrix and the matrix under test are applied to probes
$V$ (the identity up to ``EXACT_PROBES`` coordinates, a few random directions above: no
$n \times n$ array of a large problem), and a slip is named when it explains the
difference within a slack of $\sqrt{\varepsilon}$ of the values' scale and the truth is
not explained by it:

- **asymmetric**: $V^\top H V$ is not symmetric (a cross block written for its transpose;
  $2A$ for the Hessian $A + A^\top$ of $\mathbf{x}^\top A\mathbf{x}$, whose symmetric part
  is then right);
- **Gauss-Newton for Hessian**: $H V = J^\top H_L J V$ where the full Hessian, which adds
  $\sum_k \partial L/\partial y_k\, \nabla^2 y_k$, was due (and the reverse);
- **Kronecker factors swapped**: for a matrix parameter $W$ (m, n), the Hessian with $W$'s
  axes swapped on both sides: $(\mathbf{x}\mathbf{x}^\top) \otimes H_b$ where
  $H_b \otimes (\mathbf{x}\mathbf{x}^\top)$ was due.

A constant factor, a flipped sign, a missing term and a difference of low rank are named
by the first-order diagnosis (``mcjax._check._diagnose``) of the same report in full mode;
in fast mode, which has none, a constant factor is named here (in its words).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from mcjax._check._diagnose import _name_factor
from mcjax._check._hessian_forms import as_hessian_tree
from mcjax._check._problem import argument_spec
from mcjax._check._report import Report
from mcjax._check._report_parts import Slip
from mcjax._check._returned import is_pullback, pullback_of
from mcjax._core._conventions import standard_promotion

EXACT_PROBES = 128
"""Up to this many coordinates the diagnosis compares whole matrices (probes = the identity);
above, ``RANDOM_PROBES`` random directions."""

RANDOM_PROBES = 8


def _flat(args, argnums):
    """``(x_flat, at)``: the argument as one vector, and the arguments with it replaced."""
    x_flat, unravel = ravel_pytree(args[argnums])

    def at(t):
        return (*args[:argnums], unravel(t), *args[argnums + 1:])

    return x_flat, unravel, at


def _apply(fn, V, dtype) -> np.ndarray:
    """``fn`` (a product ``v -> M v``) on each column of ``V``, compiled once: float64 NumPy."""
    out = jax.jit(jax.vmap(fn, in_axes=1, out_axes=1))(jnp.asarray(V, dtype))
    return np.asarray(out, np.float64)


def hessian_products(scalar_f, args, argnums, V) -> np.ndarray:
    """$H V$ by forward-over-reverse HVPs (``jax.jvp`` of ``jax.grad``)."""
    x_flat, _, at = _flat(args, argnums)

    def grad_flat(t):
        return ravel_pytree(jax.grad(scalar_f, argnums=argnums)(*at(t)))[0]

    return _apply(lambda v: jax.jvp(grad_flat, (x_flat,), (v,))[1], V, x_flat.dtype)


def gauss_newton_products(pair, args, argnums, V) -> np.ndarray:
    """$J^\\top H_L J V$: the model's JVP, the loss's HVP at its output, the model's VJP."""
    model, loss = pair
    x_flat, _, at = _flat(args, argnums)

    def model_flat(t):
        return model(*at(t))

    def product(v):
        y0, Jv = jax.jvp(model_flat, (x_flat,), (v,))
        HJv = jax.jvp(jax.grad(loss), (y0,), (Jv,))[1]
        return jax.vjp(model_flat, x_flat)[1](HJv)[0]

    return _apply(product, V, x_flat.dtype)


def products_under_test(derivative, args, argnums, V) -> np.ndarray:
    """The matrix under test applied to ``V``: its HVP function's, or its dense form's."""
    x = args[argnums]
    x_flat, unravel, _ = _flat(args, argnums)
    value = derivative(*args)
    if is_pullback(value):
        fn = pullback_of(value)
        return np.stack([np.asarray(ravel_pytree(fn(unravel(jnp.asarray(V[:, j], x_flat.dtype))))[0],
                                    np.float64) for j in range(V.shape[1])], axis=1)
    rows = jax.tree_util.tree_leaves(as_hessian_tree(value, x))  # blocks [a][b], row-major
    sizes = [int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(x)]
    L = len(sizes)
    M = np.block([[np.asarray(rows[a * L + b], np.float64).reshape(sizes[a], sizes[b])
                   for b in range(L)] for a in range(L)])
    return M @ np.asarray(V, np.float64)


def _close(a, b, slack) -> bool:
    return bool(np.all(np.abs(a - b) <= slack))


def _leaf_names(scalar_f, x, argnums: int) -> list[tuple[str, tuple[int, ...], int]]:
    """``(name, shape, offset)`` of each leaf of ``x``, as the report names them."""
    spec = argument_spec(scalar_f, x, argnums)
    return list(zip(spec.leaf_names, spec.shapes, spec.offsets))


def _asymmetric(S, truth, slack, names, exact) -> Slip | None:
    """``S = V^T H V`` not symmetric; which blocks, and whether its symmetric part is right."""
    asym = np.abs(S - S.T)
    if asym.max(initial=0.0) <= slack:
        return None
    where = ""
    if exact:
        i, j = np.unravel_index(int(np.argmax(asym)), asym.shape)
        leaf = [name for name, _, offset in names if offset <= i][-1], \
            [name for name, _, offset in names if offset <= j][-1]
        where = (f"; largest at [{i}, {j}]" if len(names) == 1
                 else f"; largest in the blocks of {leaf[0]} and {leaf[1]}")
    symmetric_right = _close((S + S.T) / 2, truth, slack)
    return Slip("asymmetric", "asymmetric: H is not symmetric (|u^T H v - v^T H u| up to "
                f"{asym.max():.3g}{where}); a Hessian is symmetric: a block [a][b] written "
                "for the transpose of [b][a]?"
                + ("; its symmetric part (H + H^T)/2 is right: A where (A + A^T)/2 was due "
                   "(2A for the Hessian A + A^T of x^T A x)?" if symmetric_right else ""))


def _kronecker_swaps(true, got, slack, names):
    """A matrix leaf's axes swapped on both sides (needs the whole matrices)."""
    n = true.shape[0]
    for name, shape, offset in names:
        if len(shape) != 2 or min(shape) < 2:
            continue
        perm = np.arange(n)
        size = shape[0] * shape[1]
        perm[offset:offset + size] = offset + np.arange(size).reshape(shape).T.ravel()
        swapped = true[np.ix_(perm, perm)]
        if not _close(swapped, true, slack) and _close(got, swapped, slack):
            return Slip("transposed", f"matches the Hessian with {name}'s two axes {shape} "
                        "swapped on both sides: the Kronecker factors in the wrong order "
                        "((x x^T) (x) H where H (x) (x x^T) was due, for row-major W)?")
    return None


def diagnose_hessian(scalar_f, pair, kind, derivative, args, argnums, report: Report
                     ) -> list[Slip]:
    """The second-order slips that explain a failing ``report`` (often none: then the
    first-order diagnosis speaks).  A full-mode report's matrices are used where they are
    the ones needed; the rest is computed by products with probes."""
    x = args[argnums]
    n = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(x))
    exact = n <= EXACT_PROBES
    V = np.eye(n) if exact else np.random.default_rng(0).standard_normal((n, RANDOM_PROBES))
    kept = report.matrices if exact and report.matrices else {}
    try:
        with standard_promotion():
            got = kept["got"] if kept else products_under_test(derivative, args, argnums, V)
            if kept and kind != "gauss_newton":
                true = kept["expected"]
            else:
                true = hessian_products(scalar_f, args, argnums, V)
            if kept and kind == "gauss_newton":
                gn = kept["expected"]
            else:
                gn = gauss_newton_products(pair, args, argnums, V) if pair is not None else None
    except Exception:  # noqa: BLE001 - the first-order diagnosis still speaks
        return []
    got, true = np.asarray(got, np.float64), np.asarray(true, np.float64)
    if not (np.all(np.isfinite(got)) and np.all(np.isfinite(true))):
        return []
    eps = float(jnp.finfo(report.dtype).eps)
    due = gn if kind == "gauss_newton" and gn is not None else true
    scale = max(float(np.abs(due).max(initial=0.0)), float(np.abs(got).max(initial=0.0)))
    slack = np.sqrt(eps) * scale + report.threshold.atol
    names = _leaf_names(scalar_f, x, argnums)
    S, S_due = V.T @ got, V.T @ due
    asym = _asymmetric(S, S_due, np.sqrt(eps) * float(np.abs(S_due).max(initial=0.0))
                       + report.threshold.atol, names, exact)
    if asym is not None:
        return [asym]
    if gn is not None and not _close(gn, true, slack):
        if kind != "gauss_newton" and _close(got, gn, slack):
            return [Slip("gauss-newton-for-hessian", "the Gauss-Newton part only: matches "
                         "J^T H_L J, but the full Hessian adds sum_k dL/dy_k times the "
                         "model's own second derivative of y_k (pass kind='gauss_newton' if "
                         "the Gauss-Newton matrix is what you meant)")]
        if kind == "gauss_newton" and _close(got, true, slack):
            return [Slip("hessian-for-gauss-newton", "the full Hessian where the Gauss-Newton "
                         "matrix J^T H_L J was due (it leaves out the model's own curvature): "
                         "pass kind='hessian' if you meant the Hessian")]
    if exact:
        swap = _kronecker_swaps(due, got, slack, names)
        if swap is not None:
            return [swap]
    denominator = float(np.sum(due * due))
    c = float(np.sum(got * due)) / denominator if denominator else 0.0
    if c not in (0.0, 1.0) and np.isfinite(c) and _close(got, c * due, slack * max(1, abs(c))):
        if report.mode == "full":
            return []  # full mode's own diagnosis names the factor
        sizes = {f"axis {k} of {name}": d for name, shape, _ in names for k, d in enumerate(shape)}
        return [Slip("sign" if abs(c + 1) <= 1e-3 else "factor",
                     f"a constant factor: matches the Hessian times {_name_factor(c, sizes)}")]
    if exact:
        term = _missing_term(got - due, due, slack)
        if term is not None:
            return [term]
    return []


def _missing_term(E, due, slack) -> Slip | None:
    """A symmetric difference of lower rank than the Hessian: a term left out or added."""
    s = np.linalg.svd(E, compute_uv=False)
    noise = float(slack) * np.sqrt(E.shape[0])
    rank = int(np.sum(s > noise))
    rank_due = int(np.sum(np.linalg.svd(due, compute_uv=False) > noise))
    if rank == 0 or rank >= max(rank_due, 1) or not _close(E, E.T, slack):
        return None
    eigenvalues = np.linalg.eigvalsh((E + E.T) / 2)
    if eigenvalues.min() >= -noise:
        what = ("H lacks a negative term (or has an extra positive one): H - Hessian is "
                "positive semi-definite")
    elif eigenvalues.max() <= noise:
        what = ("H lacks a positive term (or has an extra negative one): H - Hessian is "
                "negative semi-definite")
    else:
        what = "a missing or extra term: H - Hessian is symmetric and indefinite"
    return Slip("missing-term", f"{what}, of rank {rank} (the Hessian's is {rank_due}): a sum "
                f"of {rank} outer products u u^T, like the -p p^T of each row's diag(p) - p p^T "
                "in softmax cross-entropy, or a term of the product rule left out?")
