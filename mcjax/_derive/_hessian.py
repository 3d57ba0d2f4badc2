"""``mcjax.hessian`` and ``mcjax.gauss_newton``: second derivatives as structured operators."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from mcjax._core._arguments import describe, require_callable
from mcjax._core._errors import DtypeError, ShapeError
from mcjax._core._pytrees import on_trained, partition
from mcjax._curvature import (
    BlockDiagonal,
    Curvature,
    HessianVectorProducts,
    NoStructure,
    from_jacobian,
)
from mcjax._curvature import _gauss_newton as CS
from mcjax._curvature._operator import with_meta
from mcjax._curvature._structures import Dense, Sum
from mcjax._derive._api import derive
from mcjax._jacobian._algebra import Jacobian, Zero


def hessian(f: Callable[..., Any], argnums: int = 0) -> Callable[..., Curvature]:
    r"""The Hessian of a scalar ``f`` as a structured symmetric operator, found by the rules.

    ``hessian(f)(*args)`` derives the Jacobian of $\nabla f$ with ``mcjax.derive`` (the
    paper's calculus applied twice) and reads its structure as a ``mcjax.Curvature``:

    - $cI$ and $\operatorname{diag}(d)$ (``mcjax.curvature.ScaledIdentity``, ``Diagonal``);
    - a Gram form $X^\top \operatorname{diag}(D) X + \operatorname{diag}(d)$ (``Gram``: an
      L2-regularised logistic regression, $X^\top \operatorname{diag}(s(1-s)) X / N +
      2\lambda I$; mean squared error, $\frac{2}{N} X^\top X$);
    - a diagonal plus low rank $\operatorname{diag}(d) + U C U^\top$ (``DiagonalPlusLowRank``:
      softmax cross-entropy, $\operatorname{diag}(p) - p p^\top$);
    - a Kronecker product $A \otimes B$ (``Kronecker``: $I \otimes c W^\top W$);
    - one block per leaf of a pytree argument whose leaves do not interact
      (``BlockDiagonal``); where they interact, the structure of the Hessian with respect to
      the flattened argument, derived afresh; a sum of these (``Sum``), a dense array
      (``Dense``: $x^\top A x$ gives $A + A^\top$, $O(n^2)$ where ``jax.hessian`` spends
      $O(n^3)$);
    - where none is found (an opaque block, leaves of a pytree that interact with no
      structure beyond dense when flattened, a failure of ``mcjax.derive``), Hessian-vector
      products of ``f`` itself (``HessianVectorProducts``), its ``structure`` saying why:
      never a structure guessed.

    The operator acts on the flattened argument (``jax.flatten_util.ravel_pytree`` order):
    ``H.shape == (n, n)`` and ``H.dense()`` equals ``jax.hessian`` of ``f`` with respect to
    that flattened argument.  For a model (an nnx Module, linen variables, an Equinox module)
    that argument is its trained part (``partition(model)[0]``: an nnx Module's
    ``nnx.Param``, linen's ``"params"``, the floating arrays of an Equinox module): its state
    (``nnx.BatchStat``, ``batch_stats``, an ``nnx.Rngs``) and its untouched leaves
    (functions, integer arrays) are passed to ``f`` as they are, never differentiated.  The
    Hessian is it is the symmetric part of the derived second derivative, which
    is the Hessian wherever ``f`` is twice continuously differentiable.  ``H.hvp(v)``,
    ``H.solve(b, damping)`` (a Newton step, by Woodbury's identity where the structure is of
    low rank), ``H.diagonal()``, ``H.trace()``, ``H.slogdet()``/``H.logdet()`` use the
    structure; ``H.formula()``/``H.latex()`` print the second derivative as ``mcjax.derive``
    does; ``H.nbytes`` is what it holds.

    The whole derivation is compiled with ``jax.jit`` once per shape (the structure is static,
    the arrays are the result's leaves) when every argument is an array or a number.

    Args:
      f: a function of arrays returning a scalar (shape ``()``), real floating.
      argnums: which positional argument (an int); the argument may be an array, a pytree
        of floating arrays or a model (its trained leaves are differentiated).

    Returns:
      A function of ``f``'s arguments returning a ``mcjax.Curvature`` of shape ``(n, n)``,
      ``n`` the size of the argument (of its trained leaves).

    Raises:
      TypeError: ``f`` is not callable or ``argnums`` not an int; (when called) the argument
        holds something other than floating arrays.
      ShapeError: (when called) ``f`` returns an array that is not a scalar.
      DtypeError: (when called) the argument or ``f``'s value is not real floating point.

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
    if isinstance(argnums, bool) or not isinstance(argnums, int):
        raise TypeError(f"mcjax.hessian: argnums is {describe(argnums)}; expected an int "
                        "(pass several arguments as one pytree)")
    @functools.wraps(f)
    def hessian_at(*args) -> Curvature:
        if not -len(args) <= argnums < len(args):
            raise ValueError(f"mcjax.hessian: argnums={argnums} but f was called with "
                             f"{len(args)} positional argument(s)")
        position = argnums % len(args)
        _require_floating(args[position], position, "hessian")
        traceable = all(isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float))
                        for leaf in jax.tree_util.tree_leaves(args))
        if traceable:
            return _compiled(f, argnums, *args)  # JAX's cache: once per f and shapes
        return _build(f, argnums, *args)

    return hessian_at


def _build(f, argnums: int, *args) -> Curvature:
    """The structured Hessian of ``f`` at ``args`` (traced: once per shape under jit)."""
    position = argnums % len(args)
    _require_scalar(f, args)  # at trace time: once per compiled shape
    f, args = on_trained(f, position, args)  # a model's state: passed, not differentiated
    leaves = jax.tree_util.tree_leaves_with_path(args[position])
    sizes = [math.prod(jnp.shape(leaf)) for _, leaf in leaves]
    paths = [jax.tree_util.keystr(path) for path, _ in leaves]
    try:
        H = derive(jax.grad(f, argnums=position), position)(*args)
    except Exception as error:  # noqa: BLE001 - a gap of derive's is named, not raised:
        # the Hessian is still exact, as Hessian-vector products
        first = str(error).splitlines()[0] if str(error) else ""
        return HessianVectorProducts(f, args, position, "mcjax.derive failed on the "
                                     f"gradient ({type(error).__name__}: {first})")
    try:
        if isinstance(H, Jacobian):
            return _with_text(from_jacobian(H, sizes[0]), H)
        try:
            return _blocks(H, sizes, paths)
        except NoStructure as why:
            return _flattened(f, position, args, str(why))
    except NoStructure as why:
        return HessianVectorProducts(f, args, position, str(why))


def _flattened(f, position: int, args: tuple, why: str) -> Curvature:
    """A pytree whose leaves interact: the Hessian with respect to the flattened argument,
    derived afresh, where it has a structure beyond a dense matrix (else ``NoStructure``:
    Hessian-vector products hold O(n), a dense pytree Hessian O(n²))."""
    flat, unravel = ravel_pytree(args[position])

    def of_flat(v):
        return f(*args[:position], unravel(v), *args[position + 1:])

    try:
        H = derive(jax.grad(of_flat))(flat)
    except Exception as error:  # noqa: BLE001 - as in _build: named, not raised
        raise NoStructure(f"{why}; flattened, mcjax.derive failed ({type(error).__name__})"
                          ) from None
    op = from_jacobian(H, flat.shape[0])
    if isinstance(op, (Dense, Sum)):
        raise NoStructure(f"{why}; flattened, it has no structure beyond a dense matrix")
    return _with_text(op, H)


_compiled = jax.jit(_build, static_argnums=(0, 1))


def _blocks(H, sizes, paths) -> Curvature:
    """A pytree argument: one block per leaf where the leaves do not interact."""
    rows = jax.tree_util.tree_leaves(H, is_leaf=lambda j: isinstance(j, Jacobian))
    L = len(sizes)
    for i in range(L):
        for j in range(L):
            if i != j and not isinstance(rows[i * L + j], Zero):
                raise NoStructure(f"the argument's leaves {paths[i]} and {paths[j]} "
                                  "interact (their block of the Hessian is not zero)")
    return BlockDiagonal([_with_text(from_jacobian(rows[i * L + i], sizes[i]),
                                     rows[i * L + i]) for i in range(L)])


def _with_text(op: Curvature, H: Jacobian) -> Curvature:
    """``op`` printing as the derived second derivative ``H``."""
    return with_meta(op, text=(H.formula(), H.latex()))


def _require_floating(x, position: int, function: str) -> None:
    """The argument holds real floating leaves to differentiate: an array, a pytree of them,
    or a model, whose trained leaves are differentiated (its state and untouched leaves are
    not looked at: they are passed to ``f`` as they are)."""
    leaves = jax.tree_util.tree_leaves_with_path(x)
    if not leaves:
        raise TypeError(f"mcjax.{function}: args[{position}] is {describe(x)}; expected a "
                        "floating array (or a pytree or model holding some)")
    trained = jax.tree_util.tree_leaves_with_path(partition(x)[0])
    plain = [(p, a) for p, a in leaves if isinstance(a, (int, float))]  # Python numbers
    for path, leaf in trained or plain or leaves:
        where = f"args[{position}]{jax.tree_util.keystr(path)}"
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float)):
            raise TypeError(f"mcjax.{function}: {where} is {describe(leaf)}; expected a "
                            "floating array")
        dtype = jnp.result_type(leaf)
        if isinstance(leaf, (int, float)):
            continue
        if not jnp.issubdtype(dtype, jnp.floating):
            raise DtypeError(f"mcjax.{function}: {where} has dtype {dtype.name}; expected a "
                             "real floating dtype")


