r"""K-FAC's Kronecker factors, found from the loss itself: no layer tags.

A dense layer is an equation ``dot_general`` of an activation $\mathbf{a}$ (one row per
example) with a parameter leaf $W$ (2-D, used by no other contraction), optionally followed by
the ``add`` of a parameter leaf $\mathbf{b}$: $\mathbf{s} = W\mathbf{a} (+ \mathbf{b})$ in
either layout (``x @ W``, ``x @ W.T``, ``W @ x``).  Its block of the Fisher is approximated
(Martens & Grosse 2015, §3) by $A \otimes G$ with

$$A = \mathbb{E}_i[\bar{\mathbf{a}}_i\bar{\mathbf{a}}_i^\top],\qquad
  G = \mathbb{E}_i[\mathbf{g}_i\mathbf{g}_i^\top],\qquad
  \mathbf{g}_i = \nabla_{\mathbf{s}_i}\,\ell(\theta; x_i, y_i)$$

where $\bar{\mathbf{a}} = (\mathbf{a}, 1)$ when the layer has a bias ($\mathbf{a}$
otherwise), $\ell$ is the loss of one example and $\mathbb{E}_i$ the mean over the batch.
Two estimators: the **exact generalised Gauss-Newton** (``"ggn"``, the default: $G$ is
$\mathbb{E}_i[J_i^\top H_i J_i]$, $H_i$ the loss's Hessian in the network's output, i.e. the
expectation of $\mathbf{g}\mathbf{g}^\top$ over labels drawn from the model for softmax
cross-entropy; kfac-jax's ``ggn_exact``) and the **empirical Fisher** (``"empirical"``:
$\mathbf{g}_i$ at the true label $y_i$; kfac-jax's ``fisher_empirical``, whose $G$ is $1/B$
of this one).

How: the loss is traced at one example's shapes (``jax.make_jaxpr``) and its jaxpr walked by
the one walker (``mcjax._program._walk``) twice: once on *origins* (is this value a
parameter leaf, its transpose, a broadcast bias, a layer's product) to find the layers, once
on arrays, adding a zero *probe* to each layer's product $W\mathbf{a}$ and recording
$\mathbf{a}$.  The gradient with respect to the probes is every layer's
$\mathbf{g}$ at once: one backward pass, batched over the examples with ``jax.vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._program._walk import Interpreter, bind

ESTIMATORS = ("ggn", "empirical", "fisher")
"""The curvature estimators of ``mcjax.kfac_factors``: ``"ggn"``, the exact generalised
Gauss-Newton (the exact Fisher for softmax cross-entropy and squared error),
``"empirical"``, the empirical Fisher (gradients at the true labels), and ``"fisher"``, the
Fisher from one label per example drawn from the model (softmax cross-entropy and squared
error only)."""


class LayerFactors(NamedTuple):
    """One dense layer's Kronecker factors: ``A`` (n_in [+1], n_in [+1]) and ``G``
    (n_out, n_out)."""

    A: jax.Array
    G: jax.Array


class DenseLayer(NamedTuple):
    """Where a dense layer's parameters are: ``weight`` and ``bias`` (None: no bias) index the
    flattened parameter leaves; ``in_axis`` is the axis of W that meets the activation."""

    path: str
    weight: int
    bias: int | None
    in_axis: int
    n_in: int
    n_out: int


class _Origin(NamedTuple):
    kind: str  # "leaf" (a parameter leaf, maybe transposed), "bias" (a 1-D leaf, shaped),
    # "param" (computed from parameters alone), "product" (a layer's W a), "biased" (+ b),
    # "constant", "other" (anything that reads the data)
    leaf: int = -1
    transposed: bool = False
    layer: int = -1


_OTHER = _Origin("other")
_CONSTANT = _Origin("constant")
_OF_PARAMS = frozenset({"leaf", "bias", "param"})
_SHAPING = frozenset({"reshape", "broadcast_in_dim", "convert_element_type", "squeeze",
                      "expand_dims", "copy", "copy_p"})
_CONTRACTIONS = frozenset({"dot_general", "conv_general_dilated", "ragged_dot",
                           "ragged_dot_general"})


def _fail(path: str, why: str):
    raise ValueError(f"mcjax.kfac_factors: parameter {path} {why}; K-FAC factors dense "
                     "layers only: a 2-D weight W meeting one activation row per example in "
                     "a dot_general (x @ W, x @ W.T, W @ x), optionally plus a bias leaf")


class _Finder(Interpreter[_Origin]):
    """The walk on origins that finds the dense layers (and refuses what it cannot factor)."""

    def __init__(self, paths: list[str], n_params: int):
        super().__init__()
        self.paths, self.n_params = paths, n_params
        self.layers: list[dict] = []  # {"eqn", "weight", "in_axis", "n_in", "n_out", "bias"}
        self.used: dict[int, int] = {}  # weight leaf -> its layer

    def literal(self, value) -> _Origin:
        return _CONSTANT

    def custom(self, eqn, ins):
        return self.inline(eqn, ins)

    def primitive(self, eqn, ins: list[_Origin]) -> list[_Origin]:
        name = eqn.primitive.name
        first = ins[0] if ins else _OTHER
        if name == "transpose" and first.kind == "leaf" and tuple(eqn.params["permutation"]) \
                == (1, 0):
            return [first._replace(transposed=not first.transposed)]
        if name in _SHAPING and first.kind in ("leaf", "bias") and len(ins) == 1:
            ndim = len(eqn.invars[0].aval.shape)
            if first.kind == "bias" or (ndim == 1 and not first.transposed):
                return [_Origin("bias", first.leaf)]
            if name == "convert_element_type":
                return [first]
        if name == "dot_general":
            return [self._dot(eqn, ins)]
        if name == "add" and len(ins) == 2:
            found = self._bias(eqn, ins)
            if found is not None:
                return [found]
        params = [o for o in ins if o.kind in _OF_PARAMS]
        if params and name in _CONTRACTIONS:
            _fail(self.paths[params[0].leaf], f"enters {name}, which is no dense layer")
        # a value computed from parameters alone (and constants) stays theirs: a contraction
        # with it is refused below; one that also reads the data is an activation
        if params and all(o.kind in _OF_PARAMS or o is _CONSTANT for o in ins):
            return [_Origin("param", params[0].leaf)] * len(eqn.outvars)
        return [_OTHER] * len(eqn.outvars)

    def _dot(self, eqn, ins) -> _Origin:
        (contract_l, contract_r), (batch_l, _) = eqn.params["dimension_numbers"]
        leaves = [i for i, o in enumerate(ins) if o.kind == "leaf"]
        derived = [o for o in ins if o.kind in ("param", "bias")]
        if derived:
            _fail(self.paths[derived[0].leaf], "enters a dot_general after an operation on it "
                  "(a reshape, a product, ...), not as the 2-D leaf itself")
        if not leaves:
            return _OTHER
        side = leaves[0]
        w, path = ins[side], self.paths[ins[side].leaf]
        shape = eqn.invars[side].aval.shape
        act_shape = eqn.invars[1 - side].aval.shape
        contract = (contract_l, contract_r)[side]
        if len(leaves) == 2:
            _fail(path, f"is multiplied by parameter {self.paths[ins[1].leaf]}, not by an "
                        "activation")
        if len(shape) != 2 or batch_l or len(contract) != 1:
            _fail(path, f"enters a dot_general as a {len(shape)}-D operand with "
                        f"{len(contract)} contracted and {len(batch_l)} batch axes")
        if int(np.prod(act_shape)) != shape[contract[0]]:
            _fail(path, f"meets an activation of shape {tuple(act_shape)} (one example), "
                        f"not one row of {shape[contract[0]]}")
        if w.leaf in self.used:
            _fail(path, "enters two dot_generals (shared weights)")
        in_axis = contract[0] if not w.transposed else 1 - contract[0]
        self.used[w.leaf] = len(self.layers)
        self.layers.append({"eqn": eqn, "side": side, "weight": w.leaf, "in_axis": in_axis,
                            "n_in": shape[contract[0]], "n_out": shape[1 - contract[0]],
                            "bias": None})
        return _Origin("product", layer=len(self.layers) - 1)

    def _bias(self, eqn, ins) -> _Origin | None:
        kinds = ["bias" if o.kind == "leaf" and not o.transposed and v.aval.ndim == 1
                 else o.kind for o, v in zip(ins, eqn.invars)]
        if sorted(kinds) != ["bias", "product"]:
            return None
        product, bias = (ins[0], ins[1]) if kinds[0] == "product" else (ins[1], ins[0])
        if bias.kind == "product":  # kinds says which; the origins agree
            return None
        layer = self.layers[product.layer]
        size = int(np.prod(eqn.invars[kinds.index("bias")].aval.shape))
        if layer["bias"] is not None or size != layer["n_out"]:
            return None
        layer["bias"] = bias.leaf
        return _Origin("biased", layer=product.layer)


class _Probed(Interpreter[Any]):
    """The walk on arrays that adds a probe to each layer's product and records its input."""

    def __init__(self, layer_of: dict[int, int], sides: list[int], probes: list):
        super().__init__()
        self.layer_of, self.sides, self.probes = layer_of, sides, probes
        self.inputs: dict[int, Any] = {}
        self.outputs: dict[int, Any] = {}

    def custom(self, eqn, ins):
        return self.inline(eqn, ins)

    def primitive(self, eqn, ins):
        outs = bind(eqn, ins)
        k = self.layer_of.get(id(eqn))
        if k is None:
            return outs
        self.inputs[k] = ins[1 - self.sides[k]]
        self.outputs[k] = outs[0] + jnp.reshape(self.probes[k], jnp.shape(outs[0]))
        return [self.outputs[k]]


