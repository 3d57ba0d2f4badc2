"""mcjax: the matrix calculus of deep learning, executable in JAX.

Pure functions for the pieces of a network, the hand-derived derivative of each as the formula
a person derives (Parr & Howard, "The Matrix Calculus You Need For Deep Learning",
arXiv:1802.01528), and the machinery to prove each formula equal to JAX autodiff.
"""

from mcjax import rules as rules  # fills the registry
from mcjax._check._api import assert_derivative, check, check_chain, check_points
from mcjax._check._layout import to_denominator, to_numerator
from mcjax._check._report import Report
from mcjax._check._verify import RuleResult, verify
from mcjax._conventions import LAYOUT, Tolerance, data_parallel_tolerance, tolerance
from mcjax._derive import derive
from mcjax._errors import (
    CheckpointError,
    DerivativeError,
    DtypeError,
    NonFiniteLossError,
    ShapeError,
    TraceError,
)
from mcjax._jacobian import (
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
    ScaledIdentity,
    Slice,
    Sum,
    SumAlong,
    Zero,
    densify,
)
from mcjax._registry import REGISTRY, Derivative, Registry, Rule, derivative, rule
from mcjax._train._checkpoint import latest_checkpoint, restore_checkpoint
from mcjax._train._compiled import enable_compilation_cache
from mcjax._train._data import digits_data, neuron_data
from mcjax._train._distributed import Processes, init_distributed
from mcjax._train._loop import TrainResult
from mcjax._train._models import GRAD_SOURCES, Model, objective
from mcjax._train._paper_models import mlp_model, neuron_model
from mcjax._train._optim import optimizer, schedule
from mcjax._train._sharding import (
    batch_sharding,
    data_mesh,
    masked_objective,
    pad_batch,
    replicate,
    shard_batch,
)
from mcjax._train._step import make_train_epoch, make_train_step, train_epoch, train_step
from mcjax._train._train import train
from mcjax.rules.activations import leaky_relu, neuron, relu, sigmoid, softplus, tanh
from mcjax.rules.affine import affine, matvec
from mcjax.rules.chain import (
    Differentiable,
    single_variable_chain_rule,
    total_derivative_chain_rule,
    vector_chain_rule,
)
from mcjax.rules.elementwise import add, divide, maximum, multiply, subtract
from mcjax.rules.losses import (
    logistic_loss,
    mse,
    neuron_loss,
    softmax,
    softmax_cross_entropy,
)
from mcjax.rules.mlp import (
    dense_layer,
    layer_backward,
    mlp_apply,
    mlp_backprop,
    mlp_init,
    mlp_loss,
)
from mcjax.rules.reductions import dot, sum_product, sum_reduction
from mcjax.rules.scalar_expansion import add_scalar, multiply_scalar

__version__ = "0.1.0"

__all__ = [
    # the paper's functions
    "affine",
    "matvec",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "softplus",
    "neuron",
    "neuron_loss",
    "mse",
    "softmax",
    "softmax_cross_entropy",
    "logistic_loss",
    "dense_layer",
    "layer_backward",
    "mlp_init",
    "mlp_apply",
    "mlp_loss",
    "mlp_backprop",
    # element-wise, scalar expansion, reductions
    "add",
    "subtract",
    "multiply",
    "divide",
    "maximum",
    "add_scalar",
    "multiply_scalar",
    "sum_reduction",
    "sum_product",
    "dot",
    # chain rules
    "Differentiable",
    "vector_chain_rule",
    "single_variable_chain_rule",
    "total_derivative_chain_rule",
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
    "Opaque",
    "densify",
    # the paper's calculus done by the machine
    "derive",
    # the registry
    "Rule",
    "Derivative",
    "Registry",
    "REGISTRY",
    "rule",
    "derivative",
    # checking a derivative
    "check",
    "assert_derivative",
    "check_points",
    "check_chain",
    "to_numerator",
    "to_denominator",
    "Report",
    "DerivativeError",
    # training
    "train",
    "TrainResult",
    "Model",
    "neuron_model",
    "mlp_model",
    "objective",
    "GRAD_SOURCES",
    "optimizer",
    "schedule",
    "train_step",
    "train_epoch",
    "make_train_step",
    "make_train_epoch",
    "restore_checkpoint",
    "latest_checkpoint",
    "enable_compilation_cache",
    "neuron_data",
    "digits_data",
    "NonFiniteLossError",
    "CheckpointError",
    # scaling out: data parallelism over devices and hosts
    "data_mesh",
    "shard_batch",
    "replicate",
    "batch_sharding",
    "pad_batch",
    "masked_objective",
    "init_distributed",
    "Processes",
    "data_parallel_tolerance",
    # verification and conventions
    "verify",
    "RuleResult",
    "LAYOUT",
    "Tolerance",
    "tolerance",
    "ShapeError",
    "DtypeError",
    "TraceError",
    "rules",
]
