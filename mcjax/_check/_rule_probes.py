r"""What a custom rule must be besides right: the structural tests of ``mcjax.check_rule``.

The Jacobian a rule implements is judged by ``mcjax.check`` (against the rule-free
computation's autodiff, finite differences and the Taylor test).  These tests ask what a
Jacobian cannot show, each by comparing two ways JAX offers to compute the same thing:

- **primal**: the primal output ``jax.jvp`` returns (the ``custom_jvp`` rule's own) and the one
  ``jax.vjp`` returns (the ``custom_vjp`` ``fwd``'s) equal ``f``'s own computation (the
  rule-free program, ``mcjax._check._rule_free.rule_free``);
- **linearity**: the JVP is linear in its tangent, ``jvp(v_1 - 3 v_2) = jvp(v_1) - 3 jvp(v_2)``,
  and the VJP in its cotangent (a tangent squared, a constant added, a clipped cotangent are
  not derivatives, and a Jacobian built from basis vectors cannot see them);
- **transposes**: ``<u, J v>`` by ``jax.jvp`` equals ``<u^T J, v>`` by ``jax.vjp``;
- **symbolic zeros**: the JVP along the argument alone (JAX passes the other arguments' tangents
  as symbolic zeros) equals the JVP with explicit zero tangents for them, and the VJP of one
  output leaf alone (the other cotangents symbolic zeros) the VJP with explicit zeros;
- **batching**: under ``jax.vmap`` over the argument and the cotangent, the VJP of a batch of
  points equals the VJP of each point (PyTorch gradcheck's ``check_batched_grad``): ``x`` and a point
  moved from it by 5% of each coordinate's scale.

Everything runs in one jitted program for all the rules of a call, on the arguments cast to
float64 (the rule's slips do not depend on the dtype; its rounding does, and float64 keeps
the thresholds far below any slip): each comparison passes when
``|a - b| <= ROUNDING_SAFETY * rtol * scale + atol``, with the checker's ``rtol`` for the
precision ``f`` computes in and ``scale`` the largest magnitude of the leaf compared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check._flat import FlatSpec
from mcjax._check._rule_free import rule_free
from mcjax._core._compat import enable_x64
from mcjax._core._conventions import is_floating, standard_promotion
from mcjax._core._tolerance import FAST_PERTURBATION, ROUNDING_SAFETY, check_atol, check_rtol
from mcjax._program._compile import quick_jit

BATCH = 2  # points in the batching test: x and a point near it
COMBINATION = -3.0  # the second coefficient of the linearity test: jvp(v1 + c v2)


@dataclass(frozen=True)
class Probe:
    """One structural test: its kind (``"primal"``, ``"linear"``, ``"transpose"``,
    ``"symbolic-zero"``, ``"vmap"``), whether it passed, and what it found in a sentence."""

    kind: str
    ok: bool
    sentence: str


def _float0_zeros(leaf):
    return np.zeros(np.shape(leaf), jax.dtypes.float0)


def _with(args: tuple, argnums: int, x) -> tuple:
    return args[:argnums] + (x,) + args[argnums + 1:]


def _leaves(tree) -> list:
    return jax.tree_util.tree_leaves(tree)


def _values(plan, dynamic: list, draws: dict) -> dict:
    """Every quantity the tests compare, for one rule (traced inside the program)."""
    args = plan.rebuild(dynamic)
    i = plan.argnums
    x = args[i]

    def g(x):
        return plan.f(*_with(args, i, x))

    free = rule_free(plan.f)
    # f's own computation: its program with the custom calls replaced by their bodies
    out = {"f": _leaves(free(*_with(args, i, x)))}
    unflatten_u = plan.out_spec.treedef.unflatten
    u1, u2 = (unflatten_u(draws[k]) for k in ("u1", "u2"))
    v1, v2 = (plan.x_spec.treedef.unflatten(draws[k]) for k in ("v1", "v2"))
    combine = lambda a, b: jax.tree_util.tree_map(lambda p, q: p + COMBINATION * q, a, b)  # noqa: E731
    if plan.jvp is not None:
        primal, t1 = jax.jvp(g, (x,), (v1,))
        out["jvp_primal"], out["t1"] = _leaves(primal), _leaves(t1)
        out["t2"] = _leaves(jax.jvp(g, (x,), (v2,))[1])
        out["t12"] = _leaves(jax.jvp(g, (x,), (combine(v1, v2),))[1])
        if plan.other_tangents:  # every array argument differentiated, the others' tangents 0
            def of_all(*values):
                return plan.f(*plan.rebuild(list(values)))

            tangents = [_float0_zeros(d) if not is_floating(d) else jnp.zeros_like(d)
                        for d in dynamic]
            for pos, leaf in zip(plan.x_positions, _leaves(v1)):
                tangents[pos] = leaf
            out["t1_all"] = _leaves(jax.jvp(of_all, tuple(dynamic), tuple(tangents))[1])
    if plan.vjp is not None:
        primal, back = jax.vjp(g, x)
        out["vjp_primal"] = _leaves(primal)
        out["w1"], out["w2"] = _leaves(back(u1)[0]), _leaves(back(u2)[0])
        out["w12"] = _leaves(back(combine(u1, u2))[0])
        if len(plan.out_spec.shapes) > 1:  # each output leaf alone
            alone, masked = [], []
            for k in range(len(plan.out_spec.shapes)):
                only = [u if j == k else jnp.zeros_like(u) for j, u in enumerate(draws["u1"])]
                masked.append(_leaves(back(unflatten_u(only))[0]))
                alone.append(_leaves(jax.vjp(lambda x, k=k: _leaves(g(x))[k], x)[1](
                    draws["u1"][k])[0]))
            out["w_alone"], out["w_masked"] = alone, masked
    out.update(_batched(plan, g, x, draws, out))
    return out


def _batched(plan, g, x, draws, out: dict) -> dict:
    """The VJP at ``BATCH`` points under ``jax.vmap`` (the argument and the cotangent
    batched, as per-example gradients are) and one by one: the first point is ``x`` with the
    cotangent ``u1`` (whose VJP ``out`` already holds), the others ``x`` moved by ``d1``, ...
    (The JVP and the VJP under ``vmap`` over tangents and cotangents alone are what
    ``jax.jacfwd`` and ``jax.jacrev`` compute in the checks of the Jacobian.)"""
    if plan.vjp is None:
        return {}
    offsets = [plan.x_spec.treedef.unflatten(draws[f"d{b}"]) for b in range(1, BATCH)]
    X = jax.tree_util.tree_map(lambda leaf, *d: jnp.stack([leaf] + [leaf + o for o in d]),
                               x, *offsets)
    U = plan.out_spec.treedef.unflatten(draws["U"])
    at = lambda tree, b: jax.tree_util.tree_map(lambda a: a[b], tree)  # noqa: E731

    def step(x, u):
        return jax.vjp(g, x)[1](u)[0]

    each = [out["w1"]] + [_leaves(step(at(X, b), at(U, b))) for b in range(1, BATCH)]
    return {"vmap_vjp": _leaves(jax.vmap(step)(X, U)),
            "each_vjp": [jnp.stack(leaves) for leaves in zip(*each)]}


def draws(plan, seed: int) -> dict:
    """The random cotangents, tangents and batch offsets of one rule (NumPy, float64)."""
    rng = np.random.default_rng([seed, 24])
    out_shapes, x_shapes = plan.out_spec.shapes, plan.x_spec.shapes
    normal = lambda shapes, lead=(): [rng.standard_normal(lead + s) for s in shapes]  # noqa: E731
    x_leaves = _leaves(plan.args[plan.argnums])
    offsets = {}
    for k in [f"d{b}" for b in range(1, BATCH)]:
        offsets[k] = []
        for leaf in x_leaves:
            leaf = np.asarray(leaf, np.float64)
            rms = float(np.sqrt(np.mean(leaf * leaf))) or 1.0
            scale = np.maximum(np.abs(leaf), rms)
            offsets[k].append(FAST_PERTURBATION * scale * rng.standard_normal(leaf.shape))
    u1, v1 = normal(out_shapes), normal(x_shapes)
    U = [np.concatenate([a[None], b]) for a, b in zip(u1, normal(out_shapes, (BATCH - 1,)))]
    return {"u1": u1, "u2": normal(out_shapes), "v1": v1, "v2": normal(x_shapes), "U": U,
            **offsets}


def run(plans: list, seed: int) -> list[list[Probe]]:
    """The structural tests of every rule in ``plans``, in one program; per rule, its probes.

    A rule that cannot run on float64 arguments (a kernel that returns float32 whatever it
    is given) is tested in its own dtype, with that dtype's thresholds; one that cannot run
    at all gets a failing probe that says why."""
    all_draws = [draws(p, seed) for p in plans]
    try:
        values = _evaluate(plans, all_draws, wide=True)
        return [judge(p, v, dr) for p, v, dr in zip(plans, values, all_draws)]
    except Exception:  # noqa: BLE001 - find the rule that fails, and test it alone
        if len(plans) == 1:
            return [_alone(plans[0], all_draws[0])]
    return [_alone(p, dr) for p, dr in zip(plans, all_draws)]


def _alone(plan, dr) -> list[Probe]:
    for wide in (True, False):
        try:
            (values,) = _evaluate([plan], [dr], wide)
        except Exception as error:  # noqa: BLE001 - the rule's own error, in words
            if wide:
                continue
            message = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return [Probe("error", False, "the structural tests cannot run: the rule raised "
                                          f"{type(error).__name__}: {message}")]
        return judge(plan if wide else plan_in_its_dtype(plan), values, dr)
    return []  # not reached


def plan_in_its_dtype(plan):
    """The plan, judged with the thresholds of the dtype it computes in."""
    floating = [d for d in plan.x_spec.dtypes + plan.out_spec.dtypes
                if jnp.issubdtype(d, jnp.floating)]
    precision = max(floating, key=lambda d: float(jnp.finfo(d).eps))
    return dataclasses.replace(plan, precision=precision)


def _evaluate(plans, all_draws, wide: bool) -> list:
    """Every quantity of every rule, from one program: on the arguments cast to float64
    (``wide``), or as they are."""
    dynamics = [[np.asarray(d, np.float64) if wide and is_floating(d) else np.asarray(d)
                 for d in p.dynamic] for p in plans]
    if not wide:  # the draws in each argument's and output's own dtype
        all_draws = [_cast_draws(p, dr) for p, dr in zip(plans, all_draws)]

    def program(dynamics, all_draws):
        return [_values(p, list(d), dr) for p, d, dr in zip(plans, dynamics, all_draws)]

    with enable_x64(True), standard_promotion():
        return jax.device_get(quick_jit(program)(dynamics, all_draws))


def _cast_draws(plan, dr: dict) -> dict:
    def cast(values, spec):
        return [np.asarray(v, t) for v, t in zip(values, spec.dtypes)]

    out = {k: cast(dr[k], plan.out_spec) for k in ("u1", "u2", "U")}
    return {**dr, **out, **{k: cast(v, plan.x_spec) for k, v in dr.items() if k not in out}}


# -- the verdicts ---------------------------------------------------------------------------------
class _Tolerance:
    def __init__(self, precision: str, terms: int):
        self.rtol = ROUNDING_SAFETY * check_rtol(precision, terms)
        self.atol = check_atol(precision)

    def compare(self, a: list, b: list, scale: list | None = None):
        """``(ok, error, allowed, leaf, index)`` of the worst entry of ``a`` against ``b``."""
        worst = (True, 0.0, 0.0, 0, ())
        worst_ratio = -1.0
        for k, (p, q) in enumerate(zip(a, b)):
            p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
            s = np.max(np.abs(np.stack([p, q]))) if scale is None else float(scale[k])
            s = s if np.isfinite(s) else 0.0
            allowed = self.rtol * s + self.atol
            with np.errstate(invalid="ignore"):
                error = np.where(np.isnan(p) | np.isnan(q), np.inf, np.abs(p - q))
            if error.size == 0:
                continue
            j = int(np.argmax(error))
            ratio = float(error.flat[j]) / allowed
            if ratio > worst_ratio:
                worst_ratio = ratio
                index = np.unravel_index(j, error.shape) if error.ndim else ()
                worst = (ratio <= 1, float(error.flat[j]), allowed, k,
                         tuple(int(v) for v in index))
        return worst


def _at(spec: FlatSpec, what: str, leaf: int, index: tuple) -> str:
    inside = "[" + ", ".join(map(str, index)) + "]" if index else ""
    return f"{what}{spec.paths[leaf]}{inside}"


def _off(error: float, allowed: float) -> str:
    return "NaN or Inf" if not np.isfinite(error) else f"{error:.2g} (allowed {allowed:.1g})"


def judge(plan, v: dict, dr: dict) -> list[Probe]:
    """The probes' verdicts, on the host."""
    tol = _Tolerance(plan.precision, plan.terms)
    probes: list[Probe] = []

    def probe(kind, a, b, sentence, spec, what, scale=None):
        ok, error, allowed, leaf, index = tol.compare(a, b, scale)
        probes.append(Probe(kind, ok, "" if ok else sentence.format(
            off=_off(error, allowed), at=_at(spec, what, leaf, index))))

    out, xs = plan.out_spec, plan.x_spec
    if "jvp_primal" in v:
        probe("primal", v["jvp_primal"], v["f"], "the primal output of jax.jvp (the custom_jvp "
              "rule's own) differs from f's own computation (the rule-free program) by up to "
              "{off} at {at}: the rule returns another primal than f (a stale or recomputed "
              "value?)", out, "out")
    if "vjp_primal" in v:
        probe("primal", v["vjp_primal"], v["f"], "the primal output of jax.vjp (the custom_vjp "
              "fwd's) differs from f's own computation (the rule-free program) by up to {off} "
              "at {at}: fwd returns another primal than f (a residual returned in its place?)",
              out, "out")
    def linear(at, first, second, sentence, spec, what):
        """``probe`` of the map at the combination against the combination of its values
        (``first + COMBINATION second``), scaled by the parts' sizes."""
        combined = [a + COMBINATION * b for a, b in zip(v[first], v[second])]
        scale = [np.max(np.abs(a)) + abs(COMBINATION) * np.max(np.abs(b))
                 for a, b in zip(v[first], v[second])]
        probe("linear", v[at], combined, sentence, spec, what, scale)

    if "t12" in v:
        linear("t12", "t1", "t2", "the JVP is not linear in its tangent: "
               f"jvp(v1 {COMBINATION:+g} v2) differs from jvp(v1) {COMBINATION:+g} jvp(v2) by "
               "up to {off} at {at}: a tangent squared, a constant added to it, or a tangent "
               "passed through a nonlinear function?", out, "out")
    if "w12" in v:
        linear("w12", "w1", "w2", "the VJP is not linear in its cotangent: "
               f"vjp(u1 {COMBINATION:+g} u2) differs from vjp(u1) {COMBINATION:+g} vjp(u2) by "
               "up to {off} at {at}: a clipped or normalised cotangent, or a constant added?",
               xs, "x")
    if "t1" in v and "w1" in v:
        a = sum(float(np.vdot(u, t)) for u, t in zip(dr["u1"], v["t1"]))
        b = sum(float(np.vdot(w, d)) for w, d in zip(v["w1"], dr["v1"]))
        scale = (sum(float(np.sum(np.abs(u * t))) for u, t in zip(dr["u1"], v["t1"]))
                 + sum(float(np.sum(np.abs(w * d))) for w, d in zip(v["w1"], dr["v1"])))
        ok, error, allowed, _, _ = tol.compare([a], [b], [scale])
        probes.append(Probe("transpose", ok, "" if ok else (
            f"the JVP and the VJP are not transposes of each other: <u, J v> = {a:.6g} by "
            f"jax.jvp but <u^T J, v> = {b:.6g} by jax.vjp (difference {_off(error, allowed)}) "
            "for random u, v")))
    if "t1_all" in v:
        probe("symbolic-zero", v["t1"], v["t1_all"], f"the JVP along args[{plan.argnums}] "
              "alone (JAX passes the other arguments' tangents as symbolic zeros) differs from "
              "the JVP with explicit zero tangents for them by up to {off} at {at}: the rule "
              "mishandles a symbolic zero tangent?", out, "out")
    for k, (alone, masked) in enumerate(zip(v.get("w_alone", ()), v.get("w_masked", ()))):
        probe("symbolic-zero", alone, masked, f"the VJP of output out{out.paths[k]} alone (the "
              "other outputs' cotangents symbolic zeros) differs from the VJP with explicit "
              "zero cotangents for them by up to {off} at {at}: the rule mishandles a symbolic "
              "zero cotangent?", xs, "x")
    if "vmap_vjp" in v:
        probe("vmap", v["vmap_vjp"], v["each_vjp"], f"under jax.vmap the VJP of a batch of "
              f"{BATCH} points differs from the VJP of each point by up to {{off}} at {{at}} "
              "(the leading index is the point): the rule's batching is wrong (a rule that "
              "reads or reduces the batch axis, or a batching rule of its own?)",
              _batched_spec(xs), "x")
    return probes


def _batched_spec(spec: FlatSpec) -> FlatSpec:
    return FlatSpec(spec.treedef, tuple((BATCH,) + s for s in spec.shapes), spec.dtypes,
                    spec.paths)
