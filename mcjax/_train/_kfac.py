r"""K-FAC as an optax transformation: each dense layer's gradient preconditioned by its factors.

For a dense layer with Kronecker factors $A$ (inputs, with the bias's 1) and $G$ (output
gradients) found from the loss (``mcjax.kfac_factors``), the step direction of
$[W\;\mathbf{b}]$ is (Martens & Grosse 2015, §6.3, factored Tikhonov damping)

$$\Delta = (G + \pi^{-1}\sqrt{\lambda}\,I)^{-1}\,\nabla_{[W\,\mathbf{b}]}L\,
           (A + \pi\sqrt{\lambda}\,I)^{-1},\qquad
  \pi = \sqrt{\frac{\operatorname{tr}(A)/\dim A}{\operatorname{tr}(G)/\dim G}}$$

(written for ``W`` of shape (n_out, n_in); the transpose for (n_in, n_out)).  Every other
leaf's gradient passes through.  Every ``refresh_every`` steps the factors are estimated on
that step's batch and folded into an exponential moving average
($F \leftarrow \beta F + (1-\beta)F_\text{batch}$, the first estimate taken as it is) and the
damped inverses recomputed, by eigendecomposition (``"eigh"``) or Cholesky (``"cholesky"``).
The direction then goes through heavy-ball momentum and the learning rate
(``optax.sgd``).

The update needs the loss and the batch: ``update(grads, state, params, loss=loss,
batch=batch)`` (optax's extra arguments; ``mcjax.train`` passes them).  The state holds,
for each 2-D parameter leaf of shape (r, c), one factor of size r + 1 for its rows and one of
size c + 1 for its columns, and their inverses: fixed shapes known from the parameters alone
(``init`` needs no batch), whichever side turns out to be the inputs; the extra row and
column hold the bias's 1, or a 1 on the diagonal where there is no bias.  It also holds the
damping $\lambda$, which ``mcjax.kfac(adaptive_damping=True)`` moves by Martens & Grosse's
Levenberg-Marquardt rule (§6.5), and the key of the ``"fisher"`` estimator's labels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mcjax._derive._kfac import ESTIMATORS, DenseLayer, _factors, dense_layers, ggn_quadratic
from mcjax._train._hyper import learning_rate_problem, parameters, problems_of

INVERSES = ("eigh", "cholesky")


MIN_DAMPING = 1e-8
"""The least damping the Levenberg-Marquardt rule leaves (kfac-jax's ``min_damping``)."""


class KFACState(NamedTuple):
    r"""K-FAC's state: the step count, per 2-D leaf (in ``params``' leaf order) the factors of
    its rows and columns ((r+1, r+1), (c+1, c+1)) and their damped inverses, the last update,
    the damping $\lambda$ (a scalar of the parameters' dtype: the given one, or where
    ``mcjax.kfac(adaptive_damping=True)`` has moved it) and the key the ``"fisher"``
    estimator's labels are drawn with (split at each refresh)."""

    count: jax.Array
    factors: tuple
    inverses: tuple
    previous: Any  # the last update (params' structure), for the adaptive step's momentum
    damping: jax.Array
    key: jax.Array  # raw uint32 PRNG key (checkpointed as any array): the "fisher" labels


class AdaptiveDampingState(NamedTuple):
    r"""``mcjax.kfac(adaptive_damping=True)``'s state: the chain's (its first element the
    ``KFACState`` that holds $\lambda$) and the last reduction ratio $\rho$ (0 before the
    first adjustment; a NaN or infinite $\rho$ is kept as -100, which the rule takes it for:
    training stops at a state that is not finite)."""

    inner: Any
    rho: jax.Array

    def reports(self) -> dict[str, jax.Array]:
        r"""What training records each epoch: the damping $\lambda$ and the last $\rho$."""
        return {"damping": self.inner[0].damping, "rho": self.rho}


def _matrix_leaves(params) -> list[int]:
    leaves = jax.tree.leaves(params)
    return [i for i, x in enumerate(leaves)
            if jnp.ndim(x) == 2 and jnp.issubdtype(jnp.result_type(x), jnp.inexact)]


def _pad(F: jax.Array, size: int) -> jax.Array:
    """``F`` as a (size, size) matrix: itself, or block-diag(F, 1)."""
    if F.shape[0] == size:
        return F
    return jnp.eye(size, dtype=F.dtype).at[:F.shape[0], :F.shape[0]].set(F)


def _inverse(F: jax.Array, damping: jax.Array, method: str) -> jax.Array:
    eye = jnp.eye(F.shape[0], dtype=F.dtype)
    if method == "eigh":
        lam, Q = jnp.linalg.eigh(F)
        return (Q / (jnp.maximum(lam, 0) + damping)[None, :]) @ Q.T
    chol = jnp.linalg.cholesky(F + damping * eye)
    return jax.scipy.linalg.cho_solve((chol, True), eye)


def _sides(layer: DenseLayer, rows: int, cols: int):
    """(is the row side the inputs, the padded sizes) for ``layer``'s weight (rows, cols)."""
    return layer.in_axis == 0, rows + 1, cols + 1


def _vdot(a, b) -> jax.Array:
    r"""$\sum$ over the leaves of two pytrees of the same structure of their dot products."""
    return sum((jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))),
               start=jnp.zeros((), jnp.result_type(*jax.tree.leaves(a))))


