"""Full mode: materialise the derivative and judge every entry.

One jitted program per set of checks computes, at every point (vmapped), the derivative under
test as an ``(m, n)`` matrix, ``jax.jacfwd`` and ``jax.jacrev`` in ``f``'s dtype, ``f``'s
one-sided derivatives where it switches branch (``mcjax._check._kinks``), and in float64
(``jax_enable_x64`` is switched on for the duration) the finite-difference ladder and the
Taylor ladder.  Checks of different shapes go in one program too, so checking a rule at many
points over several shapes compiles once.  The program is keyed on the traced ``f`` and
derivative (``Keyed``), so it is reused exactly when the code is unchanged.

The verdict is assembled on the host, entry by entry:

- an entry where ``f`` is differentiable is judged by the exact references (``jax.jacfwd``,
  ``jax.jacrev``) and by finite differences where they resolve it;
- an entry at a kink (its left and right one-sided derivatives differ) passes when it is
  JAX's own value, the left or the right derivative, or their average; where ``f`` jumps,
  JAX's value alone is accepted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check import _kinks, _taylor
from mcjax._check._compare import (
    Comparison,
    Entry,
    Threshold,
    block_scales,
    compare,
    nonfinite,
    worst_entries,
)
from mcjax._check._diagnose import diagnose_point
from mcjax._check._flat import entry_label
from mcjax._check._problem import (
    Prepared,
    cast_floating,
    flat_at,
    flat_function,
    jacobian_of,
    not_compared_note,
    reference_key,
)
from mcjax._check._references import (
    autodiff_program,
    coordinate_scales,
    fd_analyse,
    stencil_program,
    taylor_steps,
)
from mcjax._check._report import Report, header
from mcjax._check._report_parts import KinkEntry, Kinks, Later
from mcjax._check._rule_free import user_rules
from mcjax._check._under_test import DerivativeUnderTest, terms_of
from mcjax._core._compat import enable_x64
from mcjax._core._conventions import standard_promotion
from mcjax._core._tolerance import FAST_PERTURBATION, KINK_CONVENTIONS, ROUNDING_SAFETY, is_half
from mcjax._program._compile import compiler_options, run_compiled
from mcjax._program._walk import CUSTOM_RULES, callee_name, equations, from_jax, user_place

_quiet = np.errstate(invalid="ignore", divide="ignore", over="ignore")  # NaN is a finding


# -- the program ---------------------------------------------------------------------------
def _native(static, x_spec, out_spec, dynamic, also=()):
    """The derivative under test in ``f``'s dtype, and the exact references: in the same
    dtype, or in float32 for a 16-bit ``f`` (whose own autodiff rounds as much as the
    derivative under test).  ``also``: the statics of other derivatives of the same ``f``,
    judged against the same references (``"also0"``, ...)."""
    args = static.args(dynamic)
    x = x_spec.flatten(static.x_of(args))
    got = DerivativeUnderTest(static, args, x_spec, out_spec).matrix(x.dtype)
    others = [DerivativeUnderTest(s, args, x_spec, out_spec).matrix(x.dtype) for s in also]
    refs = {}
    if is_half(got.dtype):  # JAX's own Jacobian in f's dtype measures the rounding there
        refs["jacobian_half"] = _jacobian_in(static, x_spec, out_spec, dynamic, got.dtype)
        args = cast_floating(args, jnp.float32)
        x = x_spec.flatten(static.x_of(args), jnp.float32)
    f_flat = flat_function(static, args, x_spec, out_spec)
    refs.update(autodiff_program(f_flat, x, static.reverse_only))
    if static.switches:
        refs["right"], refs["left"], refs["together"], refs["together_left"] = \
            _kinks.one_sided(f_flat, x)
    dtype = refs["jacrev"].dtype
    return {"got": got.astype(dtype), **{f"also{k}": o.astype(dtype) for k, o in
                                         enumerate(others)}, **refs}


def _jacobian_in(static, x_spec, out_spec, dynamic, dtype):
    """``f``'s Jacobian by autodiff with every floating argument cast to ``dtype``."""
    f_flat, x = flat_at(static, x_spec, out_spec, dynamic, dtype)
    return jacobian_of(static, f_flat)(x)


