"""Name the slip: test a failing derivative for the usual mistakes of hand derivations.

Each test asks whether the derivative under test ``G`` equals the reference ``R`` after one
known slip, within the comparison's own thresholds:

- **transposed**: ``G = R^T`` (denominator layout), possibly times a factor;
- **a constant factor**: ``G = c R`` with ``c`` one of -1, 2, 1/2, -2, -1/2, ``N`` or ``1/N``
  for a size ``N`` of the problem (a batch, a length), or any other ``c`` (said as such);
- **dense instead of diagonal**: ``R`` is diagonal (an element-wise operation), ``G`` is not;
  and the reverse, a diagonal where a full matrix was due;
- **a missing gate or mask**: ``G`` equals ``R`` where ``R`` is nonzero but not where ``R`` is
  zero; or ``G`` equals the Jacobian of ``f`` with its gates made straight-through
  (:func:`mcjax._check._jaxpr.ungated`): the ``1[z > 0]`` of a ReLU was forgotten;
- **the wrong argument**: ``G`` equals the derivative with respect to another argument.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check._jaxpr import ungated
from mcjax._check._problem import Prepared, flat_function
from mcjax._jit import quick_jit

FACTORS = {-1.0: "-1: the sign is flipped", 2.0: "2", 0.5: "1/2", -2.0: "-2", -0.5: "-1/2"}


def _close(a, b, slack) -> bool:
    return bool(np.all(np.abs(a - b) <= slack))


def _name_factor(c: float, sizes: Mapping[str, int]) -> str:
    for value, name in FACTORS.items():
        if abs(c - value) <= 1e-3 * abs(value):
            return name
    for what, n in sizes.items():
        if n > 2 and abs(c - n) <= 1e-3 * n:
            return f"N = {n} ({what}): a sum where a mean was due?"
        if n > 2 and abs(c - 1 / n) <= 1e-3 / n:
            return f"1/N = 1/{n} ({what}): a mean where a sum was due, or 1/N twice?"
    percent = 100 * (c - 1)
    return f"{c:.6g} ({percent:+.2g}%), not one of the usual slips"


def _factor(G, R, slack):
    """The ``c`` with ``G = c R`` if there is one (``c != 1``), else None."""
    denominator = float(np.sum(R * R))
    if denominator == 0:
        return None
    c = float(np.sum(G * R)) / denominator
    if c == 0 or not np.isfinite(c):
        return None
    if _close(G, c * R, slack * max(1.0, abs(c))) and not _close(G, R, slack):
        return c
    return None


def diagnose(G, R, allowed, include, *, sizes: Mapping[str, int], square: bool,
             ungated=None, other_arguments: Mapping[str, np.ndarray] | None = None) -> list[str]:
    """The slips that explain ``G != R`` (usually one; empty when none fits).

    Args:
      G, R, allowed: ``(m, n)`` float64: derivative under test, reference, thresholds.
      include: ``(m, n)`` bool, the entries compared (kinks excluded).
      sizes: the problem's sizes by description, candidates for a factor ``N``.
      square: the output and the argument have one shape (a diagonal is possible).
      ungated: the Jacobian of ``f`` with its gates straight-through, if computed.
      other_arguments: the Jacobians with respect to other arguments of the same shape.
    """
    slack = np.where(include, 2 * allowed, np.inf)
    G0, R0 = np.where(include, G, 0.0), np.where(include, R, 0.0)
    slips = []
    if G.shape[0] == G.shape[1] and not _close(R0, R0.T, slack):
        if _close(G, R.T, slack):
            return ["matches the reference transposed: denominator layout? (numerator layout is "
                    "out.shape + arg.shape; pass layout='denominator' if you meant it)"]
        c = _factor(G0, R0.T, slack)
        if c is not None:
            return [f"matches the reference transposed and times {_name_factor(c, sizes)}: "
                    "denominator layout?"]
    c = _factor(G0, R0, slack)
    if c is not None:
        slips.append(f"a constant factor: matches the reference times {_name_factor(c, sizes)}")
    if square:
        eye = np.eye(G.shape[0], dtype=bool)
        off_due = np.abs(np.where(eye, 0.0, R0)) > slack
        off_got = np.abs(np.where(eye, 0.0, G0)) > slack
        if not off_due.any() and off_got.any():
            same_diagonal = _close(np.diag(G0), np.diag(R0), np.diag(slack))
            slips.append(
                f"a dense matrix where a diagonal was due: the reference is diagonal (an "
                f"element-wise operation) but the derivative has {int(off_got.sum())} nonzero "
                f"off-diagonal entries{'; its diagonal is right' if same_diagonal else ''}"
            )
        elif off_due.any() and not off_got.any():
            slips.append("a diagonal where a full matrix was due: the reference has "
                         f"{int(off_due.sum())} nonzero off-diagonal entries")
    zero = np.abs(R0) <= slack
    if zero.any() and (~zero).any():
        right_where_nonzero = _close(np.where(zero, 0.0, G0), np.where(zero, 0.0, R0), slack)
        spilled = zero & (np.abs(G0) > slack)
        if right_where_nonzero and spilled.any():
            slips.append(f"a missing gate or mask: right where the reference is nonzero, but "
                         f"nonzero at {int(spilled.sum())} entries where it is 0 (a ReLU's "
                         "1[z > 0]?)")
    if ungated is not None and not slips and not _close(ungated, R, slack):
        if _close(G, ungated, slack):
            slips.append("a missing gate or mask: matches the derivative of f with its gates "
                         "(max(z, 0), where(mask, z, 0)) removed; multiply by the gate, e.g. "
                         "1[z > 0] for a ReLU")
    for name, J in (other_arguments or {}).items():
        if J.shape == G.shape and not _close(J, R, slack) and _close(G, J, slack):
            slips.append(f"matches the derivative with respect to {name}: the wrong argument?")
    return slips


# -- what the diagnosis compares with, computed for a failing point ----------------------------
def _ungated_jacobian(static, x_spec, out_spec, dynamic):
    args = static.args(dynamic)
    x = x_spec.flatten(args[static.argnums])
    return jax.jacfwd(ungated(flat_function(static, args, x_spec, out_spec)))(x)


def _jacobian(static, x_spec, out_spec, dynamic):
    args = static.args(dynamic)
    f_flat = flat_function(static, args, x_spec, out_spec)
    return (jax.jacrev if static.reverse_only else jax.jacfwd)(f_flat)(
        x_spec.flatten(args[static.argnums]))


@functools.cache
def _compiled(fn):
    """``fn(static, x_spec, out_spec, dynamic)`` jitted once: every failing point of the same
    check reuses the program (a closure over the point's arguments would compile per point)."""
    return quick_jit(fn, static_argnames=("static", "x_spec", "out_spec"))


def diagnosis_extras(p: Prepared, dynamic) -> dict:
    """What :func:`diagnose` compares with beyond the reference."""
    static, x_spec, out_spec = p.static, p.x_spec, p.out_spec
    args = static.args(dynamic)
    extras = {"other_arguments": {}}
    try:
        J = _compiled(_ungated_jacobian)(static, x_spec, out_spec, dynamic)
        extras["ungated"] = np.asarray(J, np.float64)
    except Exception:  # noqa: BLE001 - a primitive the straight-through evaluator cannot rebind
        extras["ungated"] = None
    for k, arg in enumerate(args):
        leaves = jax.tree_util.tree_leaves(arg)
        if k == static.argnums or not leaves:
            continue
        if jax.tree_util.tree_structure(arg) != x_spec.treedef or any(
                np.shape(a) != s or not jnp.issubdtype(jnp.result_type(a), jnp.floating)
                for a, s in zip(leaves, x_spec.shapes)):
            continue
        J = _compiled(_jacobian)(static._replace(argnums=k), x_spec, out_spec, dynamic)
        extras["other_arguments"][f"args[{k}]"] = np.asarray(J, np.float64)
    return extras


def sizes_of(p: Prepared, args) -> dict[str, int]:
    """Candidate sizes ``N`` for a factor slip: every dimension and size in sight."""
    sizes = {}
    for k, arg in enumerate(args):
        for path, leaf in jax.tree_util.tree_flatten_with_path(arg)[0]:
            shape = np.shape(leaf)
            name = f"args[{k}]" + "".join(str(q) for q in path)
            for axis, d in enumerate(shape):
                sizes.setdefault(f"axis {axis} of {name}", int(d))
            sizes.setdefault(f"the size of {name}", int(np.prod(shape)))
    sizes.setdefault("the size of f's output", p.out_spec.size)
    return sizes


def diagnose_point(p: Prepared, verdict, dynamic, args) -> list[str]:
    """The diagnosis of a failing point (``verdict``: full mode's
    :class:`~mcjax._check._full.PointVerdict`)."""
    square = p.x_spec.shapes == p.out_spec.shapes
    extras = diagnosis_extras(p, dynamic)
    return diagnose(verdict.got, verdict.reference, verdict.allowed, verdict.compared,
                    sizes=sizes_of(p, args), square=square, **extras)