def _one_example(batch):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct((1, *jnp.shape(x)[1:]),
                                                       jnp.result_type(x)), batch)


def dense_layers(loss: Callable, params, batch) -> tuple[list[DenseLayer], Any]:
    """The dense layers of ``loss(params, batch)`` and the traced per-example program.

    Returns ``(layers, program)``: ``program`` is ``(closed_jaxpr, layer_of_eqn, sides)`` for
    ``mcjax.kfac_factors``.

    Raises:
      ValueError: a parameter leaf enters a contraction that is no factorable dense layer
        (the message names the leaf).
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [jax.tree_util.keystr(p) for p, _ in leaves]
    flat_batch, batch_def = jax.tree.flatten(_one_example(batch))

    def flat(*args):
        p = jax.tree.unflatten(treedef, args[:len(leaves)])
        return loss(p, jax.tree.unflatten(batch_def, args[len(leaves):]))

    closed = jax.make_jaxpr(flat)(*[v for _, v in leaves], *flat_batch)
    finder = _Finder(paths, len(leaves))
    args = [_Origin("leaf", i) for i in range(len(leaves))] + [_OTHER] * len(flat_batch)
    finder.run(closed.jaxpr, closed.consts, args)
    layers = [DenseLayer(paths[f["weight"]], f["weight"], f["bias"], f["in_axis"], f["n_in"],
                         f["n_out"]) for f in finder.layers]
    program = (closed, {id(f["eqn"]): k for k, f in enumerate(finder.layers)},
               [f["side"] for f in finder.layers])
    return layers, program


def kfac_factors(loss: Callable, params, batch, *, estimator: str = "ggn", key=None
                 ) -> dict[str, LayerFactors]:
    r"""The K-FAC factors $A$ and $G$ of every dense layer of ``loss``, from the loss itself.

    $A = \frac1B\sum_i \bar{\mathbf{a}}_i\bar{\mathbf{a}}_i^\top$ and
    $G = \frac1B\sum_i \mathbf{g}_i\mathbf{g}_i^\top$ with $\bar{\mathbf{a}}_i$ the layer's
    input for example $i$ (with a 1 appended when the layer has a bias) and
    $\mathbf{g}_i = \nabla_{\mathbf{s}_i}\ell_i$ the gradient of example $i$'s loss (the loss
    of a batch of that one example) with respect to the layer's output
    $\mathbf{s}_i$ (Martens & Grosse 2015, eq. 1-3; the empirical Fisher), or, for the
    exact generalised Gauss-Newton (the default), $G = \frac1B\sum_i J_i^\top H_i J_i$ with
    $J_i$ the Jacobian of the last dense layer's output $\mathbf{z}_i$ in $\mathbf{s}_i$ and
    $H_i = \nabla^2_{\mathbf{z}}\ell_i$ (one vector $J_i^\top\mathbf{u}\sqrt{\lambda}$ per
    eigenpair of $H_i$, negative curvature clipped to 0): the exact Fisher for softmax
    cross-entropy and squared error, kfac-jax's ``ggn_exact``.  The **sampled Fisher**
    (``"fisher"``, kfac-jax's ``fisher_gradients``) is $G = \frac1B\sum_i \hat{\mathbf{g}}_i
    \hat{\mathbf{g}}_i^\top$ with $\hat{\mathbf{g}}_i = J_i^\top\nabla_{\mathbf{z}}
    \ell(\mathbf{z}_i; \hat y_i)$ at a label drawn from the model: $\hat y_i \sim
    \operatorname{Categorical}(\operatorname{softmax}\mathbf{z}_i)$ for softmax
    cross-entropy ($\nabla_{\mathbf{z}}\ell = \operatorname{softmax}\mathbf{z}_i -
    \mathbf{e}_{\hat y_i}$), $\hat{\mathbf{y}}_i = \mathbf{z}_i + \boldsymbol{\epsilon}$,
    $\boldsymbol{\epsilon} \sim N(0, I/h)$ for squared error $\frac h2\|\mathbf{z} -
    \mathbf{y}\|^2$ (the variance whose Fisher is the Gauss-Newton matrix $hI$): an unbiased
    estimate of the ``"ggn"`` factor $G$.  Which loss it is, is read from its Hessian in
    $\mathbf{z}$ at two random points when the loss is traced.

    Args:
      loss: ``loss(params, batch) -> scalar``, e.g. ``mcjax.objective(model)``; a batch of one
        example must be a valid batch, and examples must not interact (no batch norm).
      params: a pytree of arrays; each dense layer's weight is one 2-D leaf.
      batch: a pytree of arrays with a leading axis of B examples.
      estimator: ``"ggn"`` (the exact generalised Gauss-Newton; the loss must read the
        network only through its last dense layer's output), ``"empirical"`` (the
        gradients at the true labels) or ``"fisher"`` (gradients at labels drawn from the
        model; softmax cross-entropy or squared error on the last dense layer's output).
      key: a ``jax.random`` key for ``"fisher"``'s labels (one per example is split from
        it); unused by the others.

    Returns:
      ``{path: LayerFactors(A, G)}`` keyed by the weight leaf's path
      (``jax.tree_util.keystr``, e.g. ``"[0]['W']"``), in the order the layers are computed;
      ``A`` (n_in + 1, n_in + 1) with a bias (its last row/column the mean input and 1),
      (n_in, n_in) without; ``G`` (n_out, n_out); the dtype of the parameters.

    Raises:
      ValueError: ``estimator`` is unknown, ``"fisher"`` without a ``key`` or for a loss that
        is neither softmax cross-entropy nor squared error, or a parameter leaf enters a
        contraction that is no dense layer K-FAC can factor (one sentence naming the leaf).
    """
    return layers_and_factors(loss, params, batch, estimator, key)[1]


def layers_and_factors(loss: Callable, params, batch, estimator: str, key=None
                       ) -> tuple[list[DenseLayer], dict[str, LayerFactors]]:
    """``mcjax.kfac_factors`` with the dense layers it found (one trace of the loss serves a
    check of given factors, which needs both)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"mcjax.kfac_factors: estimator={estimator!r}; expected one of "
                         f"{', '.join(map(repr, ESTIMATORS))}")
    if estimator == "fisher" and key is None:
        raise ValueError("mcjax.kfac_factors: estimator='fisher' draws labels from the model "
                         "and needs a key; expected key=jax.random.key(seed)")
    layers, program = dense_layers(loss, params, batch)
    # which loss "fisher" samples, found (or refused) before the compiled program is traced
    output = output_loss(layers, program, params, batch) if estimator == "fisher" and layers \
        else None
    # one compiled program (op-by-op dispatch of the walk costs seconds)
    factors = jax.jit(lambda p, b, k: _factors(layers, program, p, b, estimator, k, output))(
        params, batch, key)
    return layers, factors