def _reference(static, x_spec, out_spec, dynamic, normal):
    f_flat, x = flat_at(static, x_spec, out_spec, dynamic, jnp.float64)
    return {"stencils": stencil_program(f_flat, x, x_spec, out_spec.size, normal, static.switches)}


def _over_points(fn, *batched):
    """``jax.vmap(fn)`` over the leading (points) axis; a single point is run unbatched (and
    given the axis back), which traces and compiles in about half the time."""
    if jax.tree_util.tree_leaves(batched)[0].shape[0] != 1:
        return jax.vmap(fn)(*batched)
    out = fn(*jax.tree_util.tree_map(lambda a: a[0], batched))
    return jax.tree_util.tree_map(lambda a: a[None], out)


def _point(static, x_spec, out_spec, stencils, also, dynamic, normal):
    values = _native(static, x_spec, out_spec, dynamic, also)
    # f's rounding, measured: float32 against float64 autodiff (one is the native one); a
    # 16-bit f's was measured in _native, in its own dtype against float32
    for dtype, name in ((jnp.float32, "jacobian32"), (jnp.float64, "jacobian64")):
        if values["jacrev"].dtype != dtype and "jacobian_half" not in values and not (
                dtype == jnp.float32 and static.no_float32) and not static.draws:
            values[name] = _jacobian_in(static, x_spec, out_spec, dynamic, dtype)
    if static.switches and "jacobian_half" not in values and not static.no_float32:
        # a tie in one precision that rounding breaks in the other: the two take other
        # branches, and their difference is no rounding of the derivative
        sides = [_kinks.switch_sides(*flat_at(static, x_spec, out_spec, dynamic, dtype))[1]
                 for dtype in (jnp.float32, jnp.float64)]
        values["branches_differ"] = _kinks.crosses(*sides)
    if stencils:
        values.update(_reference(static, x_spec, out_spec, dynamic, normal))
    return values


def _programs(groups, consts, dynamics, normals):
    groups = tuple((g[0].bind(c[0]), *g[1:4], tuple(s.bind(k) for s, k in zip(g[4], c[1])))
                   for g, c in zip(groups, consts))
    return [_over_points(lambda d, t, g=g: _point(*g, d, t), dynamic, normal)  # pyright: ignore[reportCallIssue]
            for g, dynamic, normal in zip(groups, dynamics, normals)]


def run(groups: list[tuple[Prepared, list[tuple]]], seed: int, stencils: bool = True,
        also: list[tuple[Prepared, ...]] | None = None) -> list[list[dict]]:
    """Run every group's points in one program; per group, per point, NumPy dicts.

    ``stencils=False`` leaves out finite differences and the Taylor test (``mcjax verify``:
    the registry's functions are plain JAX, whose autodiff is exact).  ``also``: per group,
    other derivatives of the same ``f`` at the same points (their matrices ``"also0"``, ...)."""
    also = also or [()] * len(groups)
    statics = tuple((p.static, p.x_spec, p.out_spec, stencils, tuple(q.static for q in more))
                    for (p, _), more in zip(groups, also))
    # NumPy, not jnp: every eager jnp call would compile a little program of its own
    dynamics = [tuple(np.stack([np.asarray(leaf) for leaf in leaves]) for leaves in zip(*points))
                for _, points in groups]
    rng = np.random.default_rng(seed)
    normals = [rng.standard_normal((len(points), p.x_spec.size)) for p, points in groups]
    # the checker's own program computes across dtypes; f and the derivative were traced
    # (under the user's promotion rules) when the check was prepared
    with enable_x64(True), standard_promotion():
        consts = [(p.static.consts(), tuple(q.static.consts() for q in more))
                  for (p, _), more in zip(groups, also)]
        out = jax.device_get(run_compiled(_programs, statics, consts, dynamics, normals,
                                          compiler_options=compiler_options()))
    return [[jax.tree_util.tree_map(lambda a: np.asarray(a)[i], result) for i in range(len(points))]
            for result, (_, points) in zip(out, groups)]


