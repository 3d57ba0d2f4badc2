"""``mcjax.derive``: the paper's calculus, done by the machine."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._core._arguments import (
    argnums_spec,
    describe,
    flag,
    numbers_as_array,
    positions,
    require_callable,
)
from mcjax._core._errors import DtypeError
from mcjax._core._pytrees import TRAINED, floats_as_arrays, leaf_roles, partition
from mcjax._derive._interpret import interpret
from mcjax._derive._names import argument_exprs, constant_exprs
from mcjax._jacobian import _build as B
from mcjax._jacobian._verify import PROBES, Verification
from mcjax._jacobian._verify import verify as verify_probes
from mcjax._primitives import Operand


def derive(f: Callable[..., Any], argnums: int | Sequence[int] = 0, *,
           strict: bool = False) -> Callable[..., Any]:
    r"""The derivative of ``f`` as a structured ``mcjax.Jacobian``, derived by the rules.

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

    ``f`` is a real function: a complex argument or output is refused (a ``DtypeError``), as
    the structured rules are the real ones; for a holomorphic function use
    ``jax.jacfwd(f, holomorphic=True)``.

    Args:
      f: a function of arrays (or pytrees of arrays) returning an array or a pytree of them.
        A Python list of numbers passed as the differentiated argument is an array (as in
        ``mcjax.check``); leaves of the other arguments that are not numbers (strings,
        flags, functions) are passed to ``f`` as they are.  The differentiated argument may
        be a model (an Equinox module, an nnx Module or ``State``, linen variables): its
        trained leaves are differentiated (the floating arrays, except a model's state:
        an nnx Module's ``nnx.Param`` only, linen's ``"params"`` collection only, never an
        ``eqx.nn.State``) and the result has ``None`` at the rest (an ``eqx.nn.MLP``'s
        ``activation``, an ``nnx.BatchStat``'s running mean), as ``eqx.filter_grad`` and
        ``nnx.grad`` do; the state is passed to ``f`` as it is.
      argnums: which positional argument to differentiate with respect to (an int), or a
        non-empty tuple of distinct ints (the result then has a tuple where ``jax.jacfwd``
        has one), as ``jax.jacfwd`` takes it.
      strict: raise instead of making an opaque block.

    Returns:
      A function of ``f``'s arguments returning the Jacobian in numerator layout
      (``J.shape == out.shape + arg.shape``), in ``jax.jacfwd``'s structure: a
      ``mcjax.Jacobian`` for an array argument and output, else ``f``'s output tree
      with each leaf replaced by the argument's tree of Jacobians.  Its method
      ``.verify(*args, probes=4, seed=0)`` derives at ``args`` and checks the whole result
      against ``jax.jvp``/``jax.vjp`` by random probes (``mcjax.Jacobian.verify``),
      returning the verdict, whose ``.derivative`` is the result.

    Raises:
      TypeError: ``f`` is not callable, ``argnums`` is not an int or tuple of ints or
        ``strict`` not a bool; (when called) ``f`` returns something other than arrays
        (``None``, a string), or the differentiated argument is not an array.
      ValueError: ``argnums`` names an argument twice; (when called) it is out of range.
      DtypeError: (when called) the argument or the output is not real floating point
        (an integer, a complex number).
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
    require_callable("derive", "f", f, "a function of arrays, f(*args)")
    spec = argnums_spec("derive", argnums)
    strict = flag("derive", "strict", strict)

    @functools.wraps(f)
    def derivative(*args):
        wrt = positions("derive", spec, len(args))
        args = tuple(floats_as_arrays(numbers_as_array(a)) if i in wrt else a
                     for i, a in enumerate(args))
        for i in wrt:
            _require_real(args[i], f"args[{i}]")
        # a model's state and untouched part (functions, integer arrays, running statistics)
        # are not differentiated: None there
        x_tree = (partition(args[wrt[0]])[0] if isinstance(spec, int)
                  else tuple(partition(args[i])[0] for i in wrt))
        return _derive(f, args, wrt, x_tree, strict)

    def verify(*args, probes: int = PROBES, seed: int = 0) -> Verification:
        """Derive at ``args`` and check the result against ``jax.jvp``/``jax.vjp`` by
        ``probes`` random tangents and cotangents (see ``mcjax.Jacobian.verify``); the
        verdict's ``.derivative`` is the result."""
        return verify_probes(f, derivative(*args), args, spec, probes=probes, seed=seed,
                             caller="mcjax.derive(f).verify")

    setattr(derivative, "verify", verify)
    return derivative


def _is_value(leaf) -> bool:
    """A leaf JAX traces: an array or a Python number (anything else is passed as it is)."""
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic, bool, int, float, complex))


