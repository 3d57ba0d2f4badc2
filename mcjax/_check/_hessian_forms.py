"""What a user gives ``mcjax.check_hessian``, seen as what ``mcjax.check`` takes.

``f`` (a scalar function, or a pair ``(model, loss)``) becomes the function whose Jacobian is
the matrix asked for (``jax.grad(f)``, or the gradient of the loss of the model linearised at
a point); ``H`` (an array in numerator layout or flat, ``jax.hessian``'s nested structure, a
structured ``mcjax.Jacobian``, an operator with ``.hvp``/``.dense()``, a function of the
arguments returning one of those, an HVP function) becomes the derivative under test.
Shapes are checked here, with one sentence naming what arrived and what was expected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from mcjax._check._problem import name_of, named_like
from mcjax._check._returned import vjp
from mcjax._core._arguments import describe, require_callable
from mcjax._core._errors import DerivativeShapeError, DtypeError, shape_str
from mcjax._jacobian import Jacobian

KINDS = ("hessian", "hvp", "gauss_newton", "kfac")


# -- what the user gave ---------------------------------------------------------------------
def is_operator(value) -> bool:
    """A structured operator by duck typing: ``.hvp(v)`` or ``.dense()`` (a ``mcjax.Jacobian``
    is checked as the Jacobian it is)."""
    return not isinstance(value, Jacobian) and (
        callable(getattr(value, "hvp", None)) or callable(getattr(value, "dense", None)))


def split(f, kind: str) -> tuple[Callable[..., Any], tuple | None, str]:
    """``(scalar f, (model, loss) or None, name)``."""
    if isinstance(f, tuple) and len(f) == 2:
        model, loss = f
        require_callable("check_hessian", "the model of f = (model, loss)", model,
                         "a function of the arguments")
        require_callable("check_hessian", "the loss of f = (model, loss)", loss,
                         "a function of the model's output returning a scalar")

        def composed(*args):
            return loss(model(*args))

        composed.name = f"{name_of(loss)}({name_of(model)})"
        return named_like(composed, model), (model, loss), composed.name
    if kind == "gauss_newton":
        raise TypeError(f"mcjax.check_hessian: kind='gauss_newton' needs f as a pair (model, "
                        f"loss), f(args) = loss(model(*args)); got {describe(f)}")
    require_callable("check_hessian", "f", f, "a scalar function of the arguments, or a pair "
                     "(model, loss)")
    assert callable(f)  # for the type checker: require_callable raised otherwise
    return f, None, name_of(f)


def _leaf_shapes(x) -> list[tuple[int, ...]]:
    return [tuple(np.shape(leaf)) for leaf in jax.tree_util.tree_leaves(x)]


def _expected(x) -> str:
    leaves = jax.tree_util.tree_leaves(x)
    n = sum(int(np.size(leaf)) for leaf in leaves)
    if jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(x)):
        both = shape_str(np.shape(x) + np.shape(x))
        flat = f", or a flat (n, n) = ({n}, {n}) matrix" if np.ndim(x) != 1 else ""
        return f"x.shape + x.shape = {both} (numerator layout, as jax.hessian){flat}"
    return (f"jax.hessian's structure (a tree of x's structure whose leaves are trees of x's "
            f"structure, block [a][b] of shape a.shape + b.shape), or a flat (n, n) = ({n}, {n}) "
            "matrix, leaves in jax.tree_util order, each row-major")


def as_hessian_tree(value, x, what: str = "H"):
    """``value`` (an array ``x.shape + x.shape``, a flat ``(n, n)`` matrix, or
    ``jax.hessian``'s nested structure) as ``jax.hessian``'s structure for ``x``.

    Raises:
      DerivativeShapeError: none of these (a ``ShapeError``: a wrong ``H``, exit status 1 of
        ``mcjax check``), naming what arrived and what was expected.
      DtypeError: an entry is not floating point.
    """
    leaves, treedef = jax.tree_util.tree_flatten(x)
    shapes = _leaf_shapes(x)
    sizes = [int(np.prod(s)) for s in shapes]
    n = sum(sizes)
    if isinstance(value, Jacobian):  # a structured one (a registry rule's), abstract or not
        abstract = any(isinstance(leaf, jax.ShapeDtypeStruct)
                       for leaf in jax.tree_util.tree_leaves(value))
        value = jax.ShapeDtypeStruct(tuple(value.shape), value.dtype) if abstract else value.dense()
    for leaf in jax.tree_util.tree_leaves(value):
        if not hasattr(leaf, "shape") and not isinstance(leaf, float):
            raise DerivativeShapeError(f"mcjax.check_hessian: {what} is {describe(value)}; expected "
                             f"{_expected(x)}")
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise DtypeError(f"mcjax.check_hessian: {what} has dtype {jnp.result_type(leaf)}; "
                             "expected a floating dtype (as the argument's)")
    if hasattr(value, "shape") and not isinstance(value, (dict, list, tuple)):
        shape = tuple(np.shape(value))
        if treedef.num_leaves == 1 and jax.tree_util.treedef_is_leaf(treedef) \
                and shape == shapes[0] + shapes[0]:
            return value
        if shape == (n, n) and isinstance(value, jax.ShapeDtypeStruct):
            return value  # an abstract value: its shape is all there is to check
        if shape == (n, n):
            offsets = np.cumsum([0] + sizes)
            # a concrete matrix is cut in NumPy: an eager slice compiles a program per block
            cut = jnp if isinstance(value, jax.core.Tracer) else np  # pyright: ignore[reportAttributeAccessIssue]
            M: Any = value if cut is jnp else np.asarray(value)

            def cut_block(a, b):
                piece = cut.reshape(M[offsets[a]:offsets[a + 1], offsets[b]:offsets[b + 1]],
                                    shapes[a] + shapes[b])
                return piece if cut is jnp else jax.device_put(piece)

            return treedef.unflatten([treedef.unflatten([cut_block(a, b)
                                                         for b in range(len(sizes))])
                                      for a in range(len(sizes))])
        raise DerivativeShapeError(f"mcjax.check_hessian: {what} has shape {shape_str(shape)}; expected "
                         f"{_expected(x)}")
    try:
        rows = treedef.flatten_up_to(value)
        blocks = [treedef.flatten_up_to(row) for row in rows]
    except (ValueError, TypeError):
        raise DerivativeShapeError(f"mcjax.check_hessian: {what} is {describe(value)}; expected "
                         f"{_expected(x)}") from None
    for a, row in enumerate(blocks):
        for b, block in enumerate(row):
            if tuple(np.shape(block)) != shapes[a] + shapes[b]:
                raise DerivativeShapeError(
                    f"mcjax.check_hessian: {what}'s block [{a}][{b}] (leaves in jax.tree_util "
                    f"order) has shape {shape_str(np.shape(block))}; expected "
                    f"{shape_str(shapes[a] + shapes[b])} (leaf {a}'s shape + leaf {b}'s)")
    return value


def _operator_derivative(op, x):
    """An operator as what ``mcjax.check`` takes: its products as a VJP function (the Hessian
    is symmetric, so ``u -> H u`` is ``u -> u^T H`` exactly when ``H`` is right), else its
    dense form.  An operator whose ``shape`` is ``(n, n)`` acts on the flattened argument
    (``ravel_pytree`` order, as ``mcjax.hessian``'s): its products are taken flat."""
    if callable(getattr(op, "hvp", None)):
        n = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(x))
        flat = tuple(getattr(op, "shape", ())) == (n, n) and not (
            hasattr(x, "shape") and np.ndim(x) == 1)
        if not flat:
            return vjp(op.hvp)
        unravel = ravel_pytree(x)[1]
        return vjp(lambda u: unravel(op.hvp(ravel_pytree(u)[0])))
    return as_hessian_tree(op.dense(), x, "H.dense()")


def derivative_of(H, kind: str, args: tuple, argnums: int):
    """``(derivative of args, depends on the point, name)`` for ``mcjax.check``."""
    x = args[argnums]
    if kind == "hvp":
        require_callable("check_hessian", "H", H, "an HVP function hvp(v, *args) -> H v, v "
                         "shaped like args[argnums], for kind='hvp'")

        def products(*a):
            return vjp(lambda u: H(u, *a))

        return products, True, name_of(H)
    if is_operator(H):
        value = _operator_derivative(H, x)
        return (lambda *a: value), False, f"{type(H).__name__} operator"
    if callable(H) and not hasattr(H, "shape"):
        try:  # once, abstractly when it can be, to learn the form it returns
            try:
                probe = jax.eval_shape(H, *args)
            except TypeError as e:
                if "not a valid JAX type" not in str(e):
                    raise
                probe = H(*args)  # an operator that is no pytree: only a call shows it
        except TypeError as e:
            raise TypeError(f"mcjax.check_hessian: H(*args) raised TypeError: {e}; expected H "
                            "a function of f's arguments (for an HVP function hvp(v, *args), "
                            "pass kind='hvp')") from None
        if is_operator(probe):
            def of_operator(*a):
                return _operator_derivative(H(*a), a[argnums])

            return of_operator, True, name_of(H)
        as_hessian_tree(probe, x, f"{name_of(H)}(*args)")

        def dense(*a):
            return as_hessian_tree(H(*a), a[argnums], f"{name_of(H)}(*args)")

        return dense, True, name_of(H)
    tree = as_hessian_tree(H, x)
    return (lambda *a: tree), False, "H (an array)"


def gradient_of(scalar_f, pair, kind: str, argnums: int, name: str):
    """The function whose Jacobian is the matrix asked for: ``jax.grad(f)``, or for the
    Gauss-Newton matrix the gradient of the loss of the model linearised at a point given
    as one more argument, last."""
    if kind != "gauss_newton":
        def gradient(*a):
            return jax.grad(scalar_f, argnums=argnums)(*a)

        gradient.name = f"grad {name}"
        return named_like(gradient, scalar_f)
    model, loss = pair

    def model_at(theta, a):
        return model(*a[:argnums], theta, *a[argnums + 1:])

    def linearised(theta, theta0, *a):
        delta = jax.tree_util.tree_map(jnp.subtract, theta, theta0)
        y0, dy = jax.jvp(lambda t: model_at(t, a), (theta0,), (delta,))
        return loss(jax.tree_util.tree_map(jnp.add, y0, dy))

    def gauss_newton_gradient(*a):  # the linearisation point comes last, as an argument:
        # the checker casts arguments (not closed-over values) for its float64 references
        return jax.grad(linearised)(a[argnums], a[-1], *a[:-1])

    gauss_newton_gradient.name = f"grad {name} (model linearised at args: Gauss-Newton)"
    return named_like(gauss_newton_gradient, model)