# -- the verdict at one point ------------------------------------------------------------------
@dataclass(frozen=True)
class PointVerdict:
    """Full mode's verdict at one point, and the matrices the report and diagnosis use."""

    ok: bool
    comparisons: tuple[Comparison, ...]
    taylor: _taylor.Taylor | None  # None without the stencils
    kinks: Kinks
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    worst: tuple[Entry, ...]
    got: np.ndarray  # (m, n), the derivative under test
    reference: np.ndarray  # the reference of the first failing comparison (else jax.jacfwd)
    exact: np.ndarray  # the exact reference (jax.jacfwd, or jax.jacrev for a custom_vjp f)
    allowed: np.ndarray  # each entry's threshold
    compared: np.ndarray  # the entries that reference judged
    failed: bool  # some comparison (not only the Taylor test or a kink) failed


def reference_words(precision: str, dtype: str, stencils: bool = True) -> str:
    """The references in words: autodiff (in float32 for a 16-bit ``f``) and, with the
    stencils, finite differences."""
    exact = "jax.jacfwd, jax.jacrev" + (" in float32" if is_half(dtype) else "")
    return f"{exact}, finite differences in {precision}" if stencils else (
        f"{exact} (no finite differences)")


def _allowed(p: Prepared, values: dict, F, threshold: Threshold):
    """``(scale, allowed, at_kink, jumps)``: each entry's block scale and threshold, and the
    entries at a kink of ``f`` or where it jumps.

    The threshold is ``rtol`` times the block's scale, widened by the rounding loss ``f``
    shows in that block: autodiff in float32 against float64, scaled to the dtype (for a
    16-bit ``f``, its own autodiff against float32).  Entries at
    kinks are left out of that measurement: there the two precisions may take different
    sides of a switch, which is no rounding of the derivative.
    """
    eps = float(jnp.finfo(p.dtype).eps)
    scale = block_scales(F, p.out_spec, p.x_spec, eps)
    at_kink, jumps = _kinks_of(values, F, threshold.rtol * scale + threshold.atol)
    if "jacobian_half" in values:  # measured in f's own 16-bit dtype, against float32
        low, high, factor, safety = values["jacobian_half"], values["jacrev"], 1.0, 2.0
    else:  # float32 against float64, scaled to f's dtype
        low = values.get("jacobian32", values["jacrev"])
        high = values.get("jacobian64", values["jacrev"])
        factor, safety = eps / float(np.finfo(np.float32).eps), ROUNDING_SAFETY
    loss = np.abs(np.asarray(low, np.float64) - np.asarray(high, np.float64))
    loss = np.where(np.isfinite(loss) & ~at_kink & ~jumps, loss, 0.0)
    if bool(values.get("branches_differ", False)):  # other branches, not rounding: unmeasured
        loss = np.zeros_like(loss)
    rounding = block_scales(loss * factor, p.out_spec, p.x_spec, 0.0)
    if "rtol" in threshold.given:  # the caller's rtol replaces the policy's, rounding and all
        rounding = np.zeros_like(rounding)
    allowed = threshold.rtol * scale + safety * rounding + threshold.atol
    return scale, allowed, at_kink, jumps


def _fd_notes(fd, include) -> list[str]:
    notes = []
    if (undefined := int((include & ~fd.defined).sum())):
        notes.append(f"finite differences have no usable step at {undefined} entries (each "
                     "stencil crosses a kink or leaves f's domain): autodiff alone judges them")
    if (rough := int((include & fd.defined & ~fd.resolved).sum())):
        notes.append(f"finite differences cannot resolve {rough} entries (cancellation, "
                     "overflow, or f too rough for any step): autodiff alone judges them")
    return notes


