r"""The Hessian where no structure was found: Hessian-vector products of the function itself.

Named so (``structure`` says ``"hvp: no structure found because ..."``), never a structure
guessed: ``hvp`` is JAX's forward-over-reverse product $\frac{d}{dt}\nabla f(x + tv)$,
``dense`` is ``jax.hessian``, and every other operation builds the dense matrix.  Where JAX's
reverse mode fails on ``f`` (``lax.pad`` of a constant with respect to its padding value:
JAX's transpose rule then sums ``None``), the gradient is taken in forward mode
(``jax.jacfwd``, $n$ products) and the operator is forward over forward (``mode``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from mcjax._curvature._operator import Curvature, dense, describe, mv


class HessianVectorProducts(Curvature):
    """The Hessian of ``f`` at a point, as Hessian-vector products (no structure found).

    Args:
      f: the scalar function (static).
      args: ``f``'s positional arguments at the point.
      argnums: which argument the Hessian is with respect to.
      reason: why no structure was found, one sentence.
      mode: ``"reverse"`` (forward over reverse, ``jax.grad``) or ``"forward"`` (forward over
        forward, ``jax.jacfwd``: where JAX's reverse mode fails on ``f``).
    """

    kind = "hvp"
    template = "∇²f"
    _arrays = ("args",)
    _static = ("f", "argnums", "reason", "n", "dtype_name", "mode")
    args: tuple
    f: object
    argnums: int
    reason: str
    n: int
    dtype_name: str
    mode: str

    def __init__(self, f, args, argnums: int, reason: str, mode: str = "reverse"):
        if mode not in ("reverse", "forward"):
            raise ValueError(f"mcjax.curvature.HessianVectorProducts: mode={mode!r}; expected "
                             "'reverse' or 'forward'")
        leaves = jax.tree_util.tree_leaves(args[argnums])
        n = sum(int(jnp.size(leaf)) for leaf in leaves)
        dtype = jnp.result_type(*leaves) if leaves else jnp.dtype(jnp.float32)
        self._init(args=tuple(args), f=f, argnums=int(argnums), reason=str(reason), n=n,
                   dtype_name=jnp.dtype(dtype).name, mode=mode)

    def flat(self):
        """``(x, g)``: the flattened argument and $\\nabla f$ as a function of it."""
        x, unravel = ravel_pytree(self.args[self.argnums])

        def gradient(flat):
            args = list(self.args)
            args[self.argnums] = unravel(flat)
            by = jax.grad if self.mode == "reverse" else jax.jacfwd
            g = by(self.f, argnums=self.argnums)(*args)  # type: ignore[operator]
            return ravel_pytree(g)[0]

        return x, gradient

    @property
    def size(self) -> int:
        return self.n

    @property
    def dtype(self):
        return jnp.dtype(self.dtype_name)


@mv.register
def _(op: HessianVectorProducts, v):
    x, gradient = op.flat()
    return jax.jvp(gradient, (x,), (v.astype(x.dtype),))[1]


@dense.register
def _(op: HessianVectorProducts):
    x, gradient = op.flat()
    return jax.jacfwd(gradient)(x)


@describe.register
def _(op: HessianVectorProducts):
    how = "" if op.mode == "reverse" else "; its products are forward over forward"
    return f"hvp: no structure found because {op.reason}{how}"


def hessian_vector_products(f, args, argnums: int, reason: str) -> HessianVectorProducts:
    """The fallback in the first mode JAX can trace (forward over reverse, else forward over
    forward): a product is traced once here (``jax.eval_shape``, nothing computed).

    Raises:
      Exception: the error of the forward-over-forward product, where neither traces (JAX
        defines no second derivative of ``f``: ``lax.igamma`` with respect to ``a``).
    """
    op = HessianVectorProducts(f, args, argnums, reason, "reverse")
    try:
        jax.eval_shape(op.hvp, jax.ShapeDtypeStruct((op.size,), op.dtype))
        return op
    except Exception:  # noqa: BLE001 - JAX's reverse mode fails on f: forward mode then
        pass
    op = HessianVectorProducts(f, args, argnums, reason, "forward")
    jax.eval_shape(op.hvp, jax.ShapeDtypeStruct((op.size,), op.dtype))
    return op
