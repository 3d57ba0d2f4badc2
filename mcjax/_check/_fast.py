r"""Fast mode: random projections, for parameter sets too big to materialise a Jacobian.

At each point (``x`` itself, then ``x`` moved by 5% of each coordinate's scale) one random
unit cotangent ``u`` (Gaussian; ``u = 1`` for a scalar ``f``) gives

- ``u^T J`` of the derivative under test (``.vjp`` of a structured Jacobian, a contraction of
  a dense array, or the VJP function itself) and of ``jax.vjp(f)``, compared entry by entry
  with the thresholds of full mode: for a scalar ``f`` that is the whole gradient;
- the projections ``u^T J v_k`` onto ``k`` random unit directions ``v_k``, with the threshold
  the entry-wise one implies, ``sum_j allowed_j |v_kj|``.

Everything works leaf by leaf on the argument's pytree, in each leaf's own shape and dtype:
the program never lays the leaves end to end (one vector of the argument's total size cost
more memory passes than the gradients' matmuls), and nothing of size ``m n`` is ever built.
A leaf is seen as a matrix ``(rows, cols)`` (its last axis against the others); a random
sign pattern on it is an outer product ``r c^T`` of two hashed sign vectors, which costs
``rows + cols`` hashes instead of ``rows cols`` and turns a leaf's ``k`` projections into one
matrix product ``w @ C`` with a ``(cols, k)`` sign matrix.  The entries of ``r c^T`` are
pairwise independent signs, so a projection's variance is what independent signs give.

Cost per point: one evaluation of the derivative under test and one ``jax.vjp`` of ``f``
(each about one gradient), plus two passes over ``u^T J`` of each side (one fused reduction
for the entry-wise comparison, one matrix product for the projections); the extra point
adds one reduction and one elementwise pass over the argument.  The check at the points it
runs is one jitted program, cached on ``(f, derivative)`` and the shapes.

Which points run (``_which``): for a scalar ``f``, ``x`` alone (1.6 gradients of FLOPs on a
1M-parameter MLP), then the point near ``x`` only when ``x`` could hide a slip (a constant or
symmetric leaf, a leaf the reference's gradient is 0 on) or fails, in a second program that
also returns the failing points' ``u^T J`` for the worst entries and the diagnosis
(``_fast_diagnose``); for a vector ``f``, every point (each draws its own ``u``).

A wrong entry ``(i, j)`` by ``E`` shows in ``(u^T J)_j`` as ``u_i E``: for a scalar ``f``
(``u = 1``) it is caught whenever ``|E|`` exceeds its threshold.  For ``m`` outputs
``u_i ~ N(0, 1/m)``, so one point misses it with probability
``P(|Z| < sqrt(m) allowed / |E|) ~= 0.8 sqrt(m) allowed / |E|`` and ``p`` points with that
probability to the power ``p``.  For a scalar ``f`` a second point adds nothing to that: it
only helps against an error that vanishes at ``x`` itself, which is what a special ``x`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mcjax._check import _fast_diagnose
from mcjax._check._compare import Comparison, Threshold, nonfinite, worst_entries
from mcjax._check._diagnose import sizes_of
from mcjax._check._flat import FlatSpec
from mcjax._check._problem import Prepared, not_compared_note
from mcjax._check._report import Report, header
from mcjax._check._report_parts import Projection, Slip
from mcjax._check._under_test import DerivativeUnderTest, terms_of
from mcjax._core._conventions import standard_promotion
from mcjax._core._tolerance import FAST_PERTURBATION, FAST_POINTS
from mcjax._program._compile import compiler_options, run_compiled

# what a hash is for: its salt keeps the streams of the points, leaves and uses apart
_PERTURB, _ROWS, _COLS, _COTANGENT = 1, 2, 3, 4


def hash_bits(key, n: int):
    """32 pseudo-random bits per index ``0..n-1`` (a murmur3-style finaliser): cheap and jittable.

    ``key`` is a ``uint32`` (traced or not).  ``jax.random`` on a CPU costs more than a gradient
    of a 1M-parameter MLP; directions only need independent-looking signs.
    """
    x = jnp.arange(n, dtype=jnp.uint32) * jnp.uint32(0x9E3779B1) + key
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _key(seed, use: int, point, leaf: int):
    """A ``uint32`` key per (seed, use, point, leaf); ``seed`` and ``point`` may be traced."""
    mixed = hash_bits(seed.astype(jnp.uint32) * jnp.uint32(0x27D4EB2F)
                      + jnp.uint32((use * 0x165667B1 + leaf * 0x61C88647) % 2**32), 1)[0]
    return mixed ^ (jnp.asarray(point, jnp.uint32) * jnp.uint32(0x85EBCA77))


def _signs(key, n: int, k: int, dtype):
    """``(n, k)`` random signs."""
    return jnp.where(hash_bits(key, n * k) >> 31 == 1, 1.0, -1.0).astype(dtype).reshape(n, k)


def _as_matrix(shape: tuple[int, ...]) -> tuple[int, int]:
    """A leaf as ``(rows, cols)``: its last axis against the others."""
    return (math.prod(shape[:-1]), shape[-1]) if shape else (1, 1)


def _moved(x_leaves, seed, point):
    """Each leaf moved by ``FAST_PERTURBATION`` times each coordinate's scale
    ``max(|x_j|, rms of its leaf)`` (1 for an all-zero leaf), with random signs ``r c^T``."""
    out = []
    for j, leaf in enumerate(x_leaves):
        rows, cols = _as_matrix(leaf.shape)
        x = leaf.reshape(rows, cols)
        rms = jnp.sqrt(jnp.vdot(x, x).real / x.size)  # a dot: one vectorised pass
        rms = jnp.where(rms > 0, rms, jnp.ones_like(rms))
        r = _signs(_key(seed, _PERTURB, point, 2 * j), rows, 1, x.dtype)
        c = _signs(_key(seed, _PERTURB, point, 2 * j + 1), cols, 1, x.dtype)
        step = jnp.asarray(FAST_PERTURBATION, x.dtype) * jnp.maximum(jnp.abs(x), rms)
        out.append((x + step * (r * c.T)).reshape(leaf.shape))
    return out


def _cotangent(out_leaves, seed, point):
    """A random unit cotangent, leaf by leaf (Box-Muller on hashed bits); 1 for a scalar f."""
    if sum(o.size for o in out_leaves) == 1:
        return [jnp.ones(o.shape, o.dtype) for o in out_leaves]
    zs = []
    for k, o in enumerate(out_leaves):
        bits = hash_bits(_key(seed, _COTANGENT, point, k), 2 * o.size)
        a = (bits[: o.size] >> 8).astype(jnp.float32) / 2**24 + 2.0**-25
        b = (bits[o.size :] >> 8).astype(jnp.float32) / 2**24
        zs.append(jnp.sqrt(-2 * jnp.log(a)) * jnp.cos(2 * jnp.pi * b))
    norm = jnp.sqrt(sum(jnp.sum(z * z) for z in zs))
    return [(z / norm).astype(o.dtype).reshape(o.shape) for z, o in zip(zs, out_leaves)]


def _both_sides(static, x_spec, out_spec, dynamic, seed, point):
    """``u^T J`` at ``point`` of the derivative under test and of ``jax.vjp(f)``, leaf by leaf."""
    args = static.args(dynamic)
    x_leaves, x_def = jax.tree_util.tree_flatten(static.x_of(args))
    if point:
        x_leaves = _moved(x_leaves, seed, point)
    args = static.with_x(args, x_def.unflatten(x_leaves))

    def f_of_x(x):
        return static.f_of(static.with_x(args, x))

    out, pullback = jax.vjp(f_of_x, static.x_of(args))
    u = _cotangent(jax.tree_util.tree_leaves(out), seed, point)
    (ref,) = pullback(out_spec.treedef.unflatten(u))
    ref = jax.tree_util.tree_leaves(ref)
    got = DerivativeUnderTest(static, args, x_spec, out_spec).vjp_leaves(u)
    return [g.astype(r.dtype) for g, r in zip(got, ref)], ref


def _largest(ref, got):
    """``max |ref|`` and ``max |got - ref|`` in one pass (NaN wins, as in ``jnp.max``)."""
    zero = jnp.zeros((), ref.dtype)
    return lax.reduce((jnp.abs(ref), jnp.abs(got - ref)), (zero, zero),
                      lambda a, b: (jnp.maximum(a[0], b[0]), jnp.maximum(a[1], b[1])),
                      tuple(range(ref.ndim)))


def _projections(leaves, seed, point, directions):
    """``sum_j w_j v_kj`` over every leaf, for the ``k`` sign directions ``r c^T`` of each leaf."""
    total = 0
    for j, w in enumerate(leaves):
        rows, cols = _as_matrix(w.shape)
        R = _signs(_key(seed, _ROWS, point, j), rows, directions, w.dtype)
        C = _signs(_key(seed, _COLS, point, j), cols, directions, w.dtype)
        total = total + jnp.sum(R * (w.reshape(rows, cols) @ C), axis=0)  # sum_ab R_ak w_ab C_bk
    return total


def _summary(got, ref, seed, point, directions):
    leaf_ref, leaf_err = (jnp.stack(v) for v in zip(*(_largest(r, g) for r, g in zip(ref, got))))
    return {"leaf_ref": leaf_ref, "leaf_err": leaf_err,
            "proj_ref": _projections(ref, seed, point, directions),
            "proj_got": _projections(got, seed, point, directions)}


def _special(x_leaves):
    """Per leaf of ``x``: ``[constant, symmetric]``.  Constant: all entries equal (zeros, ones:
    fresh biases and gains; a single entry only when it is 0 or +-1); symmetric: a leaf whose
    last two axes are square and equal to its transpose (an identity).  Such an ``x`` can hide a
    slip (a bias left out of the backward pass is invisible at ``b = 0``, ``W`` used where
    ``W^T`` was due at ``W = W^T``)."""
    flags = []
    for leaf in x_leaves:
        lo, hi = jnp.min(leaf), jnp.max(leaf)
        constant = (lo == hi) & ((leaf.size > 1) | (hi == 0) | (jnp.abs(hi) == 1))
        square = leaf.ndim >= 2 and leaf.shape[-1] == leaf.shape[-2] > 1
        symmetric = jnp.all(leaf == jnp.swapaxes(leaf, -1, -2)) if square else jnp.bool_(False)
        flags.append(jnp.stack([constant, symmetric]))
    return jnp.stack(flags)


def _program(statics, consts, dynamic, seed):
    """The check at the points ``which`` (their indices: 0 is ``x``): each leaf's largest
    reference and error and the projections; with point 0, what makes ``x`` special
    (``_special``); and ``u^T J`` of both sides at the points ``keep`` (a failing check's, for
    its worst entries and diagnosis)."""
    static, x_spec, out_spec, which, directions, keep = statics
    static = static.bind(consts)
    sides = {q: _both_sides(static, x_spec, out_spec, dynamic, seed, q)
             for q in dict.fromkeys(which + keep)}
    results = [_summary(*sides[q], seed, q, directions) for q in which]
    out = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *results) if results else {}
    if 0 in which:
        out["special"] = _special(jax.tree_util.tree_leaves(static.x_of(static.args(dynamic))))
    if keep:
        out["vectors"] = [sides[q] for q in keep]
    return out


def _flat(leaves) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in leaves])


def _failures(p: Prepared, allowed_leaf, failing: list[int], vectors) -> tuple[int, list, list,
                                                                               list]:
    """Entries over their threshold, NaN/Inf sentences and the worst entries of the failing
    points, from their ``u^T J`` vectors (``(got, ref)`` leaf by leaf), which come back as
    float64 for the diagnosis."""
    problems, worst, violations, where = [], [], 0, None
    vectors = [tuple([np.asarray(leaf, np.float64) for leaf in side] for side in sides)
               for sides in vectors]
    for row, (q, sides) in enumerate(zip(failing, vectors)):
        got, ref = (_flat(side) for side in sides)
        allowed = np.repeat(allowed_leaf[row], p.x_spec.sizes)
        violations += int(np.sum(~(np.abs(got - ref) <= allowed)))
        for side, values in (("the derivative under test", got), ("jax.vjp", ref)):
            if bad := int(np.sum(~np.isfinite(values))):
                problems.append(f"u^T J of {side} has {bad} NaN or Inf entries at point {q}")
        if q == failing[0]:
            one = FlatSpec(jax.tree_util.tree_structure(0), ((),), (p.dtype,), ("",))
            worst = worst_entries(got[None], ref[None], allowed[None], np.ones((1, got.size), bool),
                                  one, p.x_spec)
            where = nonfinite("u^T J of the derivative under test", got[None], one, p.x_spec)
    return violations, problems + ([where] if where else []), worst, vectors


@dataclass(frozen=True)
class FastVerdict:
    """Fast mode's verdict over its points."""

    ok: bool
    threshold: Threshold
    comparisons: tuple[Comparison, ...]
    projections: tuple[Projection, ...]
    problems: tuple[str, ...]
    worst: tuple
    notes: tuple[str, ...] = ()
    points: int = 1
    slips: tuple[Slip, ...] = ()
    where: tuple[str, ...] = ()


