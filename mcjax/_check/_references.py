"""References a derivative is judged against, as pure jittable functions of the flat argument.

- autodiff: ``jax.jacfwd`` and ``jax.jacrev`` in ``f``'s own dtype;
- finite differences in the reference precision (float64 whatever the input dtype, unless
  ``f`` itself rounds to less): central differences at steps ``h, h/2, h/4`` per coordinate,
  each step scaled to the coordinate, extrapolated by Richardson; the one-sided differences of
  the same stencils reveal kinks (see :mod:`mcjax._check._kinks`);
- the Taylor remainder ``f(x + h t) - f(x)`` over a ladder of ``h`` (the ``h J t`` part is
  subtracted on the host, where the derivative under test is known).

Nothing here knows about the derivative under test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check._flat import FlatSpec
from mcjax._conventions import FD_LEVELS, FD_STEP, TAYLOR_H0, TAYLOR_RUNGS

FD_VMAP_ENTRIES = 1 << 20  # stencil points x coordinates evaluated in one vmap


def coordinate_scales(x, x_spec: FlatSpec):
    """Each coordinate's scale ``max(|x_j|, rms of its leaf)``, 1 for an all-zero leaf."""
    parts = []
    for o, n in zip(x_spec.offsets, x_spec.sizes):
        leaf = x[o : o + n]
        rms = jnp.sqrt(jnp.mean(leaf * leaf))
        rms = jnp.where(rms > 0, rms, jnp.ones_like(rms))
        parts.append(jnp.maximum(jnp.abs(leaf), rms))
    return jnp.concatenate(parts)


def autodiff(f_flat, x) -> dict:
    """``jax.jacfwd`` and ``jax.jacrev`` of ``f_flat`` at ``x``: shapes ``(m, n)``."""
    return {"jacfwd": jax.jacfwd(f_flat)(x), "jacrev": jax.jacrev(f_flat)(x)}


def finite_difference_stencils(f_flat, x, x_spec: FlatSpec, precision: str) -> dict:
    """``f`` at ``x``, and at ``x ± h_l e_j`` for every coordinate ``j`` and level ``l``.

    Args:
      f_flat: ``(n,) -> (m,)`` in the reference precision.
      x: shape ``(n,)`` in the reference precision.
      precision: the dtype ``f`` really rounds to (picks the base step).

    Returns:
      ``f0`` (m,), ``plus`` and ``minus`` (levels, m, n), ``h_plus`` and ``h_minus``
      (levels, n): the steps actually taken (exactly representable).
    """
    n = x.shape[0]
    base = FD_STEP.get(precision, FD_STEP["float32"])
    h = base * coordinate_scales(x, x_spec)
    levels = jnp.stack([h / 2**level for level in range(FD_LEVELS)])  # (L, n)
    h_plus = (x[None, :] + levels) - x[None, :]
    h_minus = x[None, :] - (x[None, :] - levels)
    steps = jnp.concatenate([h_plus, -h_minus], axis=0).reshape(-1)  # (2L n,)
    index = jnp.tile(jnp.arange(n), 2 * FD_LEVELS)

    def at(job):
        j, step = job
        return f_flat(x.at[j].add(step))

    if steps.shape[0] * n <= FD_VMAP_ENTRIES:  # small: one batch compiles fastest
        values = jax.vmap(at)((index, steps))
    else:
        values = jax.lax.map(at, (index, steps), batch_size=256)
    values = values.reshape(2, FD_LEVELS, n, -1).transpose(0, 1, 3, 2)  # (2, L, m, n)
    return {"f0": f_flat(x), "plus": values[0], "minus": values[1],
            "h_plus": h_plus, "h_minus": h_minus}


def taylor_steps() -> np.ndarray:
    """The ladder ``h0, h0/2, ..., h0/2^(R-1)``."""
    return TAYLOR_H0 / 2.0 ** np.arange(TAYLOR_RUNGS)


def taylor_differences(f_flat, x, x_spec: FlatSpec, normal) -> dict:
    """``f(x + h t) - f(x)`` for each ``h`` of the ladder, along a random direction ``t``.

    ``t`` is ``normal`` (a standard normal vector, shape ``(n,)``, drawn on the host: an
    in-program ``jax.random.normal`` doubles the compile time of a full-mode check) times
    each coordinate's scale, so that ``h`` is a relative step.  Returns ``t`` (n,) and
    ``differences`` (rungs, m).
    """
    t = normal.astype(x.dtype) * coordinate_scales(x, x_spec)
    f0 = f_flat(x)
    hs = jnp.asarray(taylor_steps(), x.dtype)
    differences = jax.vmap(lambda h: f_flat(x + h * t) - f0)(hs)
    return {"t": t, "differences": differences, "f0": f0}