def judge(p: Prepared, values: dict, terms: int, precision: str, kink_convention) -> PointVerdict:
    """The verdict at one point."""
    G, F, B = (np.asarray(values[k], np.float64) for k in ("got", "jacfwd", "jacrev"))
    threshold = Threshold.of(p.dtype, terms, reference_words(precision, p.dtype), *p.tolerance)
    forward_only = bool(values.get("forward_only", False))
    exact = [("jax.jacrev", B)] if p.static.reverse_only else [("jax.jacfwd", F)] if \
        forward_only else [("jax.jacfwd", F), ("jax.jacrev", B)]
    lone = None  # one of JAX's two modes is not finite where the other is: the other judges
    if len(exact) == 2 and np.all(np.isfinite(G)):
        finite = [bool(np.all(np.isfinite(M))) for _, M in exact]
        if finite.count(True) == 1:
            (kept, M), (broken, _) = exact[finite.index(True)], exact[finite.index(False)]
            lone = (f"{broken} has NaN or Inf entries where {kept} is finite (a 0 · inf in "
                    f"JAX's own rule of some primitive of f): {kept} is the exact reference")
            exact, F, B = [(kept, M)], M, M
    problems = [msg for name, M in [("the derivative under test", G)] + exact
                if (msg := nonfinite(name, M, p.out_spec, p.x_spec))]
    scale, allowed, at_kink, jumps = _allowed(p, values, F, threshold)
    include = ~at_kink & ~jumps & np.isfinite(F) & np.isfinite(B)
    comparisons = [compare(name, G, M, allowed, scale, include) for name, M in exact]
    kinks = _kink_verdict(G, F, B, values, at_kink, jumps, allowed, p, kink_convention)
    notes, taylor, fd, rule_blamed = [], None, None, False
    other_draws = p.static.draws and np.dtype(p.dtype) != np.float64
    if other_draws:  # finite differences evaluate f in float64, where it draws other numbers
        notes.append("f draws random numbers in its arguments' dtype: in float64, where finite "
                     "differences and the Taylor test evaluate it, it draws others, so autodiff "
                     "in f's own dtype judges alone")
    if "stencils" in values and not other_draws:
        fd = fd_analyse(values["stencils"], scale, precision)
        comparisons.append(compare("finite differences", G, fd.value, allowed + fd.error, scale,
                                   include & fd.resolved))
        taylor = _taylor_verdict(values["stencils"], G, allowed, precision,
                                 bool(at_kink.any() or jumps.any()),
                                 rough=bool((include & fd.defined & ~fd.resolved).any()))
        notes = _fd_notes(fd, include)
        rule_notes, rule_blamed = _rules_departing(p, exact, G, fd, allowed, include)
        notes += rule_notes
    if lone:
        notes.append(lone)
    if p.static.reverse_only:
        notes.append("f calls a custom_vjp function, which forward mode cannot differentiate: "
                     "jax.jacrev is the exact reference")
    if forward_only:
        notes.append("JAX's reverse mode cannot differentiate f (a primitive it cannot "
                     "transpose): jax.jacfwd is the exact reference")
    if bool(values.get("branches_differ", False)):
        notes.append("f takes other branches in float32 and float64 here (a tie that rounding "
                     "breaks): its rounding is not measured, the threshold is the policy's alone")
    # the references that fail it run a wrong rule: no slip of the derivative's to diagnose,
    # and no failure on their authority where finite differences and the Taylor test, which
    # evaluate f itself, agree with the derivative under test
    failed_only_by_rule = rule_blamed and all(c.ok for c in comparisons
                                              if c.reference == "finite differences")
    outvoted = failed_only_by_rule and (taylor is None or taylor.ok)
    if outvoted:
        names = {name for name, _ in exact}
        comparisons = [c if c.reference not in names or c.ok else
                       dataclasses.replace(c, reference=f"{c.reference} (runs the rule)")
                       for c in comparisons]
        notes.insert(0, "the references disagree: " + notes.pop(notes.index(rule_notes[0]))
                     + "; the verdict follows finite differences and the Taylor test")
    binding = [c for c in comparisons if not (outvoted and c.reference.endswith("(runs the rule)"))]
    failed = next((c for c in binding if not c.ok), None)
    by_fd = failed is not None and failed.reference == "finite differences"
    R, mask = (fd.value, include & fd.resolved) if by_fd and fd is not None else (F, include)
    worst = worst_entries(G, R, allowed, mask, p.out_spec, p.x_spec) if failed else []
    ok = (not problems and all(c.ok for c in binding) and kinks.ok
          and (taylor is None or taylor.ok))
    return PointVerdict(ok, tuple(comparisons), taylor, kinks, tuple(problems), tuple(notes),
                        tuple(worst), G, R, B if p.static.reverse_only else F, allowed, mask,
                        failed is not None and not failed_only_by_rule)