def _output(walker: _Probed, layers: list[DenseLayer], leaves: list) -> jax.Array:
    r"""The network's output $\mathbf{z}$ of one example, flat: the last dense layer's product
    (with its probe) plus its bias."""
    last = layers[-1]
    z = jnp.reshape(walker.outputs[len(layers) - 1], (-1,))
    return z if last.bias is None else z + jnp.reshape(leaves[last.bias], (-1,))


def output_loss(layers: list[DenseLayer], program, params, batch) -> tuple[str, float]:
    r"""Which loss the network's output $\mathbf{z}$ meets, for the sampled Fisher:
    ``("softmax_cross_entropy", 1.0)`` where the Hessian of one example's loss in
    $\mathbf{z}$ is $\operatorname{diag}(\mathbf{p}) - \mathbf{p}\mathbf{p}^\top$,
    $\mathbf{p} = \operatorname{softmax}\mathbf{z}$, or ``("squared_error", h)`` where it
    is $hI$, $h > 0$, the same at both of two random points (parameters drawn from a normal,
    real entries of the example from a uniform and normalised to sum to 1 along their last
    axis, as soft labels do; integer labels 0), evaluated when the loss is traced (shapes are
    all it reads of ``params`` and ``batch``).

    Raises:
      ValueError: the loss is neither (one sentence naming the estimators that take it).
    """
    from mcjax._core._conventions import tolerance

    closed, layer_of, sides = program
    leaves = jax.tree.leaves(params)
    dtype = jnp.result_type(leaves[layers[0].weight])
    rtol = 10 * tolerance(dtype).rtol

    def hessian_and_output(leaves, example):
        zeros = [jnp.zeros((layer.n_out,), dtype) for layer in layers]

        def loss_of_last(p):
            walker = _Probed(layer_of, sides, [*zeros[:-1], p])
            out = walker.run(closed.jaxpr, closed.consts, [*leaves, *example])
            return out[0], _output(walker, layers, leaves)

        return jax.hessian(lambda p: loss_of_last(p)[0])(zeros[-1]), loss_of_last(zeros[-1])[1]

    found = []
    with jax.ensure_compile_time_eval():
        for seed, scale in ((0, 1.0), (1, 3.0)):
            rng = np.random.default_rng(seed)

            def parameter(x, scale=scale, rng=rng):
                shape, kind = jnp.shape(x), np.dtype(jnp.result_type(x))
                if not jnp.issubdtype(kind, jnp.inexact):
                    return np.zeros(shape, kind)
                fan_in = max(shape[-1:] or (1,))
                return (scale * rng.standard_normal(shape) / np.sqrt(fan_in)).astype(kind)

            def datum(x, rng=rng):
                # integer labels 0; real entries > 0 summing to 1 along the last axis: a
                # probability vector where they are soft labels (a cross-entropy's Hessian
                # is diag(p) - p p^T only when its labels sum to 1), a point as good as any
                # where they are features or regression targets
                shape, kind = (1, *jnp.shape(x)[1:]), np.dtype(jnp.result_type(x))
                if not jnp.issubdtype(kind, jnp.inexact):
                    return np.zeros(shape, kind)
                u = rng.random(shape) + 0.1
                return (u / np.sum(u, axis=-1, keepdims=True)).astype(kind)

            point = [parameter(x) for x in leaves]
            example = [datum(x) for x in jax.tree.leaves(batch)]
            H, z = jax.jit(hessian_and_output)(point, example)
            found.append((np.asarray(H, np.float64), np.asarray(z, np.float64)))
    scale = max(np.max(np.abs(H)) for H, _ in found)
    close = lambda a, b: np.max(np.abs(a - b)) <= rtol * max(scale, 1.0)  # noqa: E731
    softmax = [np.exp(z - np.max(z)) / np.sum(np.exp(z - np.max(z))) for _, z in found]
    if all(close(H, np.diag(p) - np.outer(p, p)) for (H, _), p in zip(found, softmax)):
        return "softmax_cross_entropy", 1.0
    h = float(found[0][0][0, 0])
    if h > 0 and all(close(H, h * np.eye(H.shape[0])) for H, _ in found):
        return "squared_error", h
    raise ValueError("mcjax.kfac_factors: estimator='fisher' draws labels from the model for "
                     "softmax cross-entropy or squared error on the last dense layer's output, "
                     "and this loss is neither (its Hessian in that output is not "
                     "diag(p) - p p^T with p = softmax(z), nor a constant times I); expected "
                     "estimator='ggn' or 'empirical', which take any loss")


