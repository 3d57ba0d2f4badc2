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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check import _slips
from mcjax._check._flat import FlatSpec
from mcjax._check._problem import (
    Prepared,
    argument_names,
    flat_at,
    flat_function,
    jacobian_of,
)
from mcjax._check._report_parts import Slip
from mcjax._core._conventions import standard_promotion
from mcjax._core._pytrees import partition
from mcjax._program._compile import compiler_options, run_compiled

FACTORS = {-1.0: "-1: the sign is flipped", 2.0: "2", 0.5: "1/2", -2.0: "-2", -0.5: "-1/2"}

EXPLAINS = 0.25
"""A candidate explains the difference when the residual it leaves is at most this fraction
of ``G - F`` (and within the comparison's slack entry by entry): a match that merely sits
inside the tolerance (both nearly 0) explains nothing."""

PREFERENCE = ("factor", "sign", "transposed", "wrong-argument", "leaf-factor", "leaf-sign",
              "missing-term", "other-branch", "missing-factor", "missing-gate", "sign-dropped",
              "value-for-derivative", "neighbour-derivative", "before-transform",
              "count-off-by-one", "not-transposed", "kernel-not-flipped", "padding-off",
              "tap-missing", "sign-in-term")
"""Of two explanations whose Jacobians coincide, the one named: the simpler (a factor names
its ``N``) and the more specific (a term left out says more than one factor of ``x x``
negated, which zeroes the same term)."""


class Candidate(NamedTuple):
    """One explanation of ``G != F``: the Jacobian a slip gives, named."""

    kind: str
    sentence: str
    J: np.ndarray

    @property
    def preference(self) -> int:
        return PREFERENCE.index(self.kind) if self.kind in PREFERENCE else len(PREFERENCE)


def _close(a, b, slack) -> bool:
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.abs(a - b) <= slack))


def _factor_names(sizes: Mapping[str, int], *, two_sizes: bool = True
                  ) -> list[tuple[float, str]]:
    """Every factor a size of the problem makes: ``N``, ``1/N``, their square roots, and (with
    ``two_sizes``) the products and ratios of two sizes (a mean over two axes, conv's
    ``1/T``)."""
    named: dict[int, str] = {}
    for what, n in sizes.items():
        if n > 2 and n not in named:  # 2 and 1/2 are the usual slips' own (FACTORS)
            named[n] = what
    out = []  # the simplest readings first: every N, then square roots, then two sizes
    for n, what in named.items():
        out += [(n, f"N = {n} ({what}): a sum where a mean was due?"),
                (1 / n, f"1/N = 1/{n} ({what}): a mean where a sum was due, or 1/N twice?")]
    for n, what in named.items():
        out += [(math.sqrt(n), f"sqrt(d) = sqrt({n}) (d = {what}): a missing 1/sqrt(d)?"),
                (1 / math.sqrt(n), f"1/sqrt(d) = 1/sqrt({n}) (d = {what}): 1/sqrt(d) twice, or a "
                 "sqrt(d) too few?")]
    items = list(named.items()) if two_sizes else []
    for i, (a, wa) in enumerate(items):
        for b, wb in items[i:]:
            out.append((a * b, f"{a} x {b} ({wa} times {wb}): a sum over both where a mean "
                        "was due?"))
            out.append((1 / (a * b), f"1/({a} x {b}) ({wa} times {wb}): a mean over both where "
                        "a sum was due?"))
            if a != b:
                out.append((a / b, f"{a}/{b} ({wa} over {wb})"))
                out.append((b / a, f"{b}/{a} ({wb} over {wa})"))
    return out


def usual_factor(c: float, sizes: Mapping[str, int], *, two_sizes: bool = True) -> str | None:
    """``c`` in words when it is a usual slip (-1, 2, 1/2, ...) or a size of the problem (or
    its square root; with ``two_sizes``, a product or ratio of two sizes); else None."""
    named = [name for value, name in FACTORS.items() if abs(c - value) <= 1e-3 * abs(value)]
    for value, name in _factor_names(sizes, two_sizes=two_sizes):  # the first that fits
        if abs(abs(c) - value) <= 1e-3 * value:
            named.append(name if c > 0 else f"-{name}")
            break
    return " or ".join(dict.fromkeys(named)) if named else None


def _name_factor(c: float, sizes: Mapping[str, int]) -> str:
    """``c`` in words: a usual slip, a size of the problem (or a product, ratio or square root
    of sizes), or the number itself."""
    return usual_factor(c, sizes) or f"{c:.6g} ({100 * (c - 1):+.2g}%), not one of the usual slips"


def _fit(G, R, slack):
    """The ``c`` that best fits ``G = c R`` (least squares), or None."""
    denominator = float(np.sum(R * R))
    if denominator == 0:
        return None
    c = float(np.sum(G * R)) / denominator
    return c if c != 0 and np.isfinite(c) else None


