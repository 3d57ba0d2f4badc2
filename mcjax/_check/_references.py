r"""The references a derivative is judged against.

- **autodiff**: ``jax.jacfwd`` and ``jax.jacrev`` in ``f``'s own dtype: exact up to rounding
  (where ``f`` calls a ``custom_vjp`` function, forward mode cannot run: ``jax.jacrev`` alone);
- **one-sided derivatives** at kinks, read from ``f``'s jaxpr (``mcjax._check._kinks``);
- **finite differences** in the reference precision (float64 whatever the input dtype,
  unless ``f`` itself rounds to less), with a step that adapts to ``f``: central differences
  on a ladder of steps ``h_k = 0.1 s_j / 4^k`` per coordinate (``s_j`` its scale), Richardson
  extrapolation on every three consecutive steps, and per entry the estimate whose error
  (the spread of neighbouring extrapolations plus rounding ``eps |f| / h``) is smallest.
  Steps whose stencil lands on another branch of a switch are left out.  Where even the best
  estimate is rough (cancellation, overflow), the entry is *unresolved*: the report says so
  and finite differences do not judge it;
- the **Taylor remainder** ``f(x + h t) - f(x)`` over a ladder of ``h`` (the ``h J t`` part
  is subtracted on the host, where the derivative under test is known).

Functions here build in-program arrays (``*_program``) or analyse them on the host; nothing
knows about the derivative under test.  The finite-difference stencils and the Taylor points
are evaluated in one batch: ``f`` is compiled once for both.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check import _kinks
from mcjax._check._flat import FlatSpec
from mcjax._core._tolerance import (
    FD_ERROR_SAFETY,
    FD_LEVELS,
    FD_RATIO,
    FD_STEP,
    FD_UNRESOLVED,
    TAYLOR_H0,
    TAYLOR_RUNGS,
)

FD_VMAP_ENTRIES = 1 << 21  # points x outputs evaluated in one vmap


def coordinate_scales(x, x_spec: FlatSpec):
    """Each coordinate's scale ``max(|x_j|, rms of its leaf)``, 1 for an all-zero leaf."""
    parts = []
    for o, n in zip(x_spec.offsets, x_spec.sizes):
        leaf = x[o : o + n]
        rms = jnp.sqrt(jnp.mean(leaf * leaf))
        rms = jnp.where(rms > 0, rms, jnp.ones_like(rms))
        parts.append(jnp.maximum(jnp.abs(leaf), rms))
    return jnp.concatenate(parts)


def autodiff_program(f_flat, x, reverse_only: bool) -> dict:
    """``jax.jacfwd`` and ``jax.jacrev`` of ``f_flat`` at ``x``: shapes ``(m, n)``.

    Where JAX's reverse mode cannot differentiate ``f`` (a primitive whose transpose JAX lacks,
    as the padding value of ``lax.pad`` in JAX 0.10), ``jax.jacfwd`` stands for both and
    ``forward_only`` says so (the report notes it)."""
    try:
        jacrev = jax.jacrev(f_flat)(x)
    except Exception:  # noqa: BLE001 - JAX's own failure to transpose: forward mode judges
        if reverse_only:
            raise
        jacfwd = jax.jacfwd(f_flat)(x)
        return {"jacfwd": jacfwd, "jacrev": jacfwd, "forward_only": jnp.asarray(True)}
    return {"jacfwd": jacrev if reverse_only else jax.jacfwd(f_flat)(x), "jacrev": jacrev}


def _evaluator(f_flat, x, switches: bool):
    """``at(point) -> (f(point), crossed)``: crossed says whether a switch changed side."""
    if not switches:
        return lambda point: (f_flat(point), jnp.asarray(False))
    _, here = _kinks.switch_sides(f_flat, x)

    def at(point):
        value, there = _kinks.switch_sides(f_flat, point)
        return value, _kinks.crosses(here, there)

    return at


def stencil_program(f_flat, x, x_spec: FlatSpec, m: int, normal, switches: bool) -> dict:
    """``f`` (with ``m`` outputs) at every point finite differences and the Taylor test need,
    in one batch.

    Finite differences: ``x ± h_k e_j`` for every level ``k`` and coordinate ``j``; the Taylor
    test: ``x + h t`` for each ``h`` of its ladder along ``t = normal * scale`` (``normal`` is a
    standard normal vector drawn on the host: an in-program ``jax.random.normal`` doubles the
    compile time).  One batch of points compiles ``f`` once.

    Returns ``f0`` (m,); ``plus``/``minus`` (L, m, n) and the steps taken ``h_plus``/``h_minus``
    (L, n) (exactly representable); ``t`` (n,) and ``differences`` (rungs, m); and ``crossed``
    for both, ``(2, L, n)`` and ``(rungs,)``: the point lies on another branch of a switch.
    """
    n = x.shape[0]
    scale = coordinate_scales(x, x_spec)
    levels = jnp.stack([FD_STEP * scale / FD_RATIO**k for k in range(FD_LEVELS)])  # (L, n)
    h_plus = (x[None, :] + levels) - x[None, :]
    h_minus = x[None, :] - (x[None, :] - levels)
    steps = jnp.concatenate([h_plus, -h_minus], axis=0).reshape(-1)  # (2 L n,)
    index = jnp.tile(jnp.arange(n), 2 * FD_LEVELS)
    # x + step e_j without a scatter (which XLA compiles slowly), then the Taylor points
    stencils = jnp.where(jnp.arange(n)[None, :] == index[:, None], x[None, :] + steps[:, None],
                         x[None, :])
    t = normal.astype(x.dtype) * scale
    hs = jnp.asarray(taylor_steps(), x.dtype)
    points = jnp.concatenate([x[None, :], stencils, x[None, :] + hs[:, None] * t[None, :]])
    at = _evaluator(f_flat, x, switches)
    if points.shape[0] * m <= FD_VMAP_ENTRIES:  # small: one batch compiles fastest
        values, crossed = jax.vmap(at)(points)
    else:
        values, crossed = jax.lax.map(at, points, batch_size=256)
    f0, fd, taylor = values[0], values[1 : 1 + steps.shape[0]], values[1 + steps.shape[0] :]
    fd = fd.reshape(2, FD_LEVELS, n, -1).transpose(0, 1, 3, 2)  # (2, L, m, n)
    return {"f0": f0, "plus": fd[0], "minus": fd[1], "h_plus": h_plus, "h_minus": h_minus,
            "crossed": crossed[1 : 1 + steps.shape[0]].reshape(2, FD_LEVELS, n),
            "t": t, "differences": taylor - f0[None, :], "taylor_crossed": crossed[1 + steps.shape[0]:]}


