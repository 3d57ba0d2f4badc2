"""Full mode: materialise the derivative and judge every entry.

One jitted program per set of points computes, at every point (vmapped), the derivative
under test as an ``(m, n)`` matrix, ``jax.jacfwd`` and ``jax.jacrev`` in ``f``'s dtype, and in
float64 (``jax_enable_x64`` is switched on for the duration) the finite-difference stencils
and the Taylor ladder.  Points of different shapes go in one program too, so checking a rule
at many points over several shapes compiles once.  The verdict is assembled on the host.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check import _kinks, _taylor
from mcjax._check._compare import (
    Comparison,
    Threshold,
    block_scales,
    compare,
    nonfinite,
    worst_entries,
)
from mcjax._check._diagnose import diagnose
from mcjax._check._flat import entry_label
from mcjax._check._jaxpr import lowest_precision, max_terms, ungated
from mcjax._check._problem import Got, Prepared, cast_floating, flat_function
from mcjax._check._references import (
    autodiff,
    finite_difference_stencils,
    taylor_differences,
    taylor_steps,
)
from mcjax._check._report import KinkEntry, Kinks
from mcjax._jit import quick_jit
from mcjax._conventions import ROUNDING_SAFETY


def terms_of(p: Prepared) -> int:
    """The longest sum in ``f`` and in the derivative under test (see ``check_rtol``)."""
    static, x_spec, out_spec = p.static, p.x_spec, p.out_spec

    def traced(*dynamic):
        args = static.args(dynamic)
        out = out_spec.flatten(static.f(*args))
        return out, Got(static, args, x_spec, out_spec).vjp(jnp.ones_like(out))

    structs = [jax.ShapeDtypeStruct(jnp.shape(d), jnp.result_type(d)) for d in p.dynamic]
    return max_terms(jax.make_jaxpr(traced)(*structs).jaxpr)


def reference_precision(p: Prepared) -> str:
    """The dtype ``f`` really computes in when its arguments are float64."""
    static, x_spec, out_spec = p.static, p.x_spec, p.out_spec
    args = cast_floating(static.args(p.dynamic), jnp.float64)

    def of_x(x):
        return flat_function(static, args, x_spec, out_spec)(x)

    x = jax.ShapeDtypeStruct((x_spec.size,), jnp.float64)
    jaxpr = jax.make_jaxpr(of_x)(x).jaxpr
    return lowest_precision(jaxpr, set(jaxpr.invars)) or "float64"


def reference_words(precision: str) -> str:
    return f"jax.jacfwd, jax.jacrev, finite differences in {precision}"


def _native(static, x_spec, out_spec, dynamic):
    args = static.args(dynamic)
    x = x_spec.flatten(args[static.argnums])
    f_flat = flat_function(static, args, x_spec, out_spec)
    refs = autodiff(f_flat, x)
    got = Got(static, args, x_spec, out_spec).matrix(refs["jacfwd"].dtype)
    return {"got": got, **refs}


def _reference(static, x_spec, out_spec, precision, dynamic, normal):
    args = cast_floating(static.args(dynamic), jnp.float64)
    x = x_spec.flatten(args[static.argnums], jnp.float64)
    f_flat = flat_function(static, args, x_spec, out_spec)
    return {"stencils": finite_difference_stencils(f_flat, x, x_spec, precision),
            "taylor": taylor_differences(f_flat, x, x_spec, normal),
            "jacfwd64": jax.jacfwd(f_flat)(x)}


def _jacfwd32(static, x_spec, out_spec, dynamic):
    """``jax.jacfwd`` with every floating argument rounded to float32."""
    args = cast_floating(static.args(dynamic), jnp.float32)
    x = x_spec.flatten(args[static.argnums], jnp.float32)
    return jax.jacfwd(flat_function(static, args, x_spec, out_spec))(x)


def _programs(groups, dynamics, normals):
    results = []
    for (static, x_spec, out_spec, precision), dynamic, normal in zip(groups, dynamics, normals):
        native = jax.vmap(lambda d: _native(static, x_spec, out_spec, d))(dynamic)
        if native["jacfwd"].dtype != jnp.float32:  # a float32 f measures its own rounding
            native["jacfwd32"] = jax.vmap(lambda d: _jacfwd32(static, x_spec, out_spec, d))(dynamic)
        reference = jax.vmap(lambda d, t: _reference(static, x_spec, out_spec, precision, d, t))(
            dynamic, normal)
        results.append({**native, **reference})
    return results


@functools.cache
def _compiled_programs():
    return quick_jit(_programs, static_argnames=("groups",))


def run(groups: list[tuple[Prepared, list[tuple], str]], seed: int) -> list[list[dict]]:
    """Run every group's points in one program.

    Args:
      groups: ``(prepared, dynamic leaves of each point, reference precision)``; the points of
        one group share shapes and static arguments.
      seed: seeds the Taylor directions.

    Returns:
      Per group, per point: NumPy dicts ``{"got", "jacfwd", "jacrev", "stencils", "taylor"}``.
    """
    statics = tuple((p.static, p.x_spec, p.out_spec, precision) for p, _, precision in groups)
    # NumPy, not jnp: every eager jnp call would compile a little program of its own
    dynamics = [tuple(np.stack([np.asarray(leaf) for leaf in leaves]) for leaves in zip(*points))
                for _, points, _ in groups]
    rng = np.random.default_rng(seed)
    normals = [rng.standard_normal((len(points), p.x_spec.size)) for p, points, _ in groups]
    with jax.enable_x64(True):
        out = jax.device_get(_compiled_programs()(statics, dynamics, normals))
    return [[jax.tree_util.tree_map(lambda a: np.asarray(a)[i], result) for i in range(len(points))]
            for result, (_, points, _) in zip(out, groups)]


def judge(p: Prepared, values: dict, terms: int, precision: str, kink_convention) -> dict:
    """The verdict at one point, as the pieces of a report."""
    x_spec, out_spec = p.x_spec, p.out_spec
    G, F, B = (np.asarray(values[k], np.float64) for k in ("got", "jacfwd", "jacrev"))
    threshold = Threshold.of(p.dtype, terms, reference_words(precision))
    problems = [msg for name, M in (("the derivative under test", G), ("jax.jacfwd", F),
                                    ("jax.jacrev", B))
                if (msg := nonfinite(name, M, out_spec, x_spec))]
    eps = float(np.finfo(np.dtype(p.dtype)).eps)
    scale = block_scales(F, out_spec, x_spec, eps)
    # f's own rounding, measured: autodiff in float32 against autodiff in float64, scaled to
    # f's dtype.  Formulas that cancel (1 - tanh(z)^2 near 1, sigmoid(z) - 1) lose more than
    # eps; a derivative computed in f's dtype may lose as much, so the block's worst loss
    # widens its threshold.
    low = values.get("jacfwd32", values["jacfwd"])
    loss32 = np.abs(np.asarray(low, np.float64) - np.asarray(values["jacfwd64"], np.float64))
    loss = np.where(np.isfinite(loss32), loss32, 0.0) * eps / float(np.finfo(np.float32).eps)
    rounding = block_scales(loss, out_spec, x_spec, 0.0)
    allowed = threshold.rtol * scale + ROUNDING_SAFETY * rounding + threshold.atol
    fd = _kinks.analyse(values["stencils"], scale, precision)
    notes = []
    fd_undefined = ~np.isfinite(fd.value) & np.isfinite(F)
    if fd_undefined.any():
        notes.append(f"finite differences undefined at {int(fd_undefined.sum())} entries (the "
                     "stencil leaves f's domain); autodiff alone judges them")
    include = ~fd.at_kink & np.isfinite(F) & np.isfinite(B)
    include_fd = include & ~fd.near_kink & np.isfinite(fd.value)
    comparisons = [
        compare("jax.jacfwd", G, F, allowed, scale, include),
        compare("jax.jacrev", G, B, allowed, scale, include),
        compare("finite differences", G, fd.value, allowed + fd.error, scale, include_fd),
    ]
    kinks = _kink_report(G, fd, allowed, out_spec, x_spec, kink_convention)
    t, differences = values["taylor"]["t"], values["taylor"]["differences"]
    Jt = G @ np.asarray(t, np.float64)
    tolerance = np.linalg.norm(allowed @ np.abs(t)) / max(np.linalg.norm(Jt), 1e-300)
    taylor = _taylor.verdict(taylor_steps(), differences, Jt, values["taylor"]["f0"], precision,
                             tolerance, kinks=bool(fd.at_kink.any() or fd.near_kink.any()))
    ok = not problems and all(c.ok for c in comparisons) and taylor.ok and kinks.ok
    failed = next((c for c in comparisons if not c.ok), None)
    R = fd.value if failed is not None and failed.reference == "finite differences" else F
    mask = include_fd if R is fd.value else include
    worst = worst_entries(G, R, allowed, mask, out_spec, x_spec) if failed else []
    return {"ok": ok, "comparisons": comparisons, "taylor": taylor, "kinks": kinks,
            "problems": problems, "notes": notes, "worst": worst, "G": G, "R": R,
            "allowed": allowed, "include": mask, "failed": failed is not None}


def _kink_report(G, fd, allowed, out_spec, x_spec, asked) -> Kinks:
    at = np.nonzero(fd.at_kink)
    if not len(at[0]):
        return Kinks(0, int(fd.near_kink.sum()), (), asked, (), True,
                     f"{int(fd.near_kink.sum())} entries near a kink: finite differences skipped "
                     "there, autodiff judges them")
    followed = _kinks.conventions_followed(G[at], fd.left[at], fd.right[at], allowed[at])
    common = tuple(c for c in followed[0] if all(c in f for f in followed))
    lost = sum(not f for f in followed)
    entries = tuple(KinkEntry(entry_label(out_spec, x_spec, int(i), int(j)), float(fd.left[i, j]),
                              float(fd.right[i, j]), float(G[i, j]), tuple(f))
                    for (i, j), f in list(zip(zip(*at), followed))[:5])
    n = len(at[0])
    if lost:
        return Kinks(n, int(fd.near_kink.sum()), common, asked, entries, False,
                     f"{lost} of {n} entries at a kink follow no convention (left, right, zero, "
                     "average): the derivative is wrong there")
    if asked is not None and asked not in common:
        return Kinks(n, int(fd.near_kink.sum()), common, asked, entries, False,
                     f"kink_convention={asked!r} was asked but the derivative follows "
                     f"{', '.join(common) or 'different conventions at different entries'}")
    return Kinks(n, int(fd.near_kink.sum()), common, asked, entries, True,
                 f"{n} entries at a kink (not failures); the derivative follows "
                 f"{', '.join(common) or 'a convention per entry'} there")


def _ungated_jacobian(static, x_spec, out_spec, dynamic):
    args = static.args(dynamic)
    x = x_spec.flatten(args[static.argnums])
    return jax.jacfwd(ungated(flat_function(static, args, x_spec, out_spec)))(x)


def _jacobian(static, x_spec, out_spec, dynamic):
    args = static.args(dynamic)
    return jax.jacfwd(flat_function(static, args, x_spec, out_spec))(
        x_spec.flatten(args[static.argnums]))


@functools.cache
def _compiled(fn):
    """``fn(static, x_spec, out_spec, dynamic)`` jitted once: every failing point of the same
    check reuses the program (a closure over the point's arguments would compile per point)."""
    return quick_jit(fn, static_argnames=("static", "x_spec", "out_spec"))


def diagnosis_extras(p: Prepared, dynamic) -> dict:
    """What :func:`~mcjax._check._diagnose.diagnose` compares with beyond the reference."""
    static, x_spec, out_spec = p.static, p.x_spec, p.out_spec
    args = static.args(dynamic)
    extras = {"other_arguments": {}}
    try:
        J = _compiled(_ungated_jacobian)(static, x_spec, out_spec, dynamic)
        extras["ungated"] = np.asarray(J, np.float64)
    except Exception:  # a primitive the straight-through evaluator cannot rebind
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


def diagnose_point(p: Prepared, judged: dict, dynamic, args) -> list[str]:
    """The diagnosis of a failing point."""
    square = p.x_spec.shapes == p.out_spec.shapes
    extras = diagnosis_extras(p, dynamic)
    return diagnose(judged["G"], judged["R"], judged["allowed"], judged["include"],
                    sizes=sizes_of(p, args), square=square, **extras)


def merge(comparisons: list[list[Comparison]]) -> tuple[Comparison, ...]:
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
