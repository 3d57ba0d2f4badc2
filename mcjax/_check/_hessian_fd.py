r"""Fast mode's independent reference for a Hessian: finite differences of the gradient.

Fast mode judges $H$ against JAX's own exact products; finite differences of the gradient
along a few random directions $\mathbf{w}$ add a reference that does not rest on JAX's
differentiation of the gradient:

$$H\mathbf{w} \approx \frac{4 D(h/2) - D(h)}{3},\qquad
D(h) = \frac{\nabla f(\mathbf{x} + h\mathbf{w}) - \nabla f(\mathbf{x} - h\mathbf{w})}{2h},$$

in float64 (Richardson's extrapolation of central differences; its error is estimated as
$|R - D(h/2)|$), $\mathbf{w}$ a Gaussian direction scaled by each coordinate's scale.  An
entry passes when $|(H\mathbf{w})_i - R_i| \le$ ``FD_HVP_SLACK`` times the check's relative
threshold times the direction's largest $|R|$, plus ``FD_ERROR_SAFETY`` times its error
estimate; entries whose estimate exceeds ``FD_UNRESOLVED`` of the scale, and directions
whose steps switch a branch of the gradient (a kink), are left out.  Finite differences are
there to catch gross errors, not to second-guess the exact references.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from mcjax._check._compare import Comparison
from mcjax._check._hessian_diagnose import products_under_test
from mcjax._check._kinks import crosses, has_switches, switch_sides
from mcjax._core._conventions import standard_promotion
from mcjax._core._tolerance import FD_ERROR_SAFETY, FD_UNRESOLVED

FD_HVP_DIRECTIONS = 2
"""Random directions along which fast mode takes finite differences of the gradient."""

FD_HVP_STEP = 1e-3
"""The larger step $h$, relative to each coordinate's scale (the smaller is $h/2$)."""

FD_HVP_SLACK = 16.0
"""An entry may be off by this many times the check's relative threshold (of the largest
$|R|$): the Hessian under test computes in its own dtype, the reference in float64."""

NAME = "finite differences (H w)"


def _as_float64(tree):
    return jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float64) if hasattr(a, "dtype")
        and jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def fd_comparison(gradient, derivative, args: tuple, argnums: int, threshold, seed: int
                  ) -> tuple[Comparison | None, str | None]:
    """``(comparison, note)``: ``H w`` against finite differences of ``gradient`` in float64
    (``args`` as ``mcjax.check`` got them); ``None`` and the reason when none were taken."""
    if not jax.config.read("jax_enable_x64"):
        return None, "finite differences of the gradient need jax_enable_x64: not taken"
    try:
        with standard_promotion():
            at = _as_float64(args)
            x_flat, unravel = ravel_pytree(at[argnums])
            n = int(x_flat.shape[0])

            def g_flat(t):
                return ravel_pytree(gradient(*at[:argnums], unravel(t), *at[argnums + 1:]))[0]

            scale = jnp.maximum(jnp.abs(x_flat), jnp.sqrt(jnp.mean(x_flat * x_flat)))
            scale = jnp.where(scale > 0, scale, 1.0)
            V = np.random.default_rng([seed, 21]).standard_normal((n, FD_HVP_DIRECTIONS))
            W = np.asarray(scale)[:, None] * V / np.sqrt(n)
            branches = has_switches(jax.make_jaxpr(g_flat)(x_flat).jaxpr)

            @jax.jit
            def program(x, W):
                def along(w):
                    h = FD_HVP_STEP

                    def D(h):
                        return (g_flat(x + h * w) - g_flat(x - h * w)) / (2 * h)

                    coarse, fine = D(h), D(h / 2)
                    crossed = jnp.asarray(False)
                    if branches:
                        _, here = switch_sides(g_flat, x)
                        crossed = crosses(here, switch_sides(g_flat, x + h * w)[1]) | crosses(
                            here, switch_sides(g_flat, x - h * w)[1])
                    return (4 * fine - coarse) / 3, jnp.abs((4 * fine - coarse) / 3 - fine), crossed

                return jax.vmap(along, in_axes=1, out_axes=(1, 1, 0))(W)

            R, est, crossed = (np.asarray(a) for a in program(x_flat, jnp.asarray(W)))
            got = products_under_test(derivative, args, argnums, W)
    except Exception as e:  # noqa: BLE001 - a reference that cannot run is a note, not a verdict
        return None, f"finite differences of the gradient not taken ({type(e).__name__}: {e})"
    big = np.maximum(np.abs(R).max(axis=0, keepdims=True), np.finfo(np.float64).tiny)
    include = (est <= FD_UNRESOLVED * big) & ~crossed[None, :]
    allowed = (FD_HVP_SLACK * threshold.rtol * big + FD_ERROR_SAFETY * est + threshold.atol
               + np.sqrt(np.finfo(np.float64).eps) * big)
    error = np.where(include, np.abs(got - R), 0.0)
    bad = include & ~(error <= allowed)
    comparison = Comparison(
        reference=NAME, max_abs=float(error.max(initial=0.0)),
        max_rel=float((error / big).max(initial=0.0)),
        worst_ratio=float((error / allowed).max(initial=0.0)), violations=int(bad.sum()),
        compared=int(include.sum()), excluded=int((~include).sum()), ok=not bad.any())
    return comparison, None