def _axis_transposes(x_spec: FlatSpec, n: int):
    """For each argument leaf with two equal axes: ``(leaf index, axes, column permutation)``
    that swaps them (a matrix's gradient transposed over its own axes)."""
    for leaf, (shape, offset, size) in enumerate(zip(x_spec.shapes, x_spec.offsets,
                                                     x_spec.sizes)):
        for a in range(len(shape)):
            for b in range(a + 1, len(shape)):
                if shape[a] != shape[b] or shape[a] < 2:
                    continue
                order = np.arange(size).reshape(shape).swapaxes(a, b).ravel()
                perm = np.arange(n)
                perm[offset:offset + size] = offset + order
                yield leaf, (a, b), perm


def _global(G0, F0, slack, sizes, x_spec: FlatSpec) -> list[Candidate]:
    """The whole Jacobian transposed, a matrix leaf's gradient transposed over its own axes,
    a constant factor on all of it, or on one leaf."""
    out, leaves = [], x_spec.leaf_names
    m, n = G0.shape
    if m == n:
        out.append(Candidate("transposed", "matches the reference transposed: denominator "
                             "layout? (numerator layout is out.shape + arg.shape; pass "
                             "layout='denominator' if you meant it)", F0.T))
        c = _fit(G0, F0.T, slack)
        if c is not None and abs(c - 1) > 1e-3:
            out.append(Candidate("transposed", f"matches the reference transposed and times "
                                 f"{_name_factor(c, sizes)}: denominator layout?", c * F0.T))
    for leaf, axes, perm in _axis_transposes(x_spec, n):
        FT = F0[:, perm]
        out.append(Candidate("transposed", f"matches the reference with {leaves[leaf]}'s axes "
                             f"{axes} swapped: the gradient of a matrix transposed (x h^T where "
                             "h x^T was due?)", FT))
        c = _fit(G0, FT, slack)
        if c is not None and abs(c - 1) > 1e-3:  # and a sign or a factor besides
            out.append(Candidate("transposed", f"matches the reference with {leaves[leaf]}'s "
                                 f"axes {axes} swapped and times {_name_factor(c, sizes)}: the "
                                 "gradient of a matrix transposed, and a factor", c * FT))
    c = _fit(G0, F0, slack)
    if c is not None:
        kind = "sign" if abs(c + 1) <= 1e-3 else "factor"
        out.append(Candidate(kind, "a constant factor: matches the reference times "
                             f"{_name_factor(c, sizes)}", c * F0))
    if len(x_spec.shapes) > 1:
        for leaf, (offset, size) in enumerate(zip(x_spec.offsets, x_spec.sizes)):
            block = slice(offset, offset + size)
            c = _fit(G0[:, block], F0[:, block], slack[:, block])
            if c is None:
                continue
            J = F0.copy()
            J[:, block] *= c
            kind = "leaf-sign" if abs(c + 1) <= 1e-3 else "leaf-factor"
            out.append(Candidate(kind, f"a constant factor on {leaves[leaf]} only: its "
                                 f"derivative matches the reference times "
                                 f"{_name_factor(c, sizes)}", J))
    return out


def rank(G0, F0, slack, candidates: list[Candidate]) -> list[Candidate]:
    """The candidates that explain ``G0 - F0``, best first, equivalent ones merged.

    A candidate explains it when ``G0`` matches its Jacobian within ``slack`` at every entry,
    the Jacobian is neither the reference's nor 0 (within ``slack``: a factor of 1e-7 that
    matches a derivative that is 0 within the tolerance explains nothing), and the residual it
    leaves is at most ``EXPLAINS`` of ``G0 - F0``.  Candidates whose Jacobians coincide are one
    explanation, named by the ``PREFERENCE`` of their kinds; explanations are ordered by the
    residual each leaves (relative to ``slack``)."""
    with np.errstate(invalid="ignore", over="ignore"):
        difference = float(np.linalg.norm(G0 - F0))
        weight = np.where(np.isfinite(slack) & (slack > 0), 1 / np.where(slack > 0, slack, 1), 0)
        fits = []
        for k, cand in enumerate(candidates):
            J = np.where(np.isfinite(slack), cand.J, 0.0)
            if (not np.all(np.isfinite(J)) or _close(J, F0, slack) or _close(J, 0.0, slack)
                    or not _close(G0, J, slack)
                    or float(np.linalg.norm(G0 - J)) > EXPLAINS * difference):
                continue
            fits.append((float(np.max(np.abs(G0 - J) * weight, initial=0.0)), k, cand._replace(J=J)))
    fits.sort(key=lambda t: (t[0], t[1]))
    groups: list[list[Candidate]] = []
    for _, _, cand in fits:
        group = next((g for g in groups if _close(g[0].J, cand.J, slack)), None)
        if group is None:
            groups.append([cand])
        else:
            group.append(cand)
    return [min(g, key=lambda c: c.preference) for g in groups]