def _rules_departing(p: Prepared, exact, G, fd, allowed, include) -> tuple[list[str], bool]:
    """Where ``f`` calls custom rules (``jax.custom_jvp``/``custom_vjp``), JAX's derivative of
    ``f`` runs them while finite differences only evaluate ``f``: an exact reference that
    departs from finite differences points at a rule, which the note names.  Returns the
    note and whether the derivative under test agrees with finite differences where the
    reference departs (then the rule, not the derivative, is to diagnose)."""
    judged = include & fd.resolved
    if not judged.any():
        return [], False
    slack = allowed + fd.error
    off = [(name, judged & ~(np.abs(M - fd.value) <= slack)) for name, M in exact]
    off = [(name, bad) for name, bad in off if bad.any()]
    if not off:
        return [], False
    rules = user_rules(p.f_jaxpr.jaxpr)
    if not rules:  # JAX's own: a stop_gradient, a library's rule; named, the verdict stands
        suspects = _suspects(p.f_jaxpr.jaxpr)
        bad = off[0][1]
        return ([f"the references disagree: {' and '.join(n for n, _ in off)} "
                 f"depart{'s' if len(off) == 1 else ''} from finite differences at "
                 f"{int(bad.sum())} of {int(judged.sum())} entries; f calls "
                 f"{', '.join(suspects)}, whose derivative JAX defines (finite differences "
                 "only evaluate f)"] if suspects else []), False
    written = ", ".join(r.words() + (f" called in {r.where}" if r.where else "")
                        + (f" ({', '.join(r.functions)})" if r.functions else "") for r in rules)
    bad = off[0][1]
    yours = bool(np.all((np.abs(G - fd.value) <= slack)[bad]))
    return [f"{' and '.join(n for n, _ in off)} depart{'s' if len(off) == 1 else ''} from "
            f"finite differences at {int(bad.sum())} of {int(judged.sum())} entries, and f "
            f"calls {written}: JAX differentiates f through the rule, finite differences "
            "only evaluate f, so the rule is wrong or differentiates something else on purpose "
            "(mcjax.check_rule checks it)"
            + ("; the derivative under test agrees with finite differences there" if yours
               else "")], yours


def _suspects(jaxpr) -> list[str]:
    """What in ``f`` JAX differentiates otherwise than its values change: ``stop_gradient``
    and a library's custom rules, each with the user's line (at most three)."""
    found = []
    for eqn in equations(jaxpr):
        name = eqn.primitive.name
        if name == "stop_gradient" or name in CUSTOM_RULES and from_jax(eqn):
            what = "stop_gradient" if name == "stop_gradient" else \
                f"{callee_name(eqn)} (a {name.removesuffix('_call')} rule)"
            place = user_place(eqn)
            found.append(what + (f" in {place}" if place is not None else ""))
    return list(dict.fromkeys(found))[:3]


