r"""A derivative checked against JAX by random matrix-vector probes.

``J.verify(f, *args, argnums=0)`` (and ``mcjax.derive(f, argnums).verify(*args)``, which the
``mcjax derive`` command runs) draws a few random tangents $\mathbf{v}$ and cotangents
$\mathbf{u}$ (standard normal, in each leaf's dtype, from ``seed``) and compares

- $J\mathbf{v}$, from the structure's own ``jvp``, with ``jax.jvp(f)``;
- $\mathbf{u}^\top J$, from the structure's own ``vjp``, with ``jax.vjp(f)``,

leaf by leaf of ``f``'s output (for $J\mathbf{v}$) and of the argument (for
$\mathbf{u}^\top J$).  It costs a few Jacobian-vector products, never the dense Jacobian, and
catches a wrong structure, factor, sign or transpose (asdex's ``check_jacobian_correctness``
is the model).  Unlike :func:`mcjax.check` it has no finite differences, no kinks and no
Taylor test: JAX's own derivative is the reference.  Where JAX has only one mode for ``f``
the other product's reference comes from it: a ``jax.custom_vjp`` rule has no ``jax.jvp``,
so $J\mathbf{v}$ is checked against the transpose of ``jax.vjp``; where ``jax.vjp`` fails
(a transpose rule of JAX's that does, ``lax.pad`` of a constant), $\mathbf{u}^\top J$ is
built from ``jax.jvp`` column by column.  The verdict names its references.

**Tolerance**, the checker's policy (:mod:`mcjax._core._tolerance`) applied to products: a
leaf agrees when, over all probes,

$$\max|\text{got} - \text{ref}| \le \max(32\,\varepsilon\sqrt{T},\ r)\cdot s + \text{atol}$$

with $\varepsilon$ the machine epsilon of the least precise dtype ``f`` computes in with the
argument, $T$ the longest sum (the longest in ``f``, and the matrix-vector product's own:
the argument's size for $J\mathbf{v}$, the output's for $\mathbf{u}^\top J$), $r$ the
per-dtype tolerance of :func:`mcjax.conventions.tolerance` (1e-4 in float32, 1e-9 in
float64: two right derivatives computed by different algorithms differ by more than a few
ulps), and $s$ the largest $|\text{ref}|$ of that leaf over the probes (at least
$\varepsilon$ times the largest of all leaves): relative to the norms, so float32 is judged
as float32, and a wrong structure, factor, sign or transpose, off by far more, is caught.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._core._arguments import argnums_spec, count, describe, numbers_as_array, positions
from mcjax._core._conventions import tolerance
from mcjax._core._errors import ShapeError, shape_str
from mcjax._core._pytrees import combine, floats_as_arrays, partition
from mcjax._core._tolerance import check_atol, check_rtol
from mcjax._program._compile import quick_jit
from mcjax._program._inspect import lowest_precision, max_terms
from mcjax._program._walk import custom_rules

PROBES = 4
"""How many random tangents (and as many cotangents) :func:`verify` tries by default."""

REFERENCE = "jax.jvp/jax.vjp"


@dataclass(frozen=True)
class Verification:
    """The verdict of :func:`verify`: whether a derivative agrees with JAX's on random probes.

    ``str(verification)`` is one line, e.g. ``checked against jax.jvp/jax.vjp with 4 random
    probes: agrees to 3.1e-8 (tolerance 5.3e-6)``; ``bool(verification)`` is ``ok``.

    Attributes:
      ok: every leaf of every product agrees within its tolerance.
      probes: how many tangents (and cotangents) were tried.
      error: the largest disagreement, relative to the reference's size (of the leaf that
        came closest to failing, or failed).
      tolerance: that leaf's tolerance, relative to the same size.
      where: which product and leaf that is, e.g. ``J v at out[1]``, ``uᵀ J at args[0]['W']``.
      dtype: the dtype the tolerance is set for.
      reference: what the products were compared with: ``jax.jvp/jax.vjp``, or for ``f``
        with a ``custom_vjp`` rule (which ``jax.jvp`` refuses) ``jax.vjp`` and its transpose.
      derivative: the derivative that was checked (for ``mcjax.derive(f).verify``, the
        result it derived).
    """

    ok: bool
    probes: int
    error: float
    tolerance: float
    where: str
    dtype: str
    reference: str = REFERENCE
    derivative: Any = field(default=None, repr=False, compare=False)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        head = f"checked against {self.reference} with {self.probes} random probes"
        if self.ok:
            return f"{head}: agrees to {_number(self.error)} (tolerance {_number(self.tolerance)})"
        return (f"{head}: DISAGREES in {self.where} by {_number(self.error)} of its size "
                f"(tolerance {_number(self.tolerance)})")


def _number(x: float) -> str:
    """``3e-7``, ``0.12``, ``inf``: two significant digits, no padded exponent."""
    if not math.isfinite(x) or x == 0:
        return str(x) if not math.isfinite(x) else "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.2g}"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


def verify(f, derivative, args: tuple, argnums: int | Sequence[int] = 0, *,
           probes: int = PROBES, seed: int = 0,
           caller: str = "mcjax.Jacobian.verify") -> Verification:
    """Check ``derivative`` (of ``f`` at ``args`` with respect to ``argnums``) by probes.

    Args:
      f: the function.
      derivative: a :class:`~mcjax.Jacobian` or a dense numerator-layout array, or a pytree
        of them in ``jax.jacfwd``'s structure (``f``'s output tree of argument trees).
      args: ``f``'s positional arguments.
      argnums: an int, or a tuple of them (as ``jax.jacfwd``'s).
      probes: how many random tangents, and cotangents.
      seed: the seed of the probes.
      caller: the name the error messages give.

    Returns:
      A :class:`Verification`.

    Raises:
      ShapeError: the derivative does not have ``jax.jacfwd``'s structure and shapes.
      ValueError: ``argnums`` does not fit ``args``, or ``probes < 1``.
      TypeError: ``argnums`` or ``probes`` is no int, or a differentiated argument holds
        something other than arrays.
    """
    name = caller.removeprefix("mcjax.")
    probes = count(name, "probes", probes)
    spec = argnums_spec(name, argnums)
    many = not isinstance(spec, int)
    wrt = positions(name, spec, len(args))
    args = tuple(floats_as_arrays(numbers_as_array(a)) if i in wrt else a
                 for i, a in enumerate(args))
    # a model's trained leaves, as mcjax.derive differentiates them; its state and untouched
    # leaves (an nnx.BatchStat, a function) are passed to f as they are
    parts = [partition(args[i]) for i in wrt]
    x_tree = tuple(trained for trained, _ in parts) if many else parts[0][0]
    x_paths, x_def = jax.tree_util.tree_flatten_with_path(x_tree)
    if not x_paths:
        whole = tuple(args[i] for i in wrt) if many else args[wrt[0]]
        for path, leaf in jax.tree_util.tree_flatten_with_path(whole)[0]:
            if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float)):
                raise TypeError(f"{caller}: {_argument_name(path, wrt, many)} is "
                                f"{describe(leaf)}; expected a floating array (or a pytree of "
                                "them) to differentiate with respect to")
        x_paths, x_def = jax.tree_util.tree_flatten_with_path(whole)  # integers: as before
        parts = [(args[i], None) for i in wrt]
    x_leaves = [jnp.asarray(leaf) for _, leaf in x_paths]

    def g(*leaves):
        chosen = jax.tree_util.tree_unflatten(x_def, leaves)
        full = list(args)
        for k, i in enumerate(wrt):
            trained = chosen[k] if many else chosen
            full[i] = trained if parts[k][1] is None else combine(trained, parts[k][1])
        return f(*full)

    closed, out_tree = jax.make_jaxpr(g, return_shape=True)(*x_leaves)
    out_paths, out_def = jax.tree_util.tree_flatten_with_path(out_tree)
    outs = [leaf for _, leaf in out_paths]
    blocks = _blocks(derivative, out_def, x_def, outs, x_leaves, caller)

    x_names = [_argument_name(p, wrt, many) for p, _ in x_paths]
    out_names = [f"out{jax.tree_util.keystr(p)}" if p else "f's output" for p, _ in out_paths]
    mode = "vjp" if custom_rules(closed.jaxpr) & {"custom_vjp_call", "custom_vjp_call_jaxpr"} \
        else "jvp/vjp"
    try:
        got_jv, ref_jv, got_uj, ref_uj = _probe(g, blocks, x_leaves, outs, out_def,
                                                int(probes), int(seed), mode)
    except Exception:
        if mode != "jvp/vjp":
            raise
        mode = "jvp"  # JAX's reverse mode fails on f (lax.pad of a constant): its forward mode
        got_jv, ref_jv, got_uj, ref_uj = _probe(g, blocks, x_leaves, outs, out_def,
                                                int(probes), int(seed), mode)

    dtype = _judged_dtype(closed.jaxpr, x_leaves, outs)
    terms = max_terms(closed.jaxpr)
    n_in = sum(math.prod(x.shape) for x in x_leaves)
    n_out = sum(math.prod(o.shape) for o in outs)
    judged = _judge(got_jv, ref_jv, [f"J v at {n}" for n in out_names], dtype,
                    max(terms, n_in)) + \
        _judge(got_uj, ref_uj, [f"uᵀ J at {n}" for n in x_names], dtype, max(terms, n_out))
    ratio, error, allowed, where = max(judged, key=lambda j: j[0]) if judged else \
        (0.0, 0.0, verify_rtol(dtype, terms), "")
    return Verification(bool(ratio <= 1.0), int(probes), error, allowed, where, dtype,
                        REFERENCES[mode], derivative)


def _argument_name(path, positions, many) -> str:
    if many:  # the path starts with the index into the tuple of differentiated arguments
        first, rest = path[0], path[1:]
        return f"args[{positions[first.idx]}]{jax.tree_util.keystr(tuple(rest))}"
    return f"args[{positions[0]}]{jax.tree_util.keystr(tuple(path))}"


@runtime_checkable
class LinearMap(Protocol):
    """What :func:`verify` needs of a structured block: its shape and its two products.

    A :class:`~mcjax.Jacobian` is one; so is any pytree that applies itself (a pytree: the
    products run under ``jax.jit``).  Like
    ``_lineax`` and ``_formula``, the probes meet a Jacobian through what it offers and never
    import its type, which offers ``J.verify`` by calling them."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def jvp(self, v): ...

    def vjp(self, u): ...


def _is_block(x) -> bool:
    """A structured block (``LinearMap``) rather than a dense array."""
    return isinstance(x, LinearMap)


def _blocks(derivative, out_def, x_def, outs, xs, caller) -> list[list[Any]]:
    """``blocks[i][j]``: the block of output leaf ``i`` against argument leaf ``j``."""
    due = [[tuple(o.shape) + tuple(jnp.shape(x)) for x in xs] for o in outs]
    try:
        rows = out_def.flatten_up_to(derivative)
        blocks = [x_def.flatten_up_to(row) for row in rows]
    except (ValueError, TypeError):
        got = jax.tree_util.tree_structure(derivative, is_leaf=_is_block)
        raise ShapeError(
            f"{caller}: the derivative has the structure {got} but f maps arguments with the "
            f"structure {x_def} to outputs with the structure {out_def}; expected jax.jacfwd's "
            "structure: f's output tree of argument trees (verify the whole result of "
            "mcjax.derive(f, argnums) with mcjax.derive(f, argnums).verify(*args))") from None
    for i, row in enumerate(blocks):
        for j, block in enumerate(row):
            shape = tuple(block.shape) if _is_block(block) else tuple(jnp.shape(block))
            if shape != due[i][j]:
                raise ShapeError(
                    f"{caller}: the block of output leaf {i} against argument leaf {j} has "
                    f"shape {shape_str(shape)}; expected {shape_str(due[i][j])} (numerator "
                    "layout: the output's shape, then the argument's)")
    return blocks


def _apply(block, v, ndim: int):
    """$J v$ of one block (a Jacobian, or a dense array with ``ndim`` input axes)."""
    return block.jvp(v) if _is_block(block) else jnp.tensordot(block, v, axes=ndim)


def _apply_transpose(block, u, ndim: int):
    """$u^\\top J$ of one block (``ndim`` output axes)."""
    return block.vjp(u) if _is_block(block) else jnp.tensordot(u, block, axes=ndim)


REFERENCES = {
    "jvp/vjp": REFERENCE,
    "vjp": "jax.vjp and its transpose (f has a custom_vjp rule: no jax.jvp)",
    "jvp": "jax.jvp alone (jax.vjp fails on f: uᵀ J column by column)",
}
"""What the products are compared with, by which of JAX's derivatives of ``f`` there is."""


def _probe(g, blocks, xs, outs, out_def, probes: int, seed: int, mode: str):
    """``(got J v, ref J v, got uᵀJ, ref uᵀJ)``: each a list (one per leaf) of float64 NumPy
    arrays with a leading axis of probes; the references by ``mode`` (a key of
    :data:`REFERENCES`).  The probes are drawn by NumPy (standard normal, in each leaf's
    dtype); the products are one jitted program, compiled once per call (quickly: it runs
    once)."""
    rng = np.random.default_rng(seed)

    def draw(like):
        dtype = np.dtype(jnp.result_type(like))
        shape = (probes,) + tuple(jnp.shape(like))
        if jnp.issubdtype(dtype, jnp.complexfloating):
            return jnp.asarray(rng.standard_normal(shape) + 1j * rng.standard_normal(shape), dtype)
        return jnp.asarray(rng.standard_normal(shape), dtype)

    vs, us = [draw(x) for x in xs], [draw(o) for o in outs]

    @quick_jit  # one run: compiled fast rather than optimised
    def products(blocks, xs, vs, us):
        forward, backward = _references(g, xs, outs, out_def, mode)
        columns = []
        for k in range(probes):
            v, u = [a[k] for a in vs], [a[k] for a in us]
            got_jv = [_total((_apply(b, vj, vj.ndim) for b, vj in zip(row, v)), o)
                      for row, o in zip(blocks, outs)]
            got_uj = [_total((_apply_transpose(row[j], ui, ui.ndim) for row, ui in zip(blocks, u)),
                             x) for j, x in enumerate(xs)]
            columns.append((got_jv, forward(v), got_uj, backward(u)))
        return [[jnp.stack([c[kind][i] for c in columns]) for i in range(len(columns[0][kind]))]
                for kind in range(4)]

    return tuple([np.asarray(a) if np.iscomplexobj(a) else np.asarray(a, np.float64)
                  for a in kind] for kind in products(blocks, xs, vs, us))


def _references(g, xs, outs, out_def, mode: str):
    """``(J v, uᵀ J)`` of JAX's derivative of ``g`` at ``xs``, as functions of the leaves of
    ``v`` and ``u``: ``jax.jvp`` and ``jax.vjp``; ``jax.vjp`` and its transpose; or ``jax.jvp``
    alone."""
    out_structs = jax.tree_util.tree_unflatten(out_def, outs)

    def jvp(v):
        return jax.tree_util.tree_leaves(jax.jvp(g, tuple(xs), tuple(v))[1])

    if mode == "jvp":
        return jvp, lambda u: _by_columns(jvp, xs, u)
    _, pullback = jax.vjp(g, *xs)

    def vjp(u):
        return list(pullback(jax.tree_util.tree_unflatten(out_def, u)))

    if mode == "vjp":
        pushed = jax.linear_transpose(pullback, out_structs)
        return lambda v: jax.tree_util.tree_leaves(pushed(tuple(v))[0]), vjp
    return jvp, vjp


def _by_columns(jvp, xs, u):
    """$u^\\top J$ from forward mode alone, one column per coordinate of the argument (where
    JAX's reverse mode fails on ``f``)."""
    pulled = []
    for j, x in enumerate(xs):
        n = math.prod(jnp.shape(x))
        basis = jnp.eye(n, dtype=jnp.result_type(x)).reshape((n,) + jnp.shape(x))

        def column(e, j=j):
            return jvp([e if k == j else jnp.zeros_like(y) for k, y in enumerate(xs)])

        columns = jax.vmap(column)(basis)  # per output leaf: (n,) + its shape
        total = sum(c.reshape(n, -1) @ ui.reshape(-1).astype(c.dtype)
                    for c, ui in zip(columns, u))
        pulled.append(jnp.reshape(total, jnp.shape(x)))
    return pulled


def _total(parts, like):
    """The sum of one leaf's parts, in ``like``'s dtype."""
    out = jnp.zeros(jnp.shape(like), jnp.result_type(like))
    for part in parts:
        out = out + jnp.asarray(part).astype(out.dtype)
    return out


def _judged_dtype(jaxpr, xs, outs) -> str:
    """The least precise floating dtype among the arguments, the outputs and what ``f``
    computes with them."""
    names = [np.dtype(jnp.result_type(a)).name for a in (*xs, *outs)]
    inner = lowest_precision(jaxpr)
    names += [inner] if inner else []
    floating = [n for n in names if jnp.issubdtype(n, jnp.inexact)]
    return max(floating, key=lambda n: float(jnp.finfo(n).eps), default="float32")


def verify_rtol(dtype, terms: int) -> float:
    """The relative tolerance of a product: the checker's ``32 eps sqrt(T)``, and never below
    the per-dtype tolerance of :func:`mcjax.conventions.tolerance` (1e-4 in float32, 1e-9 in
    float64): two right derivatives computed by different algorithms (the series of a special
    function, derive's formula against JAX's rule) differ by more than a few ulps, and a
    wrong structure, factor, sign or transpose is off by far more than either."""
    real = jnp.dtype(jnp.finfo(dtype).dtype).name
    return max(check_rtol(real, terms), tolerance(real).rtol)


def _judge(got: list[np.ndarray], ref: list[np.ndarray], names: list[str], dtype: str,
           terms: int) -> list[tuple[float, float, float, str]]:
    """``(ratio, error, tolerance, name)`` per leaf: ``ratio <= 1`` agrees; ``error`` and
    ``tolerance`` are relative to the leaf's largest reference magnitude."""
    rtol, atol = verify_rtol(dtype, terms), check_atol(dtype)
    eps = float(jnp.finfo(dtype).eps)
    magnitudes = [float(np.max(np.abs(np.where(np.isfinite(r), r, 0.0)), initial=0.0))
                  for r in ref]
    floor = eps * max(magnitudes, default=0.0)
    judged = []
    for g, r, s, name in zip(got, ref, magnitudes, names):
        if g.size == 0:
            continue
        scale = max(s, floor)
        same_nonfinite = (~np.isfinite(g) & ~np.isfinite(r) & ((g == r) | (np.isnan(g) &
                                                                           np.isnan(r))))
        diff = np.where(same_nonfinite, 0.0, np.abs(g - r))
        worst = float(np.max(np.where(np.isnan(diff), np.inf, diff)))
        allowed = rtol * scale + atol
        relative = max(scale, atol)  # an all-zero reference: judged by atol, shown by rtol
        judged.append((worst / allowed, worst / relative,
                       allowed / relative if scale > atol else rtol, name))
    return judged