def _model_step(direction, grads, previous, layers, program, params, batch, damping):
    r"""$\alpha\Delta + \mu\delta$ minimising the damped quadratic model
    $\frac12 u^\top(F + \lambda I)u + \nabla L^\top u$ over $u$ in the span of the
    preconditioned gradient $\Delta$ and the last update $\delta$ (Martens & Grosse 2015,
    §7); $\delta = 0$ at the first step, when only $\alpha$ is chosen."""
    vdot = _vdot
    M = ggn_quadratic(layers, program, params, batch, [direction, previous])
    M = M + damping * jnp.array([[vdot(direction, direction), vdot(direction, previous)],
                                 [vdot(previous, direction), vdot(previous, previous)]])
    b = jnp.stack([vdot(grads, direction), vdot(grads, previous)])
    first = M[1, 1] <= 0
    safe = jnp.where(first, jnp.eye(2, dtype=M.dtype).at[0, 0].set(M[0, 0]), M)
    alpha, mu = -jnp.linalg.solve(safe, jnp.where(first, b.at[1].set(0.0), b))
    return jax.tree.map(lambda d, p: (alpha * d + mu * p).astype(d.dtype), direction, previous)


def scale_by_kfac(*, damping: float = 0.1, refresh_every: int = 5, inverse: str = "cholesky",
                  estimator: str = "ggn", factor_decay: float = 0.5,
                  kl_clip: float | None = None, learning_rate: Any = None,
                  adaptive: bool = False, seed: int = 0) -> optax.GradientTransformationExtraArgs:
    r"""K-FAC's preconditioner alone: the gradient of each dense layer's $[W\;\mathbf{b}]$
    becomes $(G + \pi^{-1}\sqrt\lambda I)^{-1}\nabla(A + \pi\sqrt\lambda I)^{-1}$ (see
    ``mcjax.kfac`` for the arguments); chain it with a step rule of your own.  With
    ``kl_clip`` (and the ``learning_rate`` the chain applies), the preconditioned gradients
    $\Delta$ are scaled by $\min(1, \sqrt{\kappa / (\eta^2 \sum \Delta\cdot\nabla)})$.  With
    ``adaptive`` the result is the step $\alpha\Delta + \mu\delta$ itself (see
    ``mcjax.kfac``), not a direction.  $\lambda$ is read from the state (``KFACState.damping``,
    ``damping`` at first), where ``mcjax.kfac(adaptive_damping=True)`` moves it."""

    def init(params) -> KFACState:
        leaves = jax.tree.leaves(params)
        matrices = _matrix_leaves(params)
        dtype = jnp.result_type(leaves[matrices[0]]) if matrices else jnp.float32

        def eyes():  # new arrays each: a step donates the state's buffers, each once
            return tuple((jnp.eye(leaves[i].shape[0] + 1, dtype=leaves[i].dtype),
                          jnp.eye(leaves[i].shape[1] + 1, dtype=leaves[i].dtype))
                         for i in _matrix_leaves(params))

        return KFACState(jnp.zeros((), jnp.int32), eyes(), eyes(),
                         jax.tree.map(jnp.zeros_like, params), jnp.asarray(damping, dtype),
                         jax.random.key_data(jax.random.key(seed)))

    def update(updates, state, params=None, *, loss: Callable | None = None,
               batch: Any = None, **extra):
        del extra
        grads = updates
        if params is None or loss is None or batch is None:
            raise ValueError("mcjax.kfac: update needs params, loss=loss(params, batch) and "
                             "batch= (mcjax.train passes them); expected "
                             "update(grads, state, params, loss=loss, batch=batch)")
        layers, program = dense_layers(loss, params, batch)
        if not layers:
            raise ValueError("mcjax.kfac: the loss has no dense layer to precondition (no 2-D "
                             "parameter leaf meets an activation in a dot_general); expected "
                             "a model with dense layers, or another optimizer")
        slots = {leaf: k for k, leaf in enumerate(_matrix_leaves(params))}
        leaves = jax.tree.leaves(params)

        def refresh(state: KFACState):
            key, draw = jax.random.split(state.key)
            fresh = _factors(layers, program, params, batch, estimator, draw)
            factors, inverses = list(state.factors), list(state.inverses)
            first = state.count == 0
            sqrt_damping = jnp.sqrt(state.damping)
            for layer in layers:
                k = slots[layer.weight]
                rows, cols = leaves[layer.weight].shape
                inputs_on_rows, n_rows, n_cols = _sides(layer, rows, cols)
                A, G = fresh[layer.path]
                old_rows, old_cols = factors[k]
                old_A, old_G = (old_rows, old_cols) if inputs_on_rows else (old_cols, old_rows)
                n_a = A.shape[0]
                A = jnp.where(first, A, factor_decay * old_A[:n_a, :n_a]
                              + (1 - factor_decay) * A)
                G = jnp.where(first, G, factor_decay * old_G[:layer.n_out, :layer.n_out]
                              + (1 - factor_decay) * G)
                pi = jnp.sqrt((jnp.trace(A) / n_a) / (jnp.trace(G) / layer.n_out))
                pi = jnp.where(jnp.isfinite(pi) & (pi > 0), pi, 1.0)
                A_inv = _inverse(A, pi * sqrt_damping, inverse)
                G_inv = _inverse(G, sqrt_damping / pi, inverse)
                size_a, size_g = (n_rows, n_cols) if inputs_on_rows else (n_cols, n_rows)
                A, G = _pad(A, size_a), _pad(G, size_g)
                A_inv, G_inv = _pad(A_inv, size_a), _pad(G_inv, size_g)
                factors[k] = (A, G) if inputs_on_rows else (G, A)
                inverses[k] = (A_inv, G_inv) if inputs_on_rows else (G_inv, A_inv)
            return state._replace(factors=tuple(factors), inverses=tuple(inverses), key=key)

        state = jax.lax.cond(state.count % refresh_every == 0, refresh, lambda s: s, state)
        flat, treedef = jax.tree.flatten(grads)
        out = list(flat)
        for layer in layers:
            row_inv, col_inv = state.inverses[slots[layer.weight]]
            gW = flat[layer.weight]
            rows, cols = gW.shape
            ext = jnp.zeros((rows + 1, cols + 1), gW.dtype).at[:rows, :cols].set(gW)
            if layer.bias is not None:
                gb = jnp.reshape(flat[layer.bias], (-1,))
                ext = ext.at[rows, :cols].set(gb) if layer.in_axis == 0 \
                    else ext.at[:rows, cols].set(gb)
            P = row_inv @ ext @ col_inv
            out[layer.weight] = P[:rows, :cols]
            if layer.bias is not None:
                gb = P[rows, :cols] if layer.in_axis == 0 else P[:rows, cols]
                out[layer.bias] = jnp.reshape(gb, jnp.shape(flat[layer.bias]))
        if kl_clip is not None:  # Ba, Grosse & Martens 2017: the step's KL bounded by kl_clip
            rate: Any = learning_rate(state.count) if callable(learning_rate) \
                else 1.0 if learning_rate is None else learning_rate
            dots = sum(jnp.vdot(out[i], flat[i]) for layer in layers
                       for i in (layer.weight, layer.bias) if i is not None)
            nu = jnp.minimum(1.0, jnp.sqrt(kl_clip / jnp.maximum(rate ** 2 * dots, 1e-30)))
            for layer in layers:
                for i in (layer.weight, layer.bias):
                    if i is not None:
                        out[i] = (nu * out[i]).astype(out[i].dtype)
        direction = jax.tree.unflatten(treedef, out)
        if adaptive:
            direction = _model_step(direction, grads, state.previous, layers, program, params,
                                    batch, state.damping)
        return direction, state._replace(count=state.count + 1, previous=direction)

    return optax.GradientTransformationExtraArgs(init, update)


