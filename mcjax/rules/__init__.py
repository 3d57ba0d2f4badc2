"""The rules of Parr & Howard, one module per family.

Importing this package fills the default registry; each family module defines its forward
functions, their hand-derived derivatives and the formula text side by side:

- ``mcjax.rules.elementwise``: element-wise binary and unary operators (§4.2, §8.2)
- ``mcjax.rules.scalar_expansion``: vector op scalar (§4.3, §8.3)
- ``mcjax.rules.reductions``: sum reduction, dot product (§4.4, §8.4)
- ``mcjax.rules.affine``: matrix-vector product, affine map (§5, §8.1)
- ``mcjax.rules.activations``: activations and the neuron (§5)
- ``mcjax.rules.losses``: the paper's loss and the usual ones (§6)
- ``mcjax.rules.chain``: the chain rules as combinators (§4.5, §8.5)
- ``mcjax.rules.mlp``: layers and backpropagation through an MLP
"""

from mcjax.rules import (  # imported for their registrations
    activations,
    affine,
    chain,
    elementwise,
    losses,
    mlp,
    reductions,
    scalar_expansion,
)

__all__ = ["elementwise", "scalar_expansion", "reductions", "affine", "activations", "losses",
           "chain", "mlp"]
