r"""Fast mode: random projections, for parameter sets too big to materialise a Jacobian.

At each point (``x`` itself, then ``x`` moved by 5% of each coordinate's scale) one random
unit cotangent ``u`` (Gaussian; ``u = 1`` for a scalar ``f``) gives

- ``u^T J`` of the derivative under test (``.vjp`` of a structured Jacobian, a contraction of
  a dense array, or the VJP function itself) and of ``jax.vjp(f)``, compared entry by entry
  with the thresholds of full mode: for a scalar ``f`` that is the whole gradient;
- the projections ``u^T J v_k`` onto ``k`` random unit directions ``v_k`` (Rademacher, from
  the bits of one integer hash of the coordinate index), with the threshold the entry-wise
  one implies, ``sum_j allowed_j |v_kj|``.

Cost per point: one evaluation of the derivative under test and one ``jax.vjp`` of ``f``
(each about one gradient), plus a few passes over ``n`` numbers; nothing of size ``m n``
is ever built, and the whole check is one jitted program, cached on ``(f, derivative)``.

A wrong entry ``(i, j)`` by ``E`` shows in ``(u^T J)_j`` as ``u_i E``: for a scalar ``f``
(``u = 1``) it is caught whenever ``|E|`` exceeds its threshold.  For ``m`` outputs
``u_i ~ N(0, 1/m)``, so one point misses it with probability
``P(|Z| < sqrt(m) allowed / |E|) ~= 0.8 sqrt(m) allowed / |E|`` and ``p`` points with that
probability to the power ``p``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check._compare import Comparison, Threshold, nonfinite, worst_entries
from mcjax._check._flat import FlatSpec
from mcjax._check._jaxpr import max_terms
from mcjax._check._problem import Got, Prepared, flat_function
from mcjax._check._references import coordinate_scales
from mcjax._check._report import Projection
from mcjax._conventions import FAST_PERTURBATION, check_atol, check_rtol


def hash_bits(seed, salt: int, n: int):
    """32 pseudo-random bits per index ``0..n-1`` (a murmur3-style finaliser): cheap and jittable.

    ``jax.random`` on a CPU costs more than a gradient of a 1M-parameter MLP; directions only
    need independent-looking signs.
    """
    x = jnp.arange(n, dtype=jnp.uint32) * jnp.uint32(0x9E3779B1)
    x = x + (seed.astype(jnp.uint32) * jnp.uint32(0x85EBCA77) + jnp.uint32((salt * 0x27D4EB2F + 1) % 2**32))
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _signs(bits, k: int, dtype):
    return jnp.where((bits >> k) & 1 == 1, 1.0, -1.0).astype(dtype)


def _unit_normal(seed, salt: int, m: int, dtype):
    """A random unit vector of length ``m`` (Box-Muller on hashed bits); ``[1]`` for ``m = 1``."""
    if m == 1:
        return jnp.ones((1,), dtype)
    a = (hash_bits(seed, salt, m) >> 8).astype(jnp.float32) / 2**24 + 2.0**-25
    b = (hash_bits(seed, salt + 7, m) >> 8).astype(jnp.float32) / 2**24
    z = (jnp.sqrt(-2 * jnp.log(a)) * jnp.cos(2 * jnp.pi * b)).astype(dtype)
    return z / jnp.linalg.norm(z)


def _terms(static, x_spec, out_spec, dynamic) -> int:
    def traced(*dyn):
        args = static.args(dyn)
        out = out_spec.flatten(static.f(*args))
        return out, Got(static, args, x_spec, out_spec).vjp(jnp.ones_like(out))

    structs = [jax.ShapeDtypeStruct(d.shape, d.dtype) for d in dynamic]
    return max_terms(jax.make_jaxpr(traced)(*structs).jaxpr)


def _point(static, x_spec, out_spec, args0, x, seed, p, directions, rtol, atol):
    args = args0[: static.argnums] + (x_spec.unflatten(x),) + args0[static.argnums + 1 :]
    f_flat = flat_function(static, args, x_spec, out_spec)
    out, pullback = jax.vjp(f_flat, x)
    u = _unit_normal(seed, 100 + p, out.shape[0], out.dtype)
    (w_ref,) = pullback(u)
    w_got = Got(static, args, x_spec, out_spec).vjp(u).astype(w_ref.dtype)
    error = jnp.abs(w_got - w_ref)
    leaf_ref, leaf_err, violations = [], [], []
    for o, n in zip(x_spec.offsets, x_spec.sizes):
        leaf_ref.append(jnp.max(jnp.abs(w_ref[o : o + n])))
        leaf_err.append(jnp.max(error[o : o + n]))
    leaf_ref = jnp.stack(leaf_ref)
    eps = jnp.finfo(w_ref.dtype).eps
    scales = jnp.maximum(leaf_ref, eps * jnp.max(leaf_ref))
    allowed_leaf = rtol * scales + atol
    for k, (o, n) in enumerate(zip(x_spec.offsets, x_spec.sizes)):
        violations.append(jnp.sum(~(error[o : o + n] <= allowed_leaf[k])))
    bits = hash_bits(seed, 200 + p, x.shape[0])
    scale_n = 1 / jnp.sqrt(jnp.asarray(x.shape[0], w_ref.dtype))
    proj_ref = jnp.stack([jnp.sum(w_ref * _signs(bits, k, w_ref.dtype)) for k in range(directions)])
    proj_got = jnp.stack([jnp.sum(w_got * _signs(bits, k, w_ref.dtype)) for k in range(directions)])
    return {"leaf_ref": leaf_ref, "leaf_err": jnp.stack(leaf_err), "allowed_leaf": allowed_leaf,
            "violations": jnp.stack(violations), "proj_ref": proj_ref * scale_n,
            "proj_got": proj_got * scale_n,
            "nonfinite_got": jnp.sum(~jnp.isfinite(w_got)), "nonfinite_ref": jnp.sum(~jnp.isfinite(w_ref))}


def _points(static, x_spec, dynamic, seed, points):
    args0 = static.args(dynamic)
    x0 = x_spec.flatten(args0[static.argnums])
    xs = [x0]
    if points > 1:
        scale = coordinate_scales(x0, x_spec)
        for p in range(1, points):
            bits = hash_bits(seed, p, x0.shape[0])
            xs.append(x0 + FAST_PERTURBATION * scale * _signs(bits, 0, x0.dtype))
    return args0, xs


@functools.partial(jax.jit, static_argnames=("static", "x_spec", "out_spec", "dtype", "points",
                                             "directions"))
def _program(static, x_spec, out_spec, dtype, points, directions, dynamic, seed):
    terms = _terms(static, x_spec, out_spec, dynamic)
    rtol, atol = check_rtol(dtype, terms), check_atol(dtype)
    args0, xs = _points(static, x_spec, dynamic, seed, points)
    results = [_point(static, x_spec, out_spec, args0, x, seed, p, directions, rtol, atol)
               for p, x in enumerate(xs)]
    return {"terms": jnp.asarray(terms), **jax.tree_util.tree_map(lambda *a: jnp.stack(a), *results)}


@functools.partial(jax.jit, static_argnames=("static", "x_spec", "out_spec", "points", "p"))
def _vectors(static, x_spec, out_spec, points, p, dynamic, seed):
    """``u^T J`` of both sides at point ``p``, for the worst entries of a failing check."""
    args0, xs = _points(static, x_spec, dynamic, seed, points)
    x = xs[p]
    args = args0[: static.argnums] + (x_spec.unflatten(x),) + args0[static.argnums + 1 :]
    f_flat = flat_function(static, args, x_spec, out_spec)
    out, pullback = jax.vjp(f_flat, x)
    u = _unit_normal(seed, 100 + p, out.shape[0], out.dtype)
    (w_ref,) = pullback(u)
    return Got(static, args, x_spec, out_spec).vjp(u).astype(w_ref.dtype), w_ref


def run(p: Prepared, points: int, directions: int, seed: int) -> dict:
    """Fast mode at ``points`` points: the pieces of a report."""
    seed_array = jnp.asarray(seed, jnp.uint32)
    v = jax.device_get(_program(p.static, p.x_spec, p.out_spec, p.dtype, points, directions,
                                p.dynamic, seed_array))
    terms = int(v["terms"])
    threshold = Threshold.of(p.dtype, terms, f"jax.vjp in {p.dtype}")
    sizes = np.asarray(p.x_spec.sizes, np.float64)
    projections, problems = [], []
    for q in range(points):
        allowed = float(np.sum(sizes * v["allowed_leaf"][q]) / np.sqrt(p.x_spec.size))
        projections.extend(Projection(q, k, float(v["proj_ref"][q, k]), float(v["proj_got"][q, k]),
                                      allowed) for k in range(directions))
        for side, key in (("the derivative under test", "nonfinite_got"), ("jax.vjp", "nonfinite_ref")):
            if v[key][q]:
                problems.append(f"u^T J of {side} has {int(v[key][q])} NaN or Inf entries at point {q}")
    violations = int(v["violations"].sum())
    scale = np.maximum(v["leaf_ref"], 1e-300)
    comparison = Comparison(
        "jax.vjp (u^T J)", float(v["leaf_err"].max()), float((v["leaf_err"] / scale).max()),
        float((v["leaf_err"] / v["allowed_leaf"]).max()), violations, points * p.x_spec.size, 0,
        violations == 0 and not problems)
    ok = comparison.ok and all(pr.ok for pr in projections) and not problems
    worst = []
    failing = [q for q in range(points) if v["violations"][q].sum() or not all(
        pr.ok for pr in projections if pr.point == q) or v["nonfinite_got"][q] or v["nonfinite_ref"][q]]
    if failing:
        got, ref = jax.device_get(_vectors(p.static, p.x_spec, p.out_spec, points, failing[0],
                                           p.dynamic, seed_array))
        got, ref = np.asarray(got, np.float64)[None], np.asarray(ref, np.float64)[None]
        allowed = np.repeat(v["allowed_leaf"][failing[0]], p.x_spec.sizes)[None]
        one = FlatSpec(jax.tree_util.tree_structure(0), ((),), (p.dtype,), ("",))
        worst = worst_entries(got, ref, allowed, np.ones_like(got, bool), one, p.x_spec)
        problems.extend(msg for msg in [nonfinite("u^T J of the derivative under test", got, one, p.x_spec)] if msg)
    return {"ok": ok, "threshold": threshold, "comparisons": (comparison,),
            "projections": tuple(projections), "problems": tuple(problems), "worst": tuple(worst),
            "failing_point": failing[0] if failing else None}