def _taylor_verdict(stencils: dict, G, allowed, precision: str, kinks: bool,
                    rough: bool) -> _taylor.Taylor:
    t = np.asarray(stencils["t"], np.float64)
    Jt = G @ t
    tolerance = np.linalg.norm(allowed @ np.abs(t)) / max(np.linalg.norm(Jt), 1e-300)
    return _taylor.verdict(taylor_steps(), stencils["differences"], Jt, stencils["f0"],
                           precision, tolerance, kinks=kinks, crossed=stencils["taylor_crossed"],
                           rough=rough)


def _kinks_of(values: dict, F, allowed):
    """``(at_kink, jumps)``, ``(m, n)`` booleans, from the one-sided derivatives."""
    if "right" not in values:
        none = np.zeros(F.shape, bool)
        return none, none
    right, left = (np.asarray(values[k], np.float64) for k in ("right", "left"))
    finite = np.isfinite(right) & np.isfinite(left)
    at_kink = finite & (np.abs(np.where(finite, right - left, 0.0)) > allowed)
    return at_kink, ~finite & np.isfinite(F)


def _kink_verdict(G, F, B, values, at_kink, jumps, allowed, p, asked) -> Kinks:
    where = np.nonzero(at_kink | jumps)
    n_at, n_jumps = int(at_kink.sum()), int(jumps.sum())
    if not len(where[0]):
        return Kinks(0, 0, (), asked, (), True, "")
    right, left = (np.asarray(values[k], np.float64) for k in ("right", "left"))
    accepted = {"jax": (F, B), "left": (left,), "right": (right,), "average": ((left + right) / 2,)}
    followed = []
    for i, j in zip(*where):
        names = [name for name, refs in accepted.items()
                 if (name == "jax" or at_kink[i, j])
                 and any(abs(G[i, j] - r[i, j]) <= allowed[i, j] for r in refs)]
        followed.append(tuple(names))
    common = tuple(c for c in KINK_CONVENTIONS if all(c in f for f in followed))
    entries = tuple(
        KinkEntry(entry_label(p.out_spec, p.x_spec, int(i), int(j)), float(F[i, j]),
                  float(left[i, j]), float(right[i, j]), float(G[i, j]), f)
        for (i, j), f in sorted(zip(zip(*where), followed), key=lambda e: bool(e[1]))[:5])
    lost = sum(not f for f in followed)
    counted = f"{n_at} entr{'y' if n_at == 1 else 'ies'} at a kink" + (
        f", {n_jumps} where f jumps" if n_jumps else "")
    if lost:
        return Kinks(n_at, n_jumps, common, asked, entries, False,
                     f"{lost} of {n_at + n_jumps} entries at a kink match none of the accepted "
                     "values (JAX's own, the left or right derivative, their average; JAX's "
                     "alone where f jumps): the derivative is wrong there")
    ties = _ties_as_a_whole(G, F, values, at_kink, allowed, p)
    if ties:
        return Kinks(n_at, n_jumps, common, asked, entries, False, ties)
    if asked is not None and asked not in common:
        return Kinks(n_at, n_jumps, common, asked, entries, False,
                     f"kink_convention={asked!r} was asked but at the {counted} the derivative "
                     f"gives {', '.join(common) or 'different conventions at different entries'}")
    return Kinks(n_at, n_jumps, common, asked, entries, True,
                 f"{counted} (not failures); the derivative gives "
                 f"{', '.join(common) or 'an accepted value per entry'} there")