def levenberg_marquardt(rho: jax.Array, damping: jax.Array, omega: Any) -> jax.Array:
    r"""Martens & Grosse's (2015, §6.5) rule for the damping: $\lambda\omega$ where the step did
    better than three quarters of what the quadratic model promised ($\rho > 3/4$),
    $\lambda/\omega$ where it did worse than a quarter ($\rho < 1/4$, a NaN or infinite
    $\rho$ counted as such), $\lambda$ otherwise; never below ``MIN_DAMPING`` (kfac-jax's
    ``_compute_new_damping_and_rho``).

    Args:
      rho: the reduction ratio $\rho$, a scalar.
      damping: $\lambda$, a scalar.
      omega: $\omega \in (0, 1)$.

    Returns:
      The new $\lambda$, a scalar of ``damping``'s dtype.
    """
    rho = jnp.where(jnp.isfinite(rho), rho, -100.0)
    new = jnp.where(rho < 0.25, damping / omega, jnp.where(rho > 0.75, damping * omega, damping))
    return jnp.maximum(new, MIN_DAMPING).astype(damping.dtype)


def reduction_ratio(loss: Callable, params, batch, grads, step) -> jax.Array:
    r"""How much of the decrease the quadratic model promised the step achieved:
    $\rho = \frac{L(\theta + \delta) - L(\theta)}{M(\delta)}$ with
    $M(\delta) = \frac12\delta^\top F\delta + \nabla L^\top\delta$, $F$ the exact
    Gauss-Newton matrix of the loss on the batch (``ggn_quadratic``; Martens & Grosse 2015,
    §6.5; kfac-jax with ``always_use_exact_qmodel_for_damping_adjustment``, the damping left
    out of $M$ as its ``include_damping_in_quad_change=False``).  One forward pass at
    $\theta + \delta$, one at $\theta$, and one Jacobian-vector and one Hessian-vector product
    per example.

    Args:
      loss: ``loss(params, batch) -> scalar``, the mean over the batch's examples.
      params: $\theta$ (a pytree).
      batch: the step's batch.
      grads: $\nabla L(\theta)$, shaped as ``params``.
      step: $\delta$, the update applied (``optax.apply_updates(params, step)``).

    Returns:
      $\rho$, a scalar.
    """
    layers, program = dense_layers(loss, params, batch)
    curvature = ggn_quadratic(layers, program, params, batch, [step])[0, 0]
    model = 0.5 * curvature + _vdot(grads, step)
    return (loss(optax.apply_updates(params, step), batch) - loss(params, batch)) / model