def _derive(f, args, positions, x_tree, strict):
    leaves, treedef = jax.tree_util.tree_flatten(args)
    traced_at = [k for k, leaf in enumerate(leaves) if _is_value(leaf)]
    found: list = []  # f's output tree, and the leaves that are no arrays

    def traced(*values):
        full = list(leaves)
        for k, v in zip(traced_at, values):
            full[k] = v
        out = f(*treedef.unflatten(full))
        with_paths, out_def = jax.tree_util.tree_flatten_with_path(out)
        found.extend([out, out_def, [(p, v) for p, v in with_paths if not _is_value(v)]])
        return [v for _, v in with_paths if _is_value(v)]

    closed, out_leaves = jax.make_jaxpr(traced, return_shape=True)(
        *(jnp.asarray(leaves[k]) for k in traced_at))
    out, out_def, strays = found
    if not out_leaves:
        raise TypeError(f"mcjax.derive: f returned {describe(out)}; expected an array or a "
                        "pytree of arrays")
    if strays:
        path, value = strays[0]
        where = f" at {jax.tree_util.keystr(path)}" if path else ""
        raise TypeError(f"mcjax.derive: f returned {describe(value)}{where}; expected an "
                        "array or a pytree of arrays")
    names = [iter(exprs) for exprs in argument_exprs(f, args)]
    # the variables are numbered in argnums' order (argnums=(1, 0): args[1]'s leaves first),
    # the order of x_tree, while the operands follow f's positional order
    roles = {i: [role for role, _ in leaf_roles(args[i])] for i in positions}
    variables = {i: [leaf for leaf, role in zip(jax.tree_util.tree_leaves(args[i]), roles[i])
                     if role == TRAINED] for i in positions}
    first, at = {}, 0
    for i in positions:
        first[i], at = at, at + len(variables[i])
    x_leaves = [leaf for i in positions for leaf in variables[i]]
    operands = []
    for i, arg in enumerate(args):
        arg_roles = roles[i] if i in positions else [None] * len(jax.tree_util.tree_leaves(arg))
        for leaf, role in zip(jax.tree_util.tree_leaves(arg), arg_roles):
            expr = next(names[i])
            if not _is_value(leaf):  # a string, a flag: passed to f as it is
                continue
            tangents = {}
            if role == TRAINED:
                tangents = {first[i]: B.identity(jnp.shape(leaf), jnp.result_type(leaf))}
                first[i] += 1
            operands.append(Operand(jnp.asarray(leaf), expr, tangents))
    consts = [Operand(c, e) for c, e in zip(closed.consts, constant_exprs(f, closed.consts))]
    outs = interpret(closed.jaxpr, consts, operands, strict)
    x_def = jax.tree_util.tree_structure(x_tree)
    blocks = []
    for o, t in zip(out_leaves, (op.tangents for op in outs)):
        _require_real_dtype(o.dtype, "its output")
        row = [B.as_dtype(t[j], o.dtype) if j in t else B.zero(o.shape, jnp.shape(x), o.dtype)
               for j, x in enumerate(x_leaves)]
        blocks.append(jax.tree_util.tree_unflatten(x_def, row))
    return jax.tree_util.tree_unflatten(out_def, blocks)


def _require_real(tree, where: str) -> None:
    """The differentiated argument has real floating leaves to differentiate (an array, a
    pytree, a model: its trained leaves; its state and untouched leaves are passed as they
    are)."""
    dynamic = jax.tree_util.tree_leaves_with_path(partition(tree)[0])
    if not dynamic:
        leaves = jax.tree_util.tree_leaves(tree)
        first = leaves[0] if leaves else tree
        if _is_value(first):
            _require_real_dtype(jnp.result_type(first), where)
        raise TypeError(f"mcjax.derive: {where} is {describe(first)}; expected a floating "
                        "array (or a pytree or model holding some) to differentiate with "
                        "respect to")
    for path, leaf in dynamic:
        _require_real_dtype(jnp.result_type(leaf), where + jax.tree_util.keystr(path))


def _require_real_dtype(dtype, where: str) -> None:
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise DtypeError(
            f"mcjax.derive: {where} has dtype {dtype.name}; expected a real floating dtype: "
            "mcjax.derive differentiates real functions (for a holomorphic one use "
            "jax.jacfwd(f, holomorphic=True); for f of a complex z, derive with respect to "
            "its real and imaginary parts)")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise DtypeError(f"mcjax.derive: {where} has dtype {dtype.name}; expected a floating "
                         "dtype (an integer has no derivative)")