def _factors(layers: list[DenseLayer], program, params, batch, estimator: str, key=None,
             output: tuple[str, float] | None = None) -> dict[str, LayerFactors]:
    """The factors (see ``kfac_factors``); ``output`` is ``output_loss``'s answer where the
    caller has it."""
    closed, layer_of, sides = program
    leaves = jax.tree.leaves(params)
    examples = jax.tree.map(lambda x: jnp.reshape(x, (x.shape[0], 1, *x.shape[1:])), batch)
    dtype = jnp.result_type(leaves[layers[0].weight]) if layers else jnp.float32
    last = len(layers) - 1

    def run(probes, example):
        """Example's loss, (each layer's input flattened, the last layer's output)."""
        walker = _Probed(layer_of, sides, probes)
        out = walker.run(closed.jaxpr, closed.consts, [*leaves, *jax.tree.leaves(example)])
        inputs = [jnp.reshape(walker.inputs[k], (-1,)) for k in range(len(layers))]
        return out[0], (inputs, walker.outputs[last])

    def empirical(probes, example):  # g at the true label: one vector per layer
        grads, (inputs, _) = jax.grad(run, has_aux=True)(probes, example)
        return [g[None] for g in grads], inputs

    def ggn(probes, example):
        # J^T H J with H = U diag(lam) U^T the loss's Hessian in the last layer's output:
        # the vectors J^T U sqrt(lam), one per output index (negative curvature clipped)
        hessian = jax.hessian(lambda p: run([*probes[:-1], p], example)[0])(probes[-1])
        lam, U = jnp.linalg.eigh(hessian)
        roots = U * jnp.sqrt(jnp.maximum(lam, 0))[None, :]
        z, pullback = jax.vjp(lambda p: run(p, example)[1][1], probes)
        vectors = jax.vmap(lambda c: pullback(jnp.reshape(c, jnp.shape(z)))[0])(roots.T)
        return vectors, run(probes, example)[1][0]

    def fisher(probes, example, key):
        # J^T grad_z l(z; y) at a label y drawn from the model (output_loss says which loss)
        def z_of(p):
            walker = _Probed(layer_of, sides, p)
            walker.run(closed.jaxpr, closed.consts, [*leaves, *jax.tree.leaves(example)])
            return _output(walker, layers, leaves)

        z, pullback = jax.vjp(z_of, probes)
        if family == "softmax_cross_entropy":
            label = jax.random.categorical(key, z)
            dz = jax.nn.softmax(z) - jax.nn.one_hot(label, z.shape[0], dtype=z.dtype)
        else:  # y = z + eps, eps ~ N(0, I/h): grad = h (z - y) = -sqrt(h) N(0, I)
            dz = -jnp.sqrt(jnp.asarray(curvature, z.dtype)) * jax.random.normal(
                key, z.shape, z.dtype)
        return [g[None] for g in pullback(dz)[0]], run(probes, example)[1][0]

    if not layers:
        return {}
    probes = [jnp.zeros((layer.n_out,), dtype) for layer in layers]
    if estimator == "fisher":
        assert key is not None  # layers_and_factors and the optimizer pass one
        family, curvature = output or output_loss(layers, program, params, batch)
        n = jax.tree.leaves(batch)[0].shape[0]
        vectors, inputs = jax.vmap(fisher, in_axes=(None, 0, 0))(
            probes, examples, jax.random.split(key, n))
    else:
        fn = empirical if estimator == "empirical" else ggn
        vectors, inputs = jax.vmap(fn, in_axes=(None, 0))(probes, examples)
    n = jax.tree.leaves(batch)[0].shape[0]
    found = {}
    for layer, g, a in zip(layers, vectors, inputs):
        if layer.bias is not None:
            a = jnp.concatenate([a, jnp.ones((n, 1), a.dtype)], axis=1)
        g = jnp.reshape(g, (-1, layer.n_out))
        found[layer.path] = LayerFactors(a.T @ a / n, g.T @ g / n)
    return found


