r"""The Hessian where no structure was found: Hessian-vector products of the function itself.

Named so (``structure`` says ``"hvp: no structure found because ..."``), never a structure
guessed: ``hvp`` is JAX's forward-over-reverse product $\frac{d}{dt}\nabla f(x + tv)$,
``dense`` is ``jax.hessian``, and every other operation builds the dense matrix.
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
    """

    kind = "hvp"
    template = "∇²f"
    _arrays = ("args",)
    _static = ("f", "argnums", "reason", "n", "dtype_name")
    args: tuple
    f: object
    argnums: int
    reason: str
    n: int
    dtype_name: str

    def __init__(self, f, args, argnums: int, reason: str):
        leaves = jax.tree_util.tree_leaves(args[argnums])
        n = sum(int(jnp.size(leaf)) for leaf in leaves)
        dtype = jnp.result_type(*leaves) if leaves else jnp.dtype(jnp.float32)
        self._init(args=tuple(args), f=f, argnums=int(argnums), reason=str(reason), n=n,
                   dtype_name=jnp.dtype(dtype).name)

    def flat(self):
        """``(x, g)``: the flattened argument and $\\nabla f$ as a function of it."""
        x, unravel = ravel_pytree(self.args[self.argnums])

        def gradient(flat):
            args = list(self.args)
            args[self.argnums] = unravel(flat)
            g = jax.grad(self.f, argnums=self.argnums)(*args)  # type: ignore[arg-type]
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
    return f"hvp: no structure found because {op.reason}"