def _adapting_damping(chain: optax.GradientTransformationExtraArgs, interval: int,
                      decay: float) -> optax.GradientTransformationExtraArgs:
    r"""``chain`` (``scale_by_kfac`` first) with its damping moved by ``levenberg_marquardt``
    after every ``interval``-th step, by $\omega$ = ``decay ** interval``."""
    omega = decay ** interval

    def init(params) -> AdaptiveDampingState:
        inner: Any = chain.init(params)
        return AdaptiveDampingState(inner, jnp.zeros((), inner[0].damping.dtype))

    def update(updates, state, params=None, *, loss: Any = None, batch: Any = None, **extra):
        grads = updates
        step, inner = chain.update(grads, state.inner, params, loss=loss, batch=batch,
                                   **extra)
        inner = tuple(inner)  # type: ignore[arg-type]  # the chain's state is a tuple
        kfac_state: KFACState = inner[0]

        def adapt(kfac_state: KFACState):
            rho = reduction_ratio(loss, params, batch, grads, step).astype(state.rho.dtype)
            rho = jnp.where(jnp.isfinite(rho), rho, -100.0)
            damping = levenberg_marquardt(rho, kfac_state.damping, omega)
            return kfac_state._replace(damping=damping), rho

        kfac_state, rho = jax.lax.cond(kfac_state.count % interval == 0, adapt,
                                       lambda s: (s, state.rho), kfac_state)
        return step, AdaptiveDampingState((kfac_state, *inner[1:]), rho)

    return optax.GradientTransformationExtraArgs(init, update)


