"""``mcjax.derive``: the paper's calculus, done by the machine."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from mcjax._core._errors import DtypeError
from mcjax._derive._interpret import interpret
from mcjax._derive._names import argument_exprs, constant_exprs
from mcjax._jacobian import _build as B
from mcjax._jacobian._verify import PROBES, Verification
from mcjax._jacobian._verify import verify as verify_probes
from mcjax._program.primitives import Operand


def derive(f: Callable, argnums: int | Sequence[int] = 0, *, strict: bool = False) -> Callable:
    r"""The derivative of ``f`` as a structured :class:`~mcjax.Jacobian`, derived by the rules.

    ``derive(f)(*args)`` traces ``f`` to a jaxpr and interprets it equation by equation: each
    primitive contributes its structured Jacobian (a diagonal for an element-wise operation
    (§4.2), a column or row of ones for scalar expansion and sums (§4.3, §4.4),
    $I_m \otimes \mathbf{x}^\top$ for $W\mathbf{x}$ with respect to $W$ (§5), a permutation
    for a transpose, ...), and they are composed by the vector chain rule and added by the
    total-derivative rule (§4.5), simplifying as they go: a diagonal times a diagonal is a
    diagonal, identities and zeros vanish, a Kronecker block times a diagonal stays factored,
    and the derivative of a scalar ends as its gradient.  ``J.formula()`` prints the result
    in the paper's notation (``diag(1[z > 0]) (I_8 ⊗ xᵀ), z = W x + b``), ``J.latex()`` in
    LaTeX.

    The value equals ``jax.jacfwd(f, argnums)(*args)`` (``J.dense()``), including JAX's own
    derivative at kinks (``jax.nn.relu'(0) = 0``, ``jnp.maximum(x, 0)`` gives 1/2 there).
    A primitive without a structured rule becomes an opaque block for that sub-expression,
    from ``jax.linearize``: correct, marked with the primitive's name.

    ``f`` is traced afresh on every call (never a stale trace of an edited function); wrap the
    result in ``jax.jit`` to compile the whole derivation once per shape.

    Args:
      f: a function of arrays (or pytrees of arrays) returning an array or a pytree of them.
      argnums: which positional argument to differentiate with respect to (an int), or a
        tuple of them (the result then has a tuple where ``jax.jacfwd`` has one).
      strict: raise instead of making an opaque block.

    Returns:
      A function of ``f``'s arguments returning the Jacobian in numerator layout
      (``J.shape == out.shape + arg.shape``), in ``jax.jacfwd``'s structure: a
      :class:`~mcjax.Jacobian` for an array argument and output, else ``f``'s output tree
      with each leaf replaced by the argument's tree of Jacobians.  Its method
      ``.verify(*args, probes=4, seed=0)`` derives at ``args`` and checks the whole result
      against ``jax.jvp``/``jax.vjp`` by random probes (:meth:`mcjax.Jacobian.verify`),
      returning the verdict, whose ``.derivative`` is the result.

    Raises:
      DtypeError: (when called) the argument or the output is not floating point.
      NotImplementedError: (when called, ``strict=True``) a primitive has no structured
        rule; the message names it and the line of ``f`` it comes from.

    Example:

        >>> def layer(W, x, b):
        ...     return jax.nn.relu(W @ x + b)
        >>> W, x, b = jnp.ones((8, 4)), jnp.arange(4.0), jnp.zeros(8)
        >>> J = mcjax.derive(layer)(W, x, b)  # with respect to W
        >>> J.formula()
        'diag(1[z > 0]) (I_8 ⊗ xᵀ), z = W x + b'
        >>> J.shape  # numerator layout: the output's shape, then W's
        (8, 8, 4)
    """
    many = not isinstance(argnums, int)
    wrt = tuple(argnums) if many else (argnums,)

    @functools.wraps(f)
    def derivative(*args):
        count = len(args)
        for i in wrt:
            if not isinstance(i, int) or not -count <= i < count:
                raise ValueError(f"mcjax.derive: argnums={argnums!r} but f gets {count} "
                                 f"argument(s); expected ints in [0, {count})")
        positions = tuple(i % count for i in wrt)
        x_tree = tuple(args[i] for i in positions) if many else args[positions[0]]
        return _derive(f, args, positions, x_tree, strict)

    def verify(*args, probes: int = PROBES, seed: int = 0) -> Verification:
        """Derive at ``args`` and check the result against ``jax.jvp``/``jax.vjp`` by
        ``probes`` random tangents and cotangents (see :meth:`mcjax.Jacobian.verify`); the
        verdict's ``.derivative`` is the result."""
        return verify_probes(f, derivative(*args), args, argnums, probes=probes, seed=seed,
                             caller="mcjax.derive(f).verify")

    setattr(derivative, "verify", verify)
    return derivative


def _derive(f, args, positions, x_tree, strict):
    args = jax.tree_util.tree_map(jnp.asarray, args)
    closed, out_shape = jax.make_jaxpr(lambda *a: f(*a), return_shape=True)(*args)
    names = argument_exprs(f, args)
    leaves = [jax.tree_util.tree_leaves(a) for a in args]
    operands, x_leaves = [], []
    for i, (arg_leaves, exprs) in enumerate(zip(leaves, names)):
        for leaf, expr in zip(arg_leaves, exprs):
            tangents = {}
            if i in positions:
                _require_float(leaf, f"args[{i}]")
                tangents = {len(x_leaves): B.identity(jnp.shape(leaf), leaf.dtype)}
                x_leaves.append(leaf)
            operands.append(Operand(leaf, expr, tangents))
    consts = [Operand(c, e) for c, e in zip(closed.consts, constant_exprs(f, closed.consts))]
    outs = interpret(closed.jaxpr, consts, operands, strict)
    out_leaves, out_def = jax.tree_util.tree_flatten(out_shape)
    x_def = jax.tree_util.tree_structure(x_tree)
    blocks = []
    for out, t in zip(out_leaves, (op.tangents for op in outs)):
        _require_float(out, "its output")
        row = [B.as_dtype(t[j], out.dtype) if j in t else B.zero(out.shape, jnp.shape(x), out.dtype)
               for j, x in enumerate(x_leaves)]
        blocks.append(jax.tree_util.tree_unflatten(x_def, row))
    return jax.tree_util.tree_unflatten(out_def, blocks)


def _require_float(x, where: str) -> None:
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise DtypeError(f"mcjax.derive: {where} has dtype {dtype.name}; expected a floating "
                         "dtype (an integer has no derivative)")