def _ties_as_a_whole(G, F, values, at_kink, allowed, p) -> str:
    """Entries tied at a maximum (a minimum, a sort) are judged together: their derivative
    must lie in the subdifferential, weights that sum to what the tie moves by (JAX's 1/2-1/2
    and a first-index choice both pass; (1, 1) and (0, 0) for a max do not).

    A row whose entries at a kink move together (its derivative along all of them at once is
    not the sum of their one-sided derivatives: a tie) must give their sum between
    ``f'(x; v)`` and ``-f'(x; -v)`` (``v`` the kink columns; the smooth columns' part taken
    off).  That holds where the row is convex (or concave) across its kinks, so a row whose
    kinks bend both ways (a max minus a ReLU) is judged entry by entry, as is one where JAX's
    own row would fail the test.  Returns the failure in words, or ""."""
    if "together" not in values:
        return ""
    right, left = (np.asarray(values[k], np.float64) for k in ("right", "left"))
    kinked = np.any(right != left, axis=0)
    up, down = (np.asarray(values[k], np.float64) for k in ("together", "together_left"))
    bad = []
    for i in np.nonzero(at_kink.sum(axis=1) >= 2)[0]:
        S = at_kink[i]
        smooth = kinked & ~S  # columns moved along v that are no kink of this row
        plus = up[i] - F[i, smooth].sum()
        minus = down[i] - F[i, smooth].sum()
        slack = allowed[i, S].sum() + allowed[i, smooth].sum()
        moves_together = (abs(plus - right[i, S].sum()) > slack
                          or abs(minus - left[i, S].sum()) > slack)
        bends = np.sign(right[i, S] - left[i, S])
        if not moves_together or (bends > 0).any() and (bends < 0).any():
            continue
        lo, hi = min(plus, minus) - slack, max(plus, minus) + slack
        if not lo <= F[i, S].sum() <= hi:  # the test does not hold for JAX's own row
            continue
        total = G[i, S].sum()
        if not lo <= total <= hi:
            bad.append((i, total, (min(plus, minus), max(plus, minus))))
    if not bad:
        return ""
    i, total, (lo, hi) = bad[0]
    row = entry_label(p.out_spec, p.x_spec, int(i), int(np.nonzero(at_kink[i])[0][0]))
    span = f"{lo:.6g}" if abs(hi - lo) <= 1e-12 * max(1.0, abs(hi)) else f"[{lo:.6g}, {hi:.6g}]"
    return (f"{len(bad)} output entr{'y' if len(bad) == 1 else 'ies'} at a tie get derivatives "
            f"that are no subgradient: the tied entries of {row.split(',')[0]}...] sum to "
            f"{total:.6g}, where any choice among the tied entries (JAX's share, one of them) "
            f"sums to {span}: each tied entry judged alone passes, together they do not")


# -- reports -----------------------------------------------------------------------------------
def perturbed(p: Prepared, seed: int, q: int) -> tuple:
    """The dynamic leaves with the argument moved by 5% of each coordinate's scale."""
    args = p.static.args(p.dynamic)
    x = p.x_spec.flatten(p.static.x_of(args))
    rng = np.random.default_rng([seed, q])
    # the step in NumPy: a float32 argument times float64 draws would need a promotion that
    # jax_numpy_dtype_promotion="strict" refuses
    step = (FAST_PERTURBATION * np.asarray(coordinate_scales(x, p.x_spec), np.float64)
            * rng.standard_normal(x.shape))
    moved = jax.tree_util.tree_map(lambda new, old: new.astype(jnp.result_type(old)),
                                   p.x_spec.unflatten(x + step.astype(x.dtype)),
                                   p.static.x_of(args))
    new_args = p.static.with_x(args, moved)
    leaves = jax.tree_util.tree_leaves(new_args)
    return tuple(leaves[i] for i in p.static.dynamic_positions)


@_quiet
def reports(groups: list[tuple[Prepared, list[tuple]]], seed: int, kink_convention,
            merge: bool = True, stencils: bool = True) -> list:
    """Full mode on ``(prepared, dynamic leaves of each point)`` groups: one merged report per
    group, or (``merge=False``) a list with one report per point."""
    return [r[0] for r in several([((p,), points) for p, points in groups], seed,
                                  kink_convention, merge, stencils)]