def _evaluate(p: Prepared, which: tuple[int, ...], directions: int, seed,
              keep: tuple[int, ...] = (), once: bool = False) -> dict:
    """The compiled check at the points ``which`` (one row per point), and ``u^T J`` of both
    sides at the points ``keep``, as NumPy arrays.  ``once``: a failing check's program, which
    runs once, compiled for compile time (``compiler_options``)."""
    with standard_promotion():  # the checker's own computations (f was traced when prepared)
        return jax.device_get(run_compiled(_program, (p.static, p.x_spec, p.out_spec, which,
                                                      directions, keep),
                                           p.static.consts(), p.dynamic, seed,
                                           compiler_options=compiler_options() if once else None))


def _special_leaves(p: Prepared, v: dict) -> list[str]:
    """Why ``x`` could hide a slip, leaf by leaf (empty for a generic ``x``)."""
    reasons = []
    for j, name in enumerate(p.x_spec.leaf_names):
        constant, symmetric = v["special"][j]
        if constant:
            reasons.append(f"{name} is constant")
        elif symmetric:
            reasons.append(f"{name} is symmetric")
        if v["leaf_ref"][0, j] == 0:
            reasons.append(f"the reference's u^T J is 0 on {name}")
    return reasons


def _which(p: Prepared, points: int | None) -> tuple[tuple[int, ...], bool]:
    """The points to check first, and whether a second point waits on the first's outcome.

    For a scalar ``f`` (``u = 1``) the comparison at ``x`` is exhaustive: every entry of the
    gradient against its threshold, nothing sampled, so a second point cannot catch more of
    an error that shows at ``x``.  It only helps where the error vanishes at ``x`` itself,
    which a generic ``x`` does not do for a nonzero error (the set where all ``n`` entries of
    a nonzero analytic error vanish has measure zero) but a special one does: a constant leaf
    (``b = 0``, a gain of 1), a symmetric square leaf (an identity) or a leaf the reference's
    gradient is 0 on.  So ``x`` alone is checked, and the point near it too when ``x`` is
    special or fails (for the kink note and the diagnosis).  For a vector ``f`` each point
    draws its own cotangent ``u`` and its miss probability multiplies: every point runs.
    ``points`` given by the caller: exactly those points."""
    if points is not None:
        return tuple(range(points)), False
    if p.out_spec.size == 1:
        return (0,), True
    return tuple(range(FAST_POINTS)), False