@dataclass(frozen=True)
class FiniteDifferences:
    """The finite-difference reference at one point, arrays ``(m, n)`` in float64."""

    value: np.ndarray  # the best Richardson estimate (NaN where none)
    error: np.ndarray  # its error allowance (already times the safety)
    defined: np.ndarray  # bool: enough steps stay on x's branches and in f's domain
    resolved: np.ndarray  # bool: defined, and the error is small enough to judge with


def fd_analyse(stencils: dict, scale: np.ndarray, precision: str) -> FiniteDifferences:
    """Pick, per entry, the finite-difference estimate with the smallest error.

    Args:
      stencils: ``stencil_program``'s output at one point, as NumPy.
      scale: ``(m, n)``, the magnitude each entry is judged against.
      precision: the dtype ``f`` rounds to.
    """
    f0 = np.asarray(stencils["f0"], np.float64)[None, :, None]
    plus = np.asarray(stencils["plus"], np.float64)
    minus = np.asarray(stencils["minus"], np.float64)
    hp = np.asarray(stencils["h_plus"], np.float64)[:, None, :]
    hm = np.asarray(stencils["h_minus"], np.float64)[:, None, :]
    crossed = np.asarray(np.asarray(stencils["crossed"]).any(axis=0))[:, None, :]  # (L, 1, n)
    central = (plus - minus) / (hp + hm)  # (L, m, n)
    valid = np.isfinite(central) & ~crossed
    r = float(FD_RATIO**2)
    r1 = (r * central[1:] - central[:-1]) / (r - 1)  # (L-1, m, n), error O(h^4)
    r2 = (r * r * r1[1:] - r1[:-1]) / (r * r - 1)  # (L-2, m, n), error O(h^6)
    ok4 = valid[:-3] & valid[1:-2] & valid[2:-1] & valid[3:]  # levels k..k+3 usable
    truncation = np.maximum(np.abs(r2[:-1] - r1[1:-1]), np.abs(r2[:-1] - r2[1:]))
    eps = float(jnp.finfo(precision).eps)
    magnitude = np.maximum(np.abs(f0), np.maximum(np.abs(plus), np.abs(minus)))  # (L, m, n)
    rounding = 4 * eps * magnitude[3:] / hm[2:-1]  # the smallest step an estimate uses
    with np.errstate(invalid="ignore"):
        error = np.where(ok4 & np.isfinite(truncation), truncation + rounding, np.inf)
    best = np.argmin(error, axis=0)[None]  # (1, m, n)
    best_error = np.take_along_axis(error, best, axis=0)[0]
    value = np.take_along_axis(r2[:-1], best, axis=0)[0]
    defined = np.isfinite(best_error)
    value = np.where(defined, value, np.nan)
    consistent = _finer_steps_agree(central, valid, best[0], value, best_error,
                                    4 * eps * magnitude / hm)
    resolved = defined & consistent & (best_error <= FD_UNRESOLVED * scale)
    floor = np.sqrt(eps) * scale  # what finite differences can vouch for, at best
    return FiniteDifferences(value, np.where(defined, FD_ERROR_SAFETY * best_error + floor, np.inf),
                             defined, resolved)


def _finer_steps_agree(central, valid, best, value, error, rounding) -> np.ndarray:
    """Whether every central difference on a step finer than the estimate's own agrees with it.

    Going to finer steps, truncation only shrinks: a finer difference may stray from the
    estimate by its rounding and by the truncation of the finest step the estimate used, no
    more.  A function that varies faster than the coarse steps can follow (they alias)
    breaks this, however consistent the coarse steps look among themselves.
    """
    levels = np.arange(central.shape[0])[:, None, None]
    finest = np.take_along_axis(central, np.minimum(best + 2, central.shape[0] - 1)[None],
                                axis=0)[0]
    slack = FD_ERROR_SAFETY * (rounding + error[None]) + np.abs(finest - value)[None]
    with np.errstate(invalid="ignore"):
        stray = valid & (levels > best[None] + 2) & ~(np.abs(central - value[None]) <= slack)
    return ~stray.any(axis=0)


def taylor_steps() -> np.ndarray:
    """The ladder ``h0, h0/2, ..., h0/2^(R-1)``."""
    return TAYLOR_H0 / 2.0 ** np.arange(TAYLOR_RUNGS)
