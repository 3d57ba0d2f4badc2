"""mcjax: the matrix calculus of deep learning, executable in JAX.

Pure functions for the pieces of a network, the hand-derived derivative of each as the formula
a person derives (Parr & Howard, "The Matrix Calculus You Need For Deep Learning",
arXiv:1802.01528), the machinery to prove each formula (and yours) right, and jitted training.

The top level holds what a researcher types daily: the paper's functions, their derivatives,
the structured Jacobians, ``derive``, the checker and ``train``.  The infrastructure lives in
public submodules named for what they hold: ``mcjax.registry``, ``mcjax.conventions``,
``mcjax.steps``, ``mcjax.sharding``, ``mcjax.checkpoints``,
``mcjax.compilation``, ``mcjax.datasets``, ``mcjax.curvature`` and ``mcjax.testing``.
"""

from importlib import metadata as _metadata

from mcjax import (  # noqa: E402, I001 - the public submodules, after what they build on
    checkpoints as checkpoints,
)
from mcjax import (
    compilation as compilation,
)
from mcjax import (
    conventions as conventions,
)
from mcjax import (
    curvature as curvature,
)
from mcjax import (
    datasets as datasets,
)
from mcjax import (
    registry as registry,
)
from mcjax import rules as rules  # fills the registry
from mcjax import (
    sharding as sharding,
)
from mcjax import (
    steps as steps,
)
from mcjax import (
    testing as testing,
)
from mcjax._check._api import assert_derivative, check, check_cases, check_chain, check_points
from mcjax._check._hessian import assert_hessian, check_hessian
from mcjax._check._report import Report
from mcjax._check._returned import vjp
from mcjax._check._rules import assert_rule, check_rule, check_rules
from mcjax._core import _public
from mcjax._core._errors import (
    CheckpointError,
    DerivativeError,
    DtypeError,
    NonFiniteLossError,
    ShapeError,
    TraceError,
)
from mcjax._curvature import Curvature
from mcjax._derive import derive, gauss_newton, hessian
from mcjax._derive._kfac import LayerFactors, kfac_factors
from mcjax._derive._kfac_check import kfac_factor_problems
from mcjax._jacobian import (
    Applied,
    BlockDiagonal,
    Broadcast,
    Composed,
    Contraction,
    Dense,
    Diagonal,
    Embed,
    Expand,
    Fill,
    Jacobian,
    Kronecker,
    Opaque,
    Permutation,
    Reshape,
    Sandwich,
    ScaledIdentity,
    Slice,
    Sum,
    SumAlong,
    Take,
    Zero,
    densify,
)
from mcjax._registry import Derivative, derivative, rule
from mcjax._train._history import EpochRecord
from mcjax._train._kfac import kfac, scale_by_kfac
from mcjax._train._models import Model, objective
from mcjax._train._optim import optimizer, schedule
from mcjax._train._paper_models import mlp_model, neuron_model
from mcjax._train._result import TrainResult
from mcjax._train._train import train
from mcjax.rules.activations import leaky_relu, neuron, relu, sigmoid, softplus, tanh
from mcjax.rules.affine import affine, matvec
from mcjax.rules.chain import (
    Differentiable,
    log_square_sin_exp,
    sigmoid_of_tanh,
    sin_of_square,
    single_variable_chain_rule,
    total_derivative_chain_rule,
    total_derivative_product,
    total_derivative_sum,
    vector_chain_rule,
)
from mcjax.rules.elementwise import (
    abs as abs,  # noqa: A004 - the paper's |x|, as jnp.abs; not in __all__ (see there)
)
from mcjax.rules.elementwise import (
    add,
    cos,
    divide,
    exp,
    log,
    maximum,
    multiply,
    negative,
    sin,
    sqrt,
    square,
    subtract,
)
from mcjax.rules.losses import logistic_loss, mse, neuron_loss, softmax, softmax_cross_entropy
from mcjax.rules.mlp import (
    dense_layer,
    dense_loss,
    layer_backward,
    mlp_apply,
    mlp_backprop,
    mlp_init,
    mlp_loss,
)
from mcjax.rules.reductions import dot, sum_product, sum_reduction, sum_scalar_product
from mcjax.rules.scalar_expansion import (
    add_scalar,
    divide_scalar,
    multiply_scalar,
    subtract_scalar,
)

try:
    __version__ = _metadata.version("mcjax")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    # the paper's functions: element-wise (§4.2, §8.2)
    "add",
    "subtract",
    "multiply",
    "divide",
    "maximum",
    "negative",
    "square",
    "exp",
    "log",
    "sqrt",
    "sin",
    "cos",
    # (mcjax.abs too, left out of `from mcjax import *`, which would shadow Python's abs)
    # scalar expansion (§4.3) and reductions (§4.4)
    "add_scalar",
    "subtract_scalar",
    "multiply_scalar",
    "divide_scalar",
    "sum_reduction",
    "sum_product",
    "sum_scalar_product",
    "dot",
    # the affine map, activations, the neuron and its loss (§5, §6)
    "matvec",
    "affine",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "softplus",
    "neuron",
    "neuron_loss",
    # beyond the paper: losses, a layer, an MLP
    "mse",
    "softmax",
    "softmax_cross_entropy",
    "logistic_loss",
    "dense_layer",
    "dense_loss",
    "layer_backward",
    "mlp_init",
    "mlp_apply",
    "mlp_loss",
    "mlp_backprop",
    # the chain rules (§4.5) and the paper's examples of them
    "Differentiable",
    "vector_chain_rule",
    "single_variable_chain_rule",
    "total_derivative_chain_rule",
    "sin_of_square",
    "log_square_sin_exp",
    "total_derivative_sum",
    "total_derivative_product",
    "sigmoid_of_tanh",
    # derivatives: the hand-derived ones, and the paper's calculus done by the machine
    "derivative",
    "rule",
    "Derivative",
    "derive",
    "hessian",
    "gauss_newton",
    "Curvature",
    # structured Jacobians
    "Jacobian",
    "Dense",
    "Diagonal",
    "ScaledIdentity",
    "Fill",
    "Broadcast",
    "Kronecker",
    "BlockDiagonal",
    "Composed",
    "Sum",
    "Zero",
    "Permutation",
    "Reshape",
    "Slice",
    "Embed",
    "Expand",
    "SumAlong",
    "Contraction",
    "Applied",
    "Take",
    "Sandwich",
    "Opaque",
    "densify",
    # checking a derivative
    "check",
    "assert_derivative",
    "check_points",
    "check_cases",
    "check_chain",
    "check_hessian",
    "assert_hessian",
    "check_rule",
    "check_rules",
    "assert_rule",
    "vjp",
    "Report",
    "DerivativeError",
    "TraceError",
    "ShapeError",
    "DtypeError",
    # training
    "train",
    "TrainResult",
    "EpochRecord",
    "Model",
    "neuron_model",
    "mlp_model",
    "objective",
    "optimizer",
    "schedule",
    # second order: K-FAC's factors from the loss, and the optimizer that uses them
    "kfac",
    "scale_by_kfac",
    "kfac_factors",
    "kfac_factor_problems",
    "LayerFactors",
    "NonFiniteLossError",
    "CheckpointError",
]

# help(), reprs and tracebacks name a public object as users import it: mcjax.check, not
# mcjax._check._api.check; mcjax.registry.Rule (a name both export is mcjax's)
_public.publish(__name__, globals())
for _module in (registry, conventions, steps, sharding, checkpoints, compilation, datasets,
                curvature, testing):
    _public.publish(_module.__name__, vars(_module))
del _module