def _require_scalar(f, args) -> None:
    out = jax.eval_shape(f, *args)
    if not hasattr(out, "shape") or out.shape != ():
        got = (f"an array of shape {out.shape}" if hasattr(out, "shape")
               else describe(out))
        raise ShapeError(f"mcjax.hessian: f returned {got}; expected a scalar (shape ()): "
                         "the Hessian is of a scalar function")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise DtypeError(f"mcjax.hessian: f returned dtype {jnp.dtype(out.dtype).name}; "
                         "expected a real floating scalar")


def gauss_newton(f: Callable[..., Any], loss: Callable[..., Any],
                 argnums: int = 0) -> Callable[..., Curvature]:
    r"""The Gauss-Newton matrix $J^\top H_L J$ of ``loss(f(*args))`` as a structured operator.

    $J$ is the Jacobian of the model's output $z = f(\ldots)$ (size $m$) with respect to
    argument ``argnums`` (size $n$), derived by ``mcjax.derive`` and held structured (a dense
    layer's is $I \otimes h^\top$: its activations only), $H_L$ the Hessian of ``loss`` with
    respect to $z$ (``mcjax.hessian``: a diagonal for the squared error, diagonal plus low rank
    for softmax cross-entropy).  The result, a ``mcjax.curvature.GaussNewton``, applies
    $J^\top (H_L (J v))$ through the structures; ``solve``, ``dense``, ``diagonal`` and
    ``slogdet`` use its matrix form (``as_matrix_form()``, $J$ made dense): a ``Gram`` form
    $J^\top \operatorname{diag}(h) J$ where $H_L$ is diagonal, else ``DiagonalPlusLowRank``
    with $U = J^\top$, $C = H_L$ where $m < n$ — a damped Newton step then solves an
    $m \times m$ system by Woodbury's identity — else ``Dense``.

    Args:
      f: the model, a function of arrays returning the output $z$ (any shape).
      loss: ``loss(z, *loss_args)``, a scalar.
      argnums: which positional argument of ``f`` (an array, a pytree of floating arrays,
        or a model: its trained leaves, as ``mcjax.hessian``).

    Returns:
      A function ``gn(*args, loss_args=())`` returning a ``mcjax.Curvature`` of shape
      ``(n, n)`` on the flattened argument (its trained leaves).

    Raises:
      TypeError, ShapeError, DtypeError: as ``mcjax.hessian`` (``loss`` must return a scalar).
    """
    require_callable("gauss_newton", "f", f, "a model, a function of arrays")
    require_callable("gauss_newton", "loss", loss, "a scalar loss of the model's output")
    if isinstance(argnums, bool) or not isinstance(argnums, int):
        raise TypeError(f"mcjax.gauss_newton: argnums is {describe(argnums)}; expected an int")

    def gn(*args, loss_args: tuple = ()) -> Curvature:
        if not -len(args) <= argnums < len(args):
            raise ValueError(f"mcjax.gauss_newton: argnums={argnums} but f was called with "
                             f"{len(args)} positional argument(s)")
        position = argnums % len(args)
        _require_floating(args[position], position, "gauss_newton")
        return _gauss_newton(f, loss, position, args, tuple(loss_args))

    return gn


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _gauss_newton(f, loss, position: int, args: tuple, loss_args: tuple) -> Curvature:
    z = f(*args)
    if not isinstance(z, jax.Array) or not jnp.issubdtype(z.dtype, jnp.floating):
        raise TypeError(f"mcjax.gauss_newton: f returned {describe(z)}; expected a floating "
                        "array, the model's output")
    value = jax.eval_shape(lambda z: loss(z, *loss_args), z)
    if getattr(value, "shape", None) != ():
        got = (f"an array of shape {value.shape}" if hasattr(value, "shape")
               else describe(value))
        raise ShapeError(f"mcjax.gauss_newton: loss returned {got}; expected a scalar "
                         "(shape ()) of the model's output")
    J = derive(f, position)(*args)
    blocks = jax.tree_util.tree_leaves(J, is_leaf=lambda j: isinstance(j, Jacobian))
    return CS.GaussNewton(blocks, hessian(lambda z: loss(z, *loss_args))(z))
