r"""Name the slip, and say where it is: the diagnosis of a failing derivative.

Each test asks whether the derivative under test ``G`` equals the true Jacobian ``F`` after one
known slip, within the comparison's own thresholds, and names a slip only when its residual
vanishes (a slip that merely comes closer is not named):

- **NaN or Inf** where the reference is finite: an overflow or a 0/0;
- **transposed**: the whole Jacobian (denominator layout), or a matrix argument's gradient
  over the argument's own axes (``x h^T`` for ``h x^T`` with a square ``W``);
- **a constant factor**: -1 (a flipped sign), 2, 1/2, a size ``N`` of the problem or ``1/N``
  (a sum where a mean was due), ``sqrt(d)`` or ``1/sqrt(d)`` (attention's scale);
- **dense for diagonal** and the reverse;
- **a missing gate or mask** (``1[z > 0]`` of a ReLU);
- **the function's value where its derivative was due**, **a missing term**, **a sign error
  in one term**: ``G`` matches ``f`` with one place rewritten (``mcjax._check._slips``),
  named with the line of ``f`` it is about;
- **the wrong argument**;
- failing all those, **a missing or extra low-rank term**: ``G - F`` has rank 1 or 2.

``where`` says which leaves, rows and columns hold the wrong entries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check import _slips
from mcjax._check._flat import FlatSpec
from mcjax._check._problem import Prepared, flat_at, jacobian_of
from mcjax._check._report import Slip
from mcjax._core._conventions import standard_promotion
from mcjax._core._pytrees import partition
from mcjax._program._compile import compiler_options, run_compiled

FACTORS = {-1.0: "-1: the sign is flipped", 2.0: "2", 0.5: "1/2", -2.0: "-2", -0.5: "-1/2"}
MAX_NAMED = 2  # candidates that match besides the first are usually the same slip again


def _close(a, b, slack) -> bool:
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.abs(a - b) <= slack))


def _name_factor(c: float, sizes: Mapping[str, int]) -> str:
    """``c`` in words: a usual slip, a size of the problem, or its square root."""
    named, seen = [], set()
    for value, name in FACTORS.items():
        if abs(c - value) <= 1e-3 * abs(value):
            named.append(name)
    for what, n in sizes.items():
        if n in seen:  # the first place a size appears names it
            continue
        seen.add(n)
        if n > 2 and abs(c - n) <= 1e-3 * n:
            named.append(f"N = {n} ({what}): a sum where a mean was due?")
        elif n > 2 and abs(c - 1 / n) <= 1e-3 / n:
            named.append(f"1/N = 1/{n} ({what}): a mean where a sum was due, or 1/N twice?")
        elif n > 1 and abs(abs(c) - math.sqrt(n)) <= 1e-3 * math.sqrt(n):
            named.append(f"sqrt(d) = sqrt({n}) (d = {what}): a missing 1/sqrt(d)?")
        elif n > 1 and abs(abs(c) - 1 / math.sqrt(n)) <= 1e-3 / math.sqrt(n):
            named.append(f"1/sqrt(d) = 1/sqrt({n}) (d = {what}): 1/sqrt(d) twice, or a sqrt(d) "
                         "too few?")
        if len(named) >= 2:
            break
    if named:
        return " or ".join(dict.fromkeys(named))
    return f"{c:.6g} ({100 * (c - 1):+.2g}%), not one of the usual slips"


def _factor(G, R, slack):
    """The ``c != 1`` with ``G = c R`` if there is one, else None."""
    denominator = float(np.sum(R * R))
    if denominator == 0:
        return None
    c = float(np.sum(G * R)) / denominator
    if c == 0 or not np.isfinite(c):
        return None
    if _close(G, c * R, slack * max(1.0, abs(c))) and not _close(G, R, slack):
        return c
    return None


def _axis_transposes(x_spec: FlatSpec, n: int):
    """For each argument leaf with two equal axes: ``(leaf path, column permutation)`` that
    swaps them (a matrix's gradient transposed over its own axes)."""
    for path, shape, offset, size in zip(x_spec.paths, x_spec.shapes, x_spec.offsets,
                                         x_spec.sizes):
        for a in range(len(shape)):
            for b in range(a + 1, len(shape)):
                if shape[a] != shape[b] or shape[a] < 2:
                    continue
                order = np.arange(size).reshape(shape).swapaxes(a, b).ravel()
                perm = np.arange(n)
                perm[offset:offset + size] = offset + order
                named = x_spec.root + path if x_spec.root != "x" else path or "the argument"
                yield named, (a, b), perm


def diagnose(G, F, allowed, include, *, x_spec: FlatSpec, out_spec: FlatSpec,
             sizes: Mapping[str, int], candidates: list[tuple[str, str, np.ndarray]]
             ) -> list[Slip]:
    """The slips that explain ``G != F`` (usually one; empty when none fits).

    Args:
      G, F, allowed: ``(m, n)`` float64: derivative under test, exact reference, thresholds.
      include: ``(m, n)`` bool, the entries compared (kinks excluded).
      x_spec, out_spec: the argument's and the output's leaves.
      sizes: the problem's sizes by description, candidates for a factor ``N``.
      candidates: ``(kind, sentence, Jacobian)`` of ``f`` with one slip planted each.
    """
    finite = np.isfinite(G)
    if not finite.all() and np.isfinite(F[~finite]).all():
        return [Slip("nonfinite", f"NaN or Inf at {int((~finite).sum())} entries where the "
                     "reference is finite: an overflow (exp of a large argument?) or 0/0 in an "
                     "unstable formula; a stable form (jax.nn.sigmoid, logsumexp) avoids it")]
    slack = np.where(include, 2 * allowed, np.inf)
    G0, F0 = np.where(include, G, 0.0), np.where(include, F, 0.0)
    m, n = G.shape
    if m == n and not _close(F0, F0.T, slack):
        if _close(G, F.T, slack):
            return [Slip("transposed", "matches the reference transposed: denominator layout? "
                         "(numerator layout is out.shape + arg.shape; pass "
                         "layout='denominator' if you meant it)")]
        c = _factor(G0, F0.T, slack)
        if c is not None:
            return [Slip("transposed", f"matches the reference transposed and times "
                         f"{_name_factor(c, sizes)}: denominator layout?")]
    for path, axes, perm in _axis_transposes(x_spec, n):
        FT = F[:, perm]
        if not _close(FT, F, slack) and _close(G, FT, slack):
            return [Slip("transposed", f"matches the reference with {path}'s axes {axes} "
                         "swapped: the gradient of a matrix transposed (x h^T where h x^T was "
                         "due?)")]
    c = _factor(G0, F0, slack)
    if c is not None:
        kind = "sign" if abs(c + 1) <= 1e-3 else "factor"
        return [Slip(kind, f"a constant factor: matches the reference times "
                     f"{_name_factor(c, sizes)}")]
    # the most specific first: a variant of f that matches names the line of the slip
    named = [Slip(kind, sentence) for kind, sentence, J in candidates
             if not _close(J, F, slack) and _close(G, J, slack)][:MAX_NAMED]
    slips = list(dict.fromkeys(named + _structure(G0, F0, slack, out_spec, x_spec)))
    return slips or _low_rank(G0 - F0, F0, slack)


def _structure(G0, F0, slack, out_spec, x_spec) -> list[Slip]:
    """Dense for diagonal (and the reverse), and a missing mask."""
    slips = []
    if out_spec.shapes == x_spec.shapes:
        eye = np.eye(G0.shape[0], dtype=bool)
        off_due = np.abs(np.where(eye, 0.0, F0)) > slack
        off_got = np.abs(np.where(eye, 0.0, G0)) > slack
        if not off_due.any() and off_got.any():
            same = _close(np.diag(G0), np.diag(F0), np.diag(slack))
            slips.append(Slip("dense-for-diagonal", "a dense matrix where a diagonal was due: "
                              "the reference is diagonal (an element-wise operation) but the "
                              f"derivative has {int(off_got.sum())} nonzero off-diagonal entries"
                              f"{'; its diagonal is right' if same else ''}"))
        elif off_due.any() and not off_got.any():
            slips.append(Slip("diagonal-for-dense", "a diagonal where a full matrix was due: "
                              f"the reference has {int(off_due.sum())} nonzero off-diagonal "
                              "entries"))
    zero = np.abs(F0) <= slack
    if zero.any() and (~zero).any():
        right_where_nonzero = _close(np.where(zero, 0.0, G0), np.where(zero, 0.0, F0), slack)
        spilled = zero & (np.abs(G0) > slack)
        if right_where_nonzero and spilled.any():
            slips.append(Slip("missing-gate", "a missing gate or mask: right where the reference "
                              f"is nonzero, but nonzero at {int(spilled.sum())} entries where it "
                              "is 0 (a ReLU's 1[z > 0]?)"))
    return slips


def _low_rank(E, F0, slack) -> list[Slip]:
    """A difference of rank 1 or 2 that no named slip explains: a missing or extra term."""
    if min(E.shape) < 3 or not np.all(np.isfinite(E)):
        return []
    s = np.linalg.svd(E, compute_uv=False)
    noise = float(np.sqrt(np.sum(np.where(np.isfinite(slack), slack, 0.0) ** 2)))
    for rank in (1, 2):
        if s[0] > noise and float(np.sqrt(np.sum(s[rank:] ** 2))) <= noise:
            return [Slip("low-rank", f"a missing or extra term: the difference from the "
                         f"reference has rank {rank} (an outer product u v^T"
                         f"{' plus another' if rank == 2 else ''}, like the -s s^T of the "
                         "softmax Jacobian or a mean's dependence)")]
    return []


def where(G, F, allowed, include, x_spec: FlatSpec, out_spec: FlatSpec) -> list[str]:
    """Which leaves, rows and columns hold the wrong entries: one line per block that has any."""
    with np.errstate(invalid="ignore"):
        bad = include & ~(np.abs(G - F) <= allowed)
    lines = []
    for o_path, o_shape, oi, mi in zip(out_spec.paths, out_spec.shapes, out_spec.offsets,
                                       out_spec.sizes):
        for x_path, x_shape, oj, nj in zip(x_spec.paths, x_spec.shapes, x_spec.offsets,
                                           x_spec.sizes):
            block = bad[oi:oi + mi, oj:oj + nj].reshape(o_shape + x_shape)
            count = int(block.sum())
            if not count:
                continue
            name = (f"d out{o_path} / d {x_spec.root}{x_path}" if not (out_spec.is_array and x_spec.is_array)
                    else "the Jacobian")
            axes = _axes(block, len(o_shape), o_shape + x_shape)
            lines.append(f"{count} of {mi * nj} entries of {name} are wrong" +
                         (f": {'; '.join(axes)}" if axes else ""))
    return lines


def _axes(block, out_ndim: int, shape) -> list[str]:
    """Per axis, the indices that hold wrong entries, when they are not all of them."""
    out = []
    for axis, size in enumerate(shape):
        rest = tuple(a for a in range(len(shape)) if a != axis)
        hit = np.nonzero(block.any(axis=rest))[0] if rest else np.nonzero(block)[0]
        if size > 1 and len(hit) < size:
            side = "output" if axis < out_ndim else "argument"
            k = axis if axis < out_ndim else axis - out_ndim
            shown = ", ".join(str(int(i)) for i in hit[:6]) + (" ..." if len(hit) > 6 else "")
            out.append(f"only {side} axis {k} indices {shown} (of {size})")
    return out


# -- the Jacobians the diagnosis compares with, computed for a failing point --------------------
def _variants(statics, consts, dynamic):
    static, x_spec, out_spec, targets = statics
    f_flat, x = flat_at(static.bind(consts), x_spec, out_spec, dynamic)
    return [jacobian_of(static, _slips.variant(f_flat, t))(x) for t in targets]


def _other_jacobian(statics, consts, dynamic):
    static, x_spec, out_spec = statics
    f_flat, x = flat_at(static.bind(consts), x_spec, out_spec, dynamic)
    return jacobian_of(static, f_flat)(x)


def _compiled(fn, statics, dynamic):
    """``fn(statics, consts, dynamic)`` from a compiled program, one per traced ``f``."""
    return run_compiled(fn, statics, statics[0].consts(), dynamic,
                        compiler_options=compiler_options())


def candidates(p: Prepared, dynamic) -> list[tuple[str, str, np.ndarray]]:
    """``(kind, sentence, Jacobian)`` for every slip planted in ``f`` at this point."""
    static, x_spec, out_spec = p.static, p.x_spec, p.out_spec
    f_flat, x = flat_at(static, x_spec, out_spec, dynamic)
    args = static.args(dynamic)
    targets = ["ungated"] + _slips.sites(jax.make_jaxpr(f_flat)(x).jaxpr)
    try:
        jacobians = _compiled(_variants, (static, x_spec, out_spec, tuple(targets)), dynamic)
    except Exception:  # noqa: BLE001 - a primitive the rewriting cannot rebind: no candidates
        jacobians = [None] * len(targets)
    out = []
    for target, J in zip(targets, jacobians):
        if J is None:
            continue
        if target == "ungated":
            out.append(("missing-gate", "a missing gate or mask: matches the derivative of f "
                        "with its gates (max(z, 0), where(mask, z, 0)) removed; multiply by the "
                        "gate, e.g. 1[z > 0] for a ReLU", np.asarray(J, np.float64)))
        else:
            assert isinstance(target, _slips.Site)
            kind = {"drop": "missing-term", "negate": "sign-in-term",
                    "value": "value-for-derivative"}[target.how]
            out.append((kind, target.describe(), np.asarray(J, np.float64)))
    for k, arg in enumerate(args):
        arg = partition(arg)[0]  # its differentiated leaves, as the argument's (a model's)
        leaves = jax.tree_util.tree_leaves(arg)
        if k in static.positions or not leaves:
            continue
        if jax.tree_util.tree_structure(arg) != x_spec.treedef or any(
                np.shape(a) != s or not jnp.issubdtype(jnp.result_type(a), jnp.floating)
                for a, s in zip(leaves, x_spec.shapes)):
            continue
        J = _compiled(_other_jacobian, (static._replace(argnums=k), x_spec, out_spec), dynamic)
        out.append(("wrong-argument", f"matches the derivative with respect to args[{k}]: the "
                    "wrong argument?", np.asarray(J, np.float64)))
    return out


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


def diagnose_point(p: Prepared, verdict, F, dynamic) -> tuple[list[Slip], list[str]]:
    """The diagnosis and the location summary of a failing point (``verdict``: full mode's
    ``PointVerdict``; ``F``: the exact reference)."""
    with standard_promotion():  # the checker's own programs (f was traced when prepared)
        return _diagnose_point(p, verdict, F, dynamic)


def _diagnose_point(p: Prepared, verdict, F, dynamic) -> tuple[list[Slip], list[str]]:
    args = p.static.args(dynamic)
    slips = diagnose(verdict.got, F, verdict.allowed, verdict.compared, x_spec=p.x_spec,
                     out_spec=p.out_spec, sizes=sizes_of(p, args),
                     candidates=candidates(p, dynamic))
    return slips, where(verdict.got, F, verdict.allowed, verdict.compared, p.x_spec, p.out_spec)