def diagnose(G, F, allowed, include, *, x_spec: FlatSpec, out_spec: FlatSpec,
             sizes: Mapping[str, int], candidates: list[Candidate]) -> list[Slip]:
    """The slips that explain ``G != F``, best first (empty when none does).

    Args:
      G, F, allowed: ``(m, n)`` float64: derivative under test, exact reference, thresholds.
      include: ``(m, n)`` bool, the entries compared (kinks excluded).
      x_spec, out_spec: the argument's and the output's leaves (``x_spec.leaf_names`` name
        them in the sentences: ``params['W2']``).
      sizes: the problem's sizes by description, candidates for a factor ``N``.
      candidates: ``f`` with one slip planted each (and the other arguments' Jacobians).
    """
    finite = np.isfinite(G)
    if not finite.all() and np.isfinite(F[~finite]).all():
        return [Slip("nonfinite", f"NaN or Inf at {int((~finite).sum())} entries where the "
                     "reference is finite: an overflow (exp of a large argument?) or 0/0 in an "
                     "unstable formula; a stable form (jax.nn.sigmoid, logsumexp) avoids it")]
    slack = np.where(include, 2 * allowed, np.inf)
    G0, F0 = np.where(include, G, 0.0), np.where(include, F, 0.0)
    ranked = rank(G0, F0, slack, _global(G0, F0, slack, sizes, x_spec) + candidates)
    slips = [Slip(c.kind, c.sentence) for c in ranked]
    if not slips:
        slips = _structure(G0, F0, slack, out_spec, x_spec)
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
    """Which leaves, rows and columns hold the wrong entries: one line per block that has any
    (the leaves named as ``f`` names them, ``x_spec.leaf_names``)."""
    with np.errstate(invalid="ignore"):
        bad = include & ~(np.abs(G - F) <= allowed)
    lines = []
    leaves = x_spec.leaf_names
    for o_path, o_shape, oi, mi in zip(out_spec.paths, out_spec.shapes, out_spec.offsets,
                                       out_spec.sizes):
        for x_name, x_shape, oj, nj in zip(leaves, x_spec.shapes, x_spec.offsets,
                                           x_spec.sizes):
            block = bad[oi:oi + mi, oj:oj + nj].reshape(o_shape + x_shape)
            count = int(block.sum())
            if not count:
                continue
            name = (f"d out{o_path} / d {x_name}" if not (out_spec.is_array and x_spec.is_array)
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
    """Every variant's Jacobian, ``(variants, m, n)``: ``f`` traced once with every slip
    planted behind a switch, vmapped over which one is on."""
    static, x_spec, out_spec, targets = statics
    f_flat, x = flat_at(static.bind(consts), x_spec, out_spec, dynamic)
    run = _slips.planted(jax.make_jaxpr(f_flat)(x), list(targets))
    choices = jnp.eye(len(targets), dtype=bool)
    if out_spec.size == 1:  # a loss: its gradient, without batching over directions
        return jax.vmap(lambda c: jax.grad(lambda v: run(v, c).reshape(()))(x)[None])(choices)
    if out_spec.size < x_spec.size and not static.reverse_only:
        try:  # fewer outputs than inputs: reverse mode, unless f has no transpose (a while)
            return jax.vmap(lambda c: jax.jacrev(lambda v: run(v, c))(x))(choices)
        except Exception:  # noqa: BLE001 - JAX's error for an untransposable primitive varies
            pass  # forward mode, as the references did
    return jax.vmap(lambda c: jacobian_of(static, lambda v: run(v, c))(x))(choices)


def _other_jacobian(statics, consts, dynamic):
    static, x_spec, out_spec = statics
    f_flat, x = flat_at(static.bind(consts), x_spec, out_spec, dynamic)
    return jacobian_of(static, f_flat)(x)


def _compiled(fn, statics, dynamic):
    """``fn(statics, consts, dynamic)`` from a compiled program, one per traced ``f``."""
    return run_compiled(fn, statics, statics[0].consts(), dynamic,
                        compiler_options=compiler_options())


def _of_f(static):
    """``static`` without the derivative under test: the programs of the diagnosis depend on
    ``f`` alone, so every wrong derivative of one ``f`` shares them."""
    return static._replace(derivative=static.f, pullback=False)


class Unplanted(Exception):
    """The variants of ``f`` could not be evaluated: the diagnosis says so (kind
    ``"incomplete"``) and tries the slips of the derivative as a whole."""


def candidates(p: Prepared, dynamic) -> list[Candidate]:
    """Every slip planted in ``f`` at this point, and the other arguments' Jacobians.

    Raises:
      Unplanted: the program of the variants failed (a primitive the rewriting cannot rebind).
    """
    static, x_spec, out_spec = _of_f(p.static), p.x_spec, p.out_spec
    # traced abstractly (an eager flatten would compile a little program per shape)
    x = jax.eval_shape(lambda d: flat_at(static, x_spec, out_spec, d)[1], dynamic)
    args = static.args(dynamic)
    f_flat = flat_function(static, args, x_spec, out_spec)
    found = _slips.sites(jax.make_jaxpr(f_flat)(x).jaxpr)
    targets = ["ungated"] + found[:_slips.MAX_SITES]
    try:
        jacobians = np.asarray(_compiled(_variants, (static, x_spec, out_spec, tuple(targets)),
                                         dynamic), np.float64)  # NumPy: iterating compiles
    except Exception as e:  # noqa: BLE001 - said in the report, never swallowed
        raise Unplanted(f"the slips planted in f could not be evaluated ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}): only the slips of the "
                        "derivative as a whole were tried") from e
    out = []
    if len(found) > _slips.MAX_SITES:
        out.append(Candidate("incomplete", f"only the first {_slips.MAX_SITES} of the "
                             f"{len(found)} places of f where a slip can be planted were tried",
                             np.zeros((0, 0))))
    for target, J in zip(targets, jacobians):
        if target == "ungated":
            out.append(Candidate("missing-gate", "a missing gate or mask: matches the "
                                 "derivative of f with its gates (max(z, 0), where(mask, z, 0)) "
                                 "removed; multiply by the gate, e.g. 1[z > 0] for a ReLU",
                                 np.asarray(J, np.float64)))
        else:
            assert isinstance(target, _slips.Site)
            out.append(Candidate(target.kind, target.describe(), np.asarray(J, np.float64)))
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
        name = argument_names(p.static.f, (k,))[-1]
        out.append(Candidate("wrong-argument", f"matches the derivative with respect to {name}: "
                             "the wrong argument?", np.asarray(J, np.float64)))
    return out


def sizes_of(p: Prepared, args) -> dict[str, int]:
    """Candidate sizes ``N`` for a factor slip: every axis and size of the arguments (named as
    ``f`` names them: ``axis 0 of X``) and of ``f``'s outputs, and every axis of the arrays
    ``f`` closes over (a batch of data)."""
    names = argument_names(p.static.f, (len(args) - 1,)) if args else ()
    sizes = {}
    for k, arg in enumerate(args):
        for path, leaf in jax.tree_util.tree_flatten_with_path(arg)[0]:
            shape = np.shape(leaf)
            base = names[k] if k < len(names) else f"args[{k}]"
            name = base + "".join(str(q) for q in path)
            for axis, d in enumerate(shape):
                sizes.setdefault(f"axis {axis} of {name}", int(d))
            sizes.setdefault(f"the size of {name}", int(np.prod(shape)))
    for path, shape in zip(p.out_spec.paths, p.out_spec.shapes):
        for axis, d in enumerate(shape):
            sizes.setdefault(f"axis {axis} of f's output{path}", int(d))
        sizes.setdefault(f"the size of f's output{path}", int(np.prod(shape)))
    sizes.setdefault("the size of f's output", p.out_spec.size)
    for value in p.f_jaxpr.consts:  # the arrays f closes over: a batch of data, a mask
        shape = np.shape(value)
        for axis, d in enumerate(shape):
            sizes.setdefault(f"axis {axis} of an array f closes over {shape}", int(d))
    return sizes


def diagnose_point(p: Prepared, verdict, F, dynamic) -> tuple[list[Slip], list[str]]:
    """The diagnosis and the location summary of a failing point (``verdict``: full mode's
    ``PointVerdict``; ``F``: the exact reference)."""
    with standard_promotion():  # the checker's own programs (f was traced when prepared)
        return _diagnose_point(p, verdict, F, dynamic)


def _diagnose_point(p: Prepared, verdict, F, dynamic) -> tuple[list[Slip], list[str]]:
    args = p.static.args(dynamic)
    try:
        planted = candidates(p, dynamic)
        unplanted = [Slip(c.kind, c.sentence) for c in planted if c.kind == "incomplete"]
        planted = [c for c in planted if c.kind != "incomplete"]
    except Unplanted as e:
        planted, unplanted = [], [Slip("incomplete", str(e))]
    slips = diagnose(verdict.got, F, verdict.allowed, verdict.compared, x_spec=p.x_spec,
                     out_spec=p.out_spec, sizes=sizes_of(p, args),
                     candidates=planted) + unplanted
    return slips, where(verdict.got, F, verdict.allowed, verdict.compared, p.x_spec, p.out_spec)
