r"""kfac-jax's Kronecker factors of an MLP, the reference that mcjax.kfac_factors is compared with.

Runs in its own environment, NOT mcjax's: kfac-jax 0.0.8 fails on JAX 0.10 (its tag matcher
unpacks ``get_bind_params`` as JAX < 0.7 returned it) and runs on JAX 0.8.2:

    python -m venv /tmp/kfac-env
    /tmp/kfac-env/bin/pip install "jax==0.8.2" "jaxlib==0.8.2" "kfac-jax==0.0.8"
    /tmp/kfac-env/bin/python experiments/kfac_reference.py --inputs IN.npz --out REF.npz

``IN.npz`` (written by ``experiments/bench_kfac.py``) holds the MLP's parameters in mcjax's
layout (``W0`` (m, n), ``b0`` (m,), ``W1``, ...; ReLU between layers) and one batch ``X``
(B, n), ``y`` (B,) integer labels.  The MLP is written here in kfac-jax's own layout
(``x @ W + b``, W (n, m): its dense-layer pattern), its softmax cross-entropy registered with
``kfac_jax.register_softmax_cross_entropy_loss``, the dense layers found by kfac-jax's
auto-registration, and the factors estimated once with ``estimation_mode="fisher_empirical"``
(the gradients at the true labels; ``ema_old=0, ema_new=1``: this batch's statistics alone).
Also with ``estimation_mode="ggn_exact"`` (the exact generalised Gauss-Newton, which for
softmax cross-entropy is the exact Fisher: every output index, no sampling).  ``REF.npz`` is
``IN.npz`` plus ``A0_empirical``, ``G0_empirical``, ``A0_ggn``, ``G0_ggn``, ... (float32) and
the versions used.  Note kfac-jax's ``fisher_empirical`` normalises G by $B^2$ (its source
says so: the per-example gradients are divided by $\sqrt{B}$ before the statistics' $1/B$),
i.e. it is $1/B$ times Martens & Grosse's $\mathbb{E}[\mathbf{g}\mathbf{g}^\top]$.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import kfac_jax
import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", required=True, help="parameters and batch (.npz, mcjax layout)")
    p.add_argument("--out", required=True, help="where to write inputs + kfac-jax's factors")
    args = p.parse_args(argv)
    data = dict(np.load(args.inputs))
    n_layers = sum(1 for k in data if k.startswith("W"))
    # kfac-jax's layout: x @ W + b, W (n_in, n_out)
    params = [{"w": jnp.asarray(data[f"W{i}"].T), "b": jnp.asarray(data[f"b{i}"])}
              for i in range(n_layers)]
    X, y = jnp.asarray(data["X"]), jnp.asarray(data["y"])

    def loss(params, batch):
        x, labels = batch
        for i, layer in enumerate(params):
            x = x @ layer["w"] + layer["b"]
            if i < len(params) - 1:
                x = jax.nn.relu(x)
        kfac_jax.register_softmax_cross_entropy_loss(x, labels)
        log_p = jax.nn.log_softmax(x)
        return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=1))

    estimator = kfac_jax.curvature_estimator.BlockDiagonalCurvature(func=loss)
    rng = jax.random.PRNGKey(0)
    out = dict(data)
    for mode, suffix in (("fisher_empirical", "empirical"), ("ggn_exact", "ggn")):
        # a fresh state (weight 0) and ema_old=1: the factors are this batch's statistics
        # (ggn_exact adds one update per output index into the running average)
        state = estimator.init(rng, (params, (X, y)), exact_powers_to_cache=None,
                               approx_powers_to_cache=None)
        state = estimator.update_curvature_matrix_estimate(
            state, ema_old=1.0, ema_new=1.0, identity_weight=0.0, batch_size=X.shape[0],
            rng=rng, func_args=(params, (X, y)), estimation_mode=mode)
        names = [type(b).__name__ for b in estimator.blocks]
        if len(estimator.blocks) != n_layers:
            print(f"kfac-jax found {len(estimator.blocks)} blocks ({names}); expected "
                  f"{n_layers}", file=sys.stderr)
            return 1
        for i, block_state in enumerate(state.blocks_states):
            A, G = (np.asarray(f.value, np.float32) for f in block_state.factors)
            out[f"A{i}_{suffix}"], out[f"G{i}_{suffix}"] = A, G
            print(f"{mode}, layer {i}: {names[i]}, A {A.shape}, G {G.shape}")
    out["versions"] = np.asarray(f"jax {jax.__version__}, kfac-jax {kfac_jax.__version__}")
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({out['versions']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