@_quiet
def several(groups: list[tuple[tuple[Prepared, ...], list[tuple]]], seed: int, kink_convention,
            merge: bool = True, stencils: bool = True) -> list:
    """``reports`` of several derivatives of one ``f`` per group (prepared checks that
    differ only in the derivative), judged against references computed once: per group, a
    tuple with each derivative's report (or list of per-point reports)."""
    keyed = [reference_key(ps[0]) for ps, _ in groups]
    also = [ps[1:] for ps, _ in groups]
    mains = [(q, points) for (q, _), (_, points) in zip(keyed, groups)]
    values = run(mains, seed, stencils, also)
    out = []
    for (p, dynamics), more, (_, precision), per_point in zip(mains, also, keyed, values):
        group = []
        for k, q in enumerate((p, *more)):
            q = q if k == 0 else q._replace(static=q.static._replace(f=p.static.f))
            terms = terms_of(q)
            judged = [judge(q, v if k == 0 else {**v, "got": v[f"also{k - 1}"]}, terms,
                            precision, kink_convention) for v in per_point]
            group.append(_assemble(q, judged, dynamics, terms, precision) if merge else
                         [_assemble(q, [j], [d], terms, precision)
                          for j, d in zip(judged, dynamics)])
        out.append(tuple(group))
    return out


def _assemble(p: Prepared, judged: list[PointVerdict], dynamics: list, terms: int,
              precision: str) -> Report:
    threshold = Threshold.of(p.dtype, terms, reference_words(
        precision, p.dtype, stencils=judged[0].taylor is not None), *p.tolerance)
    first_bad = next((i for i, j in enumerate(judged) if not j.ok), None)
    focus = judged[first_bad if first_bad is not None else 0]
    lazy = {}
    if first_bad is not None and focus.failed:
        def diagnosis(dynamic=dynamics[first_bad]):
            slips, where = diagnose_point(p, focus, focus.exact, dynamic)
            return {"slips": tuple(slips), "where": tuple(where),
                    "diagnosis": tuple(s.sentence for s in slips)}

        lazy = Later.fields(diagnosis, "slips", "where", "diagnosis")
    notes = list(dict.fromkeys((*not_compared_note(p), *(n for j in judged for n in j.notes))))
    if precision != "float64" and judged[0].taylor is not None:
        notes.append(f"f computes in {precision} even on float64 arguments: the "
                     f"finite-difference reference has {precision} precision")
    kinks = [j.kinks for j in judged]
    kink = kinks[first_bad if first_bad is not None and not kinks[first_bad].ok else 0]
    if len(kinks) > 1:
        kink = Kinks(sum(k.at for k in kinks), sum(k.jumps for k in kinks), kink.followed,
                     kink.asked, kink.entries, all(k.ok for k in kinks), kink.note)
    matrices = {"expected": focus.reference, "got": focus.got,  # and what rows and columns are
                "rows": p.out_spec.leaves("out"),
                "columns": p.x_spec.leaves(),
                } if focus.got.size <= 40_000 else {}
    if first_bad is not None and len(judged) > 1:
        notes.append(f"point {first_bad} of {len(judged)} is the first that fails; the "
                     "entries and the diagnosis are for it")
    return Report(
        ok=first_bad is None, **header(p, "full", len(judged), threshold),
        comparisons=merge([j.comparisons for j in judged]),
        taylor=next((j.taylor for j in judged if j.taylor is not None and not j.taylor.ok),
                    judged[0].taylor),
        kinks=kink, worst=focus.worst, **lazy,
        problems=tuple(dict.fromkeys(pr for j in judged for pr in j.problems)),
        notes=tuple(notes), matrices=matrices,
    )


def merge(comparisons: list[tuple[Comparison, ...]]) -> tuple[Comparison, ...]:
    """Per reference, the worst over the points."""
    merged = []
    for per_point in zip(*comparisons):
        merged.append(Comparison(
            per_point[0].reference,
            max(c.max_abs for c in per_point), max(c.max_rel for c in per_point),
            max(c.worst_ratio for c in per_point), sum(c.violations for c in per_point),
            sum(c.compared for c in per_point), sum(c.excluded for c in per_point),
            all(c.ok for c in per_point)))
    return tuple(merged)