def run(p: Prepared, points: int | None, directions: int, seed: int) -> FastVerdict:
    """Fast mode at ``points`` points (None: adaptive, see ``_which``): the pieces of a
    report."""
    seed_array = jnp.asarray(seed, jnp.uint32)
    terms = terms_of(p, contraction=True)
    which, adaptive = _which(p, points)
    v = _evaluate(p, which, directions, seed_array)
    threshold = Threshold.of(p.dtype, terms, f"jax.vjp in {p.dtype}", *p.tolerance)
    eps = float(jnp.finfo(v["leaf_ref"].dtype).eps)

    def allowed_of(leaf_ref):
        # each leaf's threshold, outside the program: a caller's rtol and atol compile nothing new
        leaf_ref = np.asarray(leaf_ref, np.float64)
        scales = np.maximum(leaf_ref, eps * leaf_ref.max(axis=-1, keepdims=True))
        return threshold.rtol * scales + threshold.atol

    def fails(row) -> bool:  # NaN fails every comparison
        return not np.all(v["leaf_err"][row] <= v["allowed_leaf"][row])

    v["allowed_leaf"] = allowed_of(v["leaf_ref"])
    special = _special_leaves(p, v) if 0 in which else []
    notes = []
    kept = {}  # point -> u^T J of both sides, leaf by leaf (a failing point's)
    if adaptive and (special or fails(0)):
        rest = tuple(range(1, FAST_POINTS))
        keep = ((0,) if fails(0) else ()) + rest  # the second point may fail: its vectors too
        more = _evaluate(p, rest, directions, seed_array, keep, once=fails(0))
        kept = dict(zip(keep, more.pop("vectors")))
        more["allowed_leaf"] = allowed_of(more["leaf_ref"])
        v = {k: np.concatenate([v[k], more[k]]) for k in more}
        which = tuple(range(FAST_POINTS))
        if special and not fails(0):
            notes.append(f"the point could hide a slip ({'; '.join(special[:3])}"
                         f"{'; ...' if len(special) > 3 else ''}): checked at a point near it too")
    sizes = np.asarray(p.x_spec.sizes, np.float64)
    scale = 1 / np.sqrt(p.x_spec.size)  # each direction's entries are +-scale
    projections = []
    for row, q in enumerate(which):
        allowed = float(np.sum(sizes * v["allowed_leaf"][row]) * scale)
        projections.extend(Projection(q, k, float(v["proj_ref"][row, k]) * scale,
                                      float(v["proj_got"][row, k]) * scale, allowed)
                           for k in range(directions))
    failing = [q for row, q in enumerate(which)
               if fails(row) or not all(pr.ok for pr in projections if pr.point == q)]
    rows = [which.index(q) for q in failing]
    if missing := tuple(q for q in failing if q not in kept):
        kept.update(zip(missing, _evaluate(p, (), directions, seed_array, missing,
                                           once=True)["vectors"]))
    violations, problems, worst, vectors = (
        _failures(p, v["allowed_leaf"][rows], failing, [kept[q] for q in failing]) if failing
        else (0, [], [], []))
    leaf_scale = np.maximum(v["leaf_ref"], 1e-300)
    comparison = Comparison(
        "jax.vjp (u^T J)", float(v["leaf_err"].max()), float((v["leaf_err"] / leaf_scale).max()),
        float((v["leaf_err"] / v["allowed_leaf"]).max()), violations, len(which) * p.x_spec.size,
        0, violations == 0 and not problems)
    if failing == [0] and len(which) > 1 and p.static.switches and not problems:
        notes.append(f"only the point itself fails, the {len(which) - 1} nearby point(s) pass, and f has "
                     "switches (max, min, abs, where, ...): the failing entries may sit at a kink "
                     "of f, where fast mode accepts JAX's own value only; mode='full' (on a "
                     "smaller instance) reads the kinks from f and also accepts the one-sided "
                     "derivatives and their average")
    slips, where = (), ()
    if failing:
        slips, where = _fast_diagnose.diagnose(
            vectors, v["allowed_leaf"][rows], p.x_spec, sizes_of(p, p.static.args(p.dynamic)),
            scalar=p.out_spec.size == 1)
    return FastVerdict(not failing, threshold, (comparison,), tuple(projections),
                       tuple(problems), tuple(worst), tuple(notes), len(which), tuple(slips),
                       tuple(where))


def report(p: Prepared, points: int | None, directions: int, seed: int) -> Report:
    """Fast mode's report (``points`` None: ``x``, and a point near it when needed)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        v = run(p, points, directions, seed)
    notes = ("fast mode: the reference is jax.vjp in f's own dtype; compared are u^T J entry by "
             f"entry and {directions} projections u^T J v per point",) + not_compared_note(p) + v.notes
    return Report(ok=v.ok, **header(p, "fast", v.points, v.threshold), comparisons=v.comparisons,
                  projections=v.projections, worst=v.worst, problems=v.problems, notes=notes,
                  slips=v.slips, diagnosis=tuple(s.sentence for s in v.slips), where=v.where)