def ggn_quadratic(layers: list[DenseLayer], program, params, batch, directions: list
                  ) -> jax.Array:
    r"""The Gauss-Newton Gram matrix of ``directions``: $M_{jk} = \mathbf{v}_j^\top F
    \mathbf{v}_k$ with $F = \frac1B\sum_i J_i^\top H_i J_i$ the exact GGN of the loss in all
    its parameters ($J_i$ the Jacobian of the network's output $\mathbf{z}_i$, the last dense
    layer's, in the parameters; $H_i$ the loss's Hessian in $\mathbf{z}_i$): one JVP and one
    Hessian-vector product in $\mathbf{z}$ per direction and example.  For the step of
    Martens & Grosse's §7 (its step size and momentum from the quadratic model).

    Args:
      layers, program: from ``dense_layers``.
      params: the parameters (a pytree).
      batch: the batch (leading axis B).
      directions: k pytrees shaped as ``params``.

    Returns:
      (k, k), the parameters' dtype.
    """
    closed, layer_of, sides = program
    leaves, treedef = jax.tree.flatten(params)
    examples = jax.tree.map(lambda x: jnp.reshape(x, (x.shape[0], 1, *x.shape[1:])), batch)
    dtype = jnp.result_type(leaves[layers[0].weight])
    last = len(layers) - 1
    zeros = [jnp.zeros((layer.n_out,), dtype) for layer in layers]

    def run(leaves, probes, example):
        walker = _Probed(layer_of, sides, probes)
        out = walker.run(closed.jaxpr, closed.consts, [*leaves, *jax.tree.leaves(example)])
        return out[0], walker.outputs[last]

    tangents = [jax.tree.leaves(v) for v in directions]

    def example_gram(example):
        def z_of(leaves):
            return run(leaves, zeros, example)[1]

        # the output is the last product plus its bias: the bias's direction adds to dz
        bias = layers[-1].bias
        dz = jnp.stack([jax.jvp(z_of, (leaves,), (t,))[1].reshape(-1)
                        + (jnp.reshape(t[bias], (-1,)) if bias is not None else 0.0)
                        for t in tangents])

        def loss_of_last(p):
            return run(leaves, [*zeros[:-1], p], example)[0]

        def hvp(u):
            return jax.jvp(jax.grad(loss_of_last), (zeros[-1],), (u,))[1]

        return dz @ jax.vmap(hvp)(dz).T

    del treedef
    return jnp.mean(jax.vmap(example_gram)(examples), axis=0)
