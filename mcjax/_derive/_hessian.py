"""``mcjax.hessian``: the second derivative as a structured operator (``mcjax.gauss_newton``,
in ``_gauss_newton``, builds on it)."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from mcjax._core._arguments import (
    argnums_spec,
    describe,
    numbers_as_array,
    positions,
    require_callable,
)
from mcjax._core._errors import DtypeError, ShapeError
from mcjax._core._pytrees import floats_as_arrays, is_inexact_array, partition
from mcjax._curvature import (
    BlockDiagonal,
    Curvature,
    NoStructure,
    ThroughAffine,
    diagonal_grid,
    from_jacobian,
    hessian_vector_products,
)
from mcjax._curvature._operator import Layout, with_meta
from mcjax._curvature._structures import Dense, Sum
from mcjax._derive import _affine as affine
from mcjax._derive import _variables as V
from mcjax._derive._api import derive
from mcjax._derive._names import parameter_names
from mcjax._jacobian._algebra import Jacobian, Zero
from mcjax._program._compile import run_compiled
from mcjax._program._trace import function_key, has_tracers


def hessian(f: Callable[..., Any], argnums: int | Sequence[int] = 0
            ) -> Callable[..., Curvature]:
    r"""The Hessian of a scalar ``f`` as a structured symmetric operator, found by the rules.

    ``hessian(f)(*args)`` derives the Jacobian of $\nabla f$ with ``mcjax.derive`` (the
    paper's calculus applied twice) and reads its structure as a ``mcjax.Curvature``:

    - $cI$ and $\operatorname{diag}(d)$ (``mcjax.curvature.ScaledIdentity``, ``Diagonal``);
    - a Gram form $X^\top \operatorname{diag}(D) X + \operatorname{diag}(d)$ (``Gram``: an
      L2-regularised logistic regression, $X^\top \operatorname{diag}(s(1-s)) X / N +
      2\lambda I$; mean squared error, $\frac{2}{N} X^\top X$);
    - a diagonal plus low rank $\operatorname{diag}(d) + U C U^\top$ (``DiagonalPlusLowRank``:
      softmax cross-entropy, $\operatorname{diag}(p) - p p^\top$); per example of a batch,
      one such block per row (``BatchedLowRank``: the mean cross-entropy of a batch);
    - a Kronecker product $A \otimes B$ (``Kronecker``: $I \otimes c W^\top W$);
    - one block per leaf of a pytree argument whose leaves do not interact
      (``BlockDiagonal``); a grid of diagonal blocks where they interact element by element
      (``DiagonalGrid``: ``x * y``, a Gaussian's likelihood in its mean and log-variance);
      where they interact otherwise, the structure of the Hessian with respect to
      the flattened argument, derived afresh; a sum of these (``Sum``), a dense array
      (``Dense``: $x^\top A x$ gives $A + A^\top$, $O(n^2)$ where ``jax.hessian`` spends
      $O(n^3)$);
    - where the flattened Hessian has no such structure but ``f`` reads the variables first
      through an affine map $z$ (weights and bias in $z = XW + b$), $J^\top \nabla^2 g\, J$
      exactly, $J$ and the Hessian of the rest, $g$, each structured (``ThroughAffine``:
      $J = [X, 1]$ and a diagonal for a logistic regression in $(w, b)$);
    - where none is found (an opaque block, leaves of a pytree that interact with no
      structure beyond dense when flattened, a failure of ``mcjax.derive``), Hessian-vector
      products of ``f`` itself (``HessianVectorProducts``, forward over reverse; forward over
      forward where JAX's reverse mode fails on ``f``), its ``structure`` saying why: never a
      structure guessed.

    The operator acts on the *variables*, flattened (``jax.flatten_util.ravel_pytree``
    order): the floating array leaves of argument ``argnums``, or of the tuple of arguments
    where ``argnums`` is a tuple (in ``argnums``' order, as ``jax.hessian`` orders its
    blocks).  ``H.shape == (n, n)`` and ``H.dense()`` equals ``jax.hessian`` of ``f`` with
    respect to those variables, flattened; it is the symmetric part of the derived second
    derivative, which is the Hessian wherever ``f`` is twice continuously differentiable.
    ``H.hvp(v)``, ``H.solve(b, damping)`` (a Newton step, by Woodbury's identity where the
    structure is of low rank), ``H.diagonal()``, ``H.trace()``, ``H.slogdet()``/
    ``H.logdet()`` use the structure; ``H.formula()``/``H.latex()`` print the second
    derivative as ``mcjax.derive`` does; ``H.nbytes`` is what it holds.

    An argument may be a model (an Equinox module holding its activation function, an nnx
    Module, linen variables, a dict holding a string): its trained leaves are the variables
    (``partition(model)[0]``: the floating arrays of an Equinox module or a dict, a Python
    float in a dict or list among them, an nnx Module's ``nnx.Param``, linen's
    ``"params"``); its other arrays are data, traced but not differentiated (integer arrays,
    a model's state: ``nnx.BatchStat``, ``batch_stats``, PRNG keys); every leaf that is no
    array (a function, a string, a Python int or bool, a float field of an object) is
    static: closed over, so ``f`` sees it as it is, never a tracer.

    ``f`` is traced afresh on every call, and the whole derivation is one compiled program
    per program of ``f`` (its trace, the values it closes over, its argument names), shapes
    and static leaves, kept in mcjax's bounded cache of compiled programs: an edit of what
    ``f`` reads gives the new Hessian, never a stale one, and a sweep keeps memory flat;
    where the static leaves cannot be hashed it runs uncompiled.  The result's arrays that
    are the arguments themselves (a Gram form's $X$) are the caller's arrays, not copies.
    Wrapped in ``jax.jit`` (``jax.jit(mcjax.hessian(f))``) the derivation is traced into the
    caller's program, kept by JAX's cache as anything jitted is (keyed on the function: an
    edit of a global ``f`` reads is then not seen, JAX's rule for ``jax.jit``).

    Args:
      f: a function returning a scalar (shape ``()``), real floating.
      argnums: which positional argument (an int) or arguments (a non-empty tuple of
        distinct ints), as ``jax.hessian`` takes it; each an array or a pytree or model
        holding floating arrays.

    Returns:
      A function of ``f``'s arguments returning a ``mcjax.Curvature`` of shape ``(n, n)``,
      ``n`` the number of variables.  Its ``hvp`` and ``solve`` also take a vector shaped as
      the variables and give one back so shaped: a gradient as ``jax.grad(f, argnums)``
      returns it (a tuple for a tuple ``argnums``), or as ``eqx.filter_grad`` does (the
      model with ``None`` at its static leaves).

    Raises:
      TypeError: ``f`` is not callable or ``argnums`` not an int or a non-empty tuple of
        ints; (when called) a differentiated argument holds no array.
      ValueError: ``argnums`` names an argument twice; (when called) it is out of range.
      ShapeError: (when called) ``f`` returns an array that is not a scalar.
      DtypeError: (when called) a differentiated argument holds a complex array or only
        integer ones, or ``f``'s value is not real floating point.
      NotImplementedError: (when called) JAX itself has no second derivative of ``f``
        there (``lax.igamma`` with respect to ``a``: its derivative calls
        ``igamma_grad_a``, which JAX cannot differentiate); the message names the primitive.

    Example:

        >>> A = jnp.array([[1.0, 2.0], [0.0, 3.0]])
        >>> H = mcjax.hessian(lambda x: x @ A @ x)(jnp.ones(2))
        >>> H.structure
        'dense: H, n = 2'
        >>> H.dense()  # A + Aᵀ
        Array([[2., 2.],
               [2., 6.]], dtype=float32)
    """
    require_callable("hessian", "f", f, "a scalar function of arrays, f(*args)")
    spec = argnums_spec("hessian", argnums)

    @functools.wraps(f)
    def hessian_at(*args) -> Curvature:
        split, traced = split_arguments("hessian", f, spec, args)
        if hashable(split):
            H = _compiled(split, traced)  # once per program of f, shapes and static leaves
        else:
            H = _build(split, traced)
        return with_meta(H, layout=Layout.of(split.variables(traced)))

    return hessian_at


def split_arguments(function: str, f, spec, args: tuple) -> tuple[V.Split, tuple]:
    """Check the differentiated arguments and split ``args`` into the static and the traced
    half (``mcjax._derive._variables``)."""
    wrt = positions(function, spec, len(args))
    args = tuple(floats_as_arrays(numbers_as_array(a)) if i in wrt else a
                 for i, a in enumerate(args))
    for i in wrt:
        _require_floating(function, args[i], i)
    return V.split(f, args, wrt, isinstance(spec, int))


def hashable(value) -> bool:
    """Whether ``value`` can be a static argument of ``jax.jit``."""
    try:
        hash(value)
    except Exception:  # noqa: BLE001 - a TypeError, or whatever a leaf's __hash__ raises
        return False
    return True


def _build(split: V.Split, traced: tuple) -> Curvature:
    """The structured Hessian of ``f`` at the traced arguments (under jit: once per shape)."""
    x = split.variables(traced)
    _require_scalar(split, x, traced)  # at trace time: once per compiled shape
    sizes = [math.prod(jnp.shape(leaf)) for leaf in jax.tree_util.tree_leaves(x)]
    spec = split.wrt[0] if split.single else split.wrt
    try:
        H = derive(split.of_traced(gradient=True), spec)(*traced)
    except Exception as error:  # noqa: BLE001 - a gap of derive's is named, not raised:
        # the Hessian is still exact, as Hessian-vector products
        return _fallback(split, x, traced, _underived(split, x, traced, error))
    try:
        if isinstance(H, Jacobian):
            op = from_jacobian(H, sizes[0])
            if isinstance(op, (Dense, Sum)):
                through = _through_affine(*_of_flat(split, x, traced))
                if through is not None:
                    return through
            return _with_text(op, H)
        try:
            return _blocks(H, sizes, split.paths(traced))
        except NoStructure as why:
            return _flattened(split, x, traced, str(why))
    except NoStructure as why:
        return _fallback(split, x, traced, str(why))


def _underived(split: V.Split, x, traced: tuple, error: Exception) -> str:
    """Why ``mcjax.derive`` failed on the gradient: JAX's own reverse mode fails on ``f``
    (the gradient cannot be traced: a ``lax.while_loop``), or a gap of derive's."""
    try:
        jax.eval_shape(jax.grad(split.call), x, traced)
    except Exception as jax_error:  # noqa: BLE001 - JAX's own failure is the reason
        return f"JAX's reverse mode fails on f ({_first_line(jax_error)})"
    return f"mcjax.derive failed on the gradient ({_first_line(error)})"


def _first_line(error: Exception) -> str:
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first[:200]}"


def _fallback(split: V.Split, x, traced: tuple, why: str) -> Curvature:
    """Hessian-vector products of ``f`` itself, as a function of the variables ``x`` (the
    traced arguments are its data: arrays, so the operator passes out of ``jax.jit``)."""
    try:
        return hessian_vector_products(split.call, (x, traced), 0, why)
    except Exception as error:  # noqa: BLE001 - neither mode traces: JAX has no second derivative
        raise NotImplementedError(_no_second_derivative(error)) from None


def _no_second_derivative(error: Exception) -> str:
    """One sentence: JAX's own second derivative of ``f`` fails, and where."""
    rule = re.search(r"Differentiation rule for '([^']+)' not implemented", str(error))
    if rule:
        return (f"mcjax.hessian: JAX defines no second derivative of f here: its derivative "
                f"calls {rule.group(1)!r}, which has no differentiation rule in JAX "
                "(jax.hessian raises too)")
    return (f"mcjax.hessian: JAX cannot differentiate f twice here, in forward or reverse "
            f"mode ({_first_line(error)})")


def _flattened(split: V.Split, x, traced: tuple, why: str) -> Curvature:
    """Variables that interact: the Hessian with respect to the flattened variables, derived
    afresh, where it has a structure beyond a dense matrix (else ``NoStructure``:
    Hessian-vector products hold O(n), a dense pytree Hessian O(n²))."""
    of_flat, flat = _of_flat(split, x, traced)
    try:
        H = derive(jax.grad(of_flat))(flat)
    except Exception as error:  # noqa: BLE001 - as in _build: named, not raised
        raise NoStructure(f"{why}; flattened, mcjax.derive failed ({type(error).__name__})"
                          ) from None
    op = from_jacobian(H, flat.shape[0])
    if isinstance(op, (Dense, Sum)):
        through = _through_affine(of_flat, flat)
        if through is None:
            raise NoStructure(f"{why}; flattened, it has no structure beyond a dense matrix")
        return through
    return _with_text(op, H)


def _of_flat(split: V.Split, x, traced: tuple):
    """``f`` as a function of the flattened variables, and their flat vector."""
    flat, unravel = ravel_pytree(x)

    def of_flat(v):
        return split.call(unravel(v), traced)

    return of_flat, flat


def _through_affine(fn, v) -> Curvature | None:
    r"""``fn(v) = g(z(v))`` with ``z`` affine (``_affine.split``): $J^\top \nabla^2 g J$,
    exact, with $J$ and $\nabla^2 g$ derived apart and each structured ($J = [X, 1]$, a
    diagonal); ``None`` where ``fn`` reads ``v`` non-linearly at once, or $\nabla^2 g$ has
    no structure beyond a dense matrix."""
    parts = affine.split(fn, v)
    if parts is None:
        return None
    try:
        J = derive(parts.z)(v)
        H = derive(jax.grad(parts.g))(parts.at)
        inner = from_jacobian(H, parts.size)
    except (NoStructure, NotImplementedError, ValueError, TypeError):
        return None
    if isinstance(inner, (Dense, Sum)):  # no structure in ∇²g to gain from
        return None
    inner = _with_text(inner, H)
    text = (f"Jᵀ H J, J = {J.formula()}, H = {H.formula()}",
            rf"J^\top H J,\ J = {J.latex()},\ H = {H.latex()}")
    return with_meta(ThroughAffine((J,), inner), text=text)


@dataclass(frozen=True, eq=False)
class ProgramOf:
    """The static half of a call (``split``, and ``loss`` for a Gauss-Newton matrix), known to
    the cache of compiled programs by ``key`` (what ``f`` and ``loss`` trace to, the values
    they close over and the names ``f`` gives its arguments), never by the functions'
    identity."""

    split: V.Split
    key: Hashable
    loss: Any = None

    def cache_key(self) -> Hashable:
        return (self.key, self.split.static, self.split.wrt, self.split.single)


def traced_program_key(split: V.Split, traced: tuple):
    """What ``f`` computes at ``traced`` (traced afresh), and the names it gives its
    arguments (the formula prints them): ``(key, f's trace)``."""
    trace = function_key(split.of_traced(gradient=False), *traced)
    return (trace.key, tuple(parameter_names(split.f, len(traced)))), trace


def _compiled(split: V.Split, traced: tuple) -> Curvature:
    """``_build`` as one compiled program per program of ``f``: ``f`` is traced on every call
    and the bounded cache of compiled programs (``run_compiled``) answers for the same
    program, so an edit of what ``f`` reads is a new Hessian, never a stale one, and memory
    stays flat over a sweep; arrays of the result that are ``f``'s own arguments (a Gram
    form's ``X``) come back as the caller's arrays, not copies.  Under the caller's
    ``jax.jit``, traced in place (JAX's cache then keeps it, as it keeps anything jitted)."""
    if has_tracers(traced):
        return _build(split, traced)
    key, _ = traced_program_key(split, traced)
    return run_compiled(_build_keyed, ProgramOf(split, ("hessian", key)), *traced,
                        forward_inputs=True)


def _build_keyed(static: ProgramOf, *traced) -> Curvature:
    return _build(static.split, traced)


def _blocks(H, sizes, paths) -> Curvature:
    """Several variable leaves: one block per run of leaves that interact only among
    themselves (consecutive in the flattened order): a leaf alone is its own structure,
    leaves of one size that meet element by element a grid of diagonals; any other
    interaction raises ``NoStructure`` (the caller derives the flattened whole)."""
    rows = jax.tree_util.tree_leaves(H, is_leaf=lambda j: isinstance(j, Jacobian))
    L = len(sizes)

    def meet(i, j):
        return i != j and not (isinstance(rows[i * L + j], Zero)
                               and isinstance(rows[j * L + i], Zero))

    blocks, start, reach = [], 0, 0
    for i in range(L):
        reach = max([reach, i] + [j for j in range(L) if meet(i, j)])
        if reach > i:
            continue
        run = list(range(start, i + 1))
        start = i + 1
        if len(run) == 1:
            blocks.append(_with_text(from_jacobian(rows[i * L + i], sizes[i]), rows[i * L + i]))
            continue
        within = [rows[a * L + b] for a in run for b in run]
        grid = diagonal_grid(within, [sizes[a] for a in run])  # element k meets element k
        if grid is None:
            a, b = next((a, b) for a in run for b in run if meet(a, b))
            whose = "the arguments'" if paths[a].startswith("args[") else "the argument's"
            raise NoStructure(f"{whose} leaves {paths[a]} and {paths[b]} interact (their "
                              "block of the Hessian is not zero)")
        blocks.append(with_meta(grid, text=_grid_text(within, len(run))))
    return blocks[0] if len(blocks) == 1 and L > 1 else BlockDiagonal(blocks)


def _grid_text(rows: list[Jacobian], L: int) -> tuple[str, str]:
    """The blocks' derived formulas, ``[0][0]: diag(...); [0][1]: ...`` (``jax.hessian``'s
    block layout), and as a LaTeX matrix."""
    grid = [rows[i * L:(i + 1) * L] for i in range(L)]
    text = "; ".join(f"[{i}][{j}]: {J.formula()}" for i, row in enumerate(grid)
                     for j, J in enumerate(row))
    latex = (r"\begin{bmatrix} " + r" \\ ".join(" & ".join(J.latex() for J in row)
                                                 for row in grid) + r" \end{bmatrix}")
    return text, latex


def _with_text(op: Curvature, H: Jacobian) -> Curvature:
    """``op`` printing as the derived second derivative ``H``."""
    return with_meta(op, text=(H.formula(), H.latex()))


def _require_floating(function: str, x, position: int) -> None:
    """A differentiated argument holds a real floating array (its other leaves are static or
    data)."""
    leaves = jax.tree_util.tree_leaves_with_path(x)
    for path, leaf in jax.tree_util.tree_leaves_with_path(partition(x)[0]):
        where = f"args[{position}]{jax.tree_util.keystr(path)}"
        if is_inexact_array(leaf) and not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise DtypeError(f"mcjax.{function}: {where} has dtype {leaf.dtype.name}; expected "
                             "a real floating dtype")
    if jax.tree_util.tree_leaves(partition(x)[0]):
        return
    arrays = [(p, a) for p, a in leaves if isinstance(a, (jax.Array, np.ndarray, np.generic))]
    if arrays:
        path, leaf = arrays[0]
        raise DtypeError(f"mcjax.{function}: args[{position}]{jax.tree_util.keystr(path)} has "
                         f"dtype {leaf.dtype.name}; expected a real floating dtype")
    raise TypeError(f"mcjax.{function}: args[{position}] is {describe(x)}; expected a floating "
                    "array (or a pytree or model holding some) to differentiate with respect to")


def _require_scalar(split: V.Split, x, traced: tuple) -> None:
    out = jax.eval_shape(split.call, x, traced)
    if not hasattr(out, "shape") or out.shape != ():
        got = (f"an array of shape {out.shape}" if hasattr(out, "shape")
               else describe(out))
        raise ShapeError(f"mcjax.hessian: f returned {got}; expected a scalar (shape ()): "
                         "the Hessian is of a scalar function")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise DtypeError(f"mcjax.hessian: f returned dtype {jnp.dtype(out.dtype).name}; "
                         "expected a real floating scalar")