def kfac(learning_rate: Any = 0.1, *, damping: float = 0.1, refresh_every: int = 5,
         inverse: str = "cholesky", estimator: str = "ggn", factor_decay: float = 0.5,
         momentum: float = 0.5, kl_clip: float | None = None, adaptive: bool = False,
         adaptive_damping: bool = False, damping_adaptation_interval: int = 5,
         damping_adaptation_decay: float = 0.9, seed: int = 0
         ) -> optax.GradientTransformationExtraArgs:
    r"""K-FAC (Martens & Grosse 2015) as an optax transformation, its factors found from the loss.

    Each dense layer's gradient of $[W\;\mathbf{b}]$ (W of shape (n_out, n_in); transposed
    for (n_in, n_out)) is preconditioned by its Kronecker factors with factored Tikhonov
    damping,
    $(G + \pi^{-1}\sqrt{\lambda}I)^{-1}\,\nabla\,(A + \pi\sqrt{\lambda}I)^{-1}$,
    $\pi^2 = \frac{\operatorname{tr}A/\dim A}{\operatorname{tr}G/\dim G}$; other leaves
    pass through; then heavy-ball momentum and the learning rate:
    $v \leftarrow \mu v + \Delta$, $\theta \leftarrow \theta - \eta v$.

    Args:
      learning_rate: $\eta$, a float or an optax schedule.
      damping: $\lambda > 0$ (the first, with ``adaptive_damping``).
      refresh_every: estimate the factors (and invert them) every this many steps (>= 1),
        on that step's batch.
      inverse: ``"eigh"`` (eigendecomposition; negative eigenvalues from round-off clipped to
        0) or ``"cholesky"``.
      estimator: ``"ggn"`` (the exact generalised Gauss-Newton; the exact Fisher for softmax
        cross-entropy), ``"empirical"`` (the empirical Fisher) or ``"fisher"`` (the Fisher
        from one label per example drawn from the model: $y \sim$ Categorical(softmax
        $\mathbf{z}$) for softmax cross-entropy, $y = \mathbf{z} + \epsilon$,
        $\epsilon \sim N(0, I/h)$ for squared error $\frac h2\|\mathbf{z}-y\|^2$; other
        losses are refused; see ``mcjax.kfac_factors``).
      factor_decay: $\beta \in [0, 1)$ of the factors' moving average.
      momentum: $\mu \in [0, 1)$.
      kl_clip: None, or $\kappa > 0$: scale the preconditioned gradients $\Delta$ of the
        dense layers by $\min(1, \sqrt{\kappa/(\eta^2\sum\Delta\cdot\nabla L)})$, which bounds
        the step's KL divergence (Ba, Grosse & Martens 2017).
      adaptive: take Martens & Grosse's step (§7) instead of fixed momentum: the update is
        $\eta(\alpha\Delta + \mu\delta)$ with $\alpha, \mu$ minimising the damped quadratic
        model $\frac12u^\top(F+\lambda I)u + \nabla L^\top u$ on the batch ($F$ the exact
        Gauss-Newton matrix, $\delta$ the last update; two Jacobian-vector products per
        step); ``momentum`` is then unused and $\eta$ = 1 is the natural learning rate.
      adaptive_damping: move $\lambda$ by Martens & Grosse's Levenberg-Marquardt rule
        (§6.5): after every $T_1$-th step $\delta$ (the update itself, learning rate and
        momentum included), $\rho = (L(\theta+\delta) - L(\theta)) / M(\delta)$ with
        $M(\delta) = \frac12\delta^\top F\delta + \nabla L^\top\delta$ ($F$ the exact
        Gauss-Newton matrix on the step's batch), and $\lambda \leftarrow \lambda\omega$
        if $\rho > 3/4$, $\lambda/\omega$ if $\rho < 1/4$ (never below ``1e-8``); the
        inverses take the new $\lambda$ at their next refresh.  $\lambda$ and $\rho$ live in
        the state (checkpointed with it); ``mcjax.train`` records them each epoch
        (``history["damping"]``, ``history["rho"]``).  Costs two forward passes and one
        Gauss-Newton product on the batch every $T_1$ steps.
      damping_adaptation_interval: $T_1 \ge 1$ (kfac-jax's name and default).
      damping_adaptation_decay: $\omega^{1/T_1} \in (0, 1)$: $\omega$ =
        ``damping_adaptation_decay ** damping_adaptation_interval`` (kfac-jax's name and
        default 0.9: $\omega \approx 0.59$; Martens & Grosse's 19/20 gives 0.77).
      seed: the first key of the ``"fisher"`` estimator's labels (``jax.random.key(seed)``;
        the state's key is split at each refresh and checkpointed with it).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update(grads, state, params,
      loss=loss, batch=batch)`` needs the loss ``loss(params, batch)`` and the step's batch.

    Raises:
      ValueError: a value out of its range (every problem is listed).

    Example:

        >>> model = mcjax.mlp_model((4, 3, 2))
        >>> params = model.init(jax.random.key(0))
        >>> batch = (jnp.ones((8, 4)), jnp.zeros(8, jnp.int32))
        >>> opt = mcjax.kfac(0.1, damping=1e-2)
        >>> grads = jax.grad(model.loss)(params, batch)
        >>> updates, state = opt.update(grads, opt.init(params), params, loss=model.loss,
        ...                             batch=batch)
        >>> jax.tree.map(jnp.shape, updates) == jax.tree.map(jnp.shape, params)
        True
    """
    given = dict(damping=damping, refresh_every=refresh_every, inverse=inverse,
                 estimator=estimator, factor_decay=factor_decay, momentum=momentum,
                 kl_clip=kl_clip, adaptive=adaptive, adaptive_damping=adaptive_damping,
                 damping_adaptation_interval=damping_adaptation_interval,
                 damping_adaptation_decay=damping_adaptation_decay, seed=seed)
    rate = learning_rate_problem(learning_rate)
    problems = ([rate] if rate else []) + problems_of("mcjax.kfac", parameters(kfac), given,
                                                      choices=CHOICES)
    if problems:
        raise ValueError(f"mcjax.kfac: {'; and '.join(problems)}")
    precondition = scale_by_kfac(damping=damping, refresh_every=refresh_every,
                                 inverse=inverse, estimator=estimator,
                                 factor_decay=factor_decay, kl_clip=kl_clip,
                                 learning_rate=learning_rate, adaptive=adaptive, seed=seed)
    if adaptive:  # the step is the model's; the learning rate scales it
        chain = optax.chain(precondition,
                            optax.scale_by_learning_rate(learning_rate, flip_sign=False))
    else:
        chain = optax.chain(precondition, optax.sgd(learning_rate, momentum=momentum or None))
    if adaptive_damping:
        return _adapting_damping(chain, damping_adaptation_interval, damping_adaptation_decay)
    return chain


CHOICES = {"inverse": INVERSES, "estimator": ESTIMATORS}
"""kfac's hyper-parameters that name one of a few methods."""
