"""K-FAC from the function: the factors against an independent computation and kfac-jax's,
their checker catching planted slips, the refusals, and the optax transformation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mcjax
from mcjax.conventions import tolerance

F64, F32 = jnp.float64, jnp.float32
SIZES = (5, 4, 3)
B = 6
FIXTURE = Path(__file__).parent / "data" / "kfac_reference.npz"
KFAC_JAX_AGREEMENT = 1e-5  # the target: float32, relative to the factor's largest entry


def _params(layout: str, bias: bool, dtype=F64):
    keys = jax.random.split(jax.random.key(3), 2 * len(SIZES))
    out = []
    for k, (n, m) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        shape = (n, m) if layout == "x @ W" else (m, n)
        layer = {"W": jax.random.normal(keys[2 * k], shape, dtype) / float(np.sqrt(n))}
        if bias:
            layer["b"] = 0.1 * jax.random.normal(keys[2 * k + 1], (m,), dtype)
        out.append(layer)
    return out


def _loss(params, batch, *, layout: str, offsets=None):
    """A tanh MLP and softmax cross-entropy, written out; ``offsets`` are added to each
    layer's product (the independent reference differentiates with respect to them)."""
    h, y = batch
    for k, layer in enumerate(params):
        s = h @ layer["W"] if layout == "x @ W" else h @ layer["W"].T
        if offsets is not None:
            s = s + offsets[k]
        if "b" in layer:
            s = s + jnp.reshape(layer["b"], (1, -1))
        h = jnp.tanh(s) if k < len(params) - 1 else s
    log_p = jax.nn.log_softmax(h)
    return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1))


def _batch(dtype=F64):
    X = jax.random.normal(jax.random.key(4), (B, SIZES[0]), dtype)
    return X, jnp.arange(B, dtype=jnp.int32) % SIZES[-1]


def _independent(params, batch, layout, estimator):
    """A and G from JAX autodiff of the written-out MLP, example by example (no walker):
    offsets added to each layer's product are differentiated."""
    last = len(params) - 1

    def forward(offsets, x):  # one example x (n,): each layer's input, the output
        h, inputs = x[None], []
        for k, layer in enumerate(params):
            inputs.append(h[0])
            s = (h @ layer["W"] if layout == "x @ W" else h @ layer["W"].T) + offsets[k]
            s = s + jnp.reshape(layer["b"], (1, -1)) if "b" in layer else s
            h = jnp.tanh(s) if k < last else s
        return inputs, h[0]

    def example(x, y):
        zeros = [jnp.zeros((1, jnp.shape(p["b" if "b" in p else "W"])[-1] if layout == "x @ W"
                            or "b" in p else p["W"].shape[0]), x.dtype) for p in params]
        inputs, z = forward(zeros, x)
        if estimator == "empirical":
            g = jax.grad(lambda o: -jax.nn.log_softmax(forward(o, x)[1])[y])(zeros)
            vectors = [gk for gk in g]  # (1, m) each
        else:  # J^T H J = (J^T R)(J^T R)^T with H = R R^T
            H = jax.hessian(lambda z: -jax.nn.log_softmax(z)[y])(z)
            w, U = jnp.linalg.eigh(H)
            R = U * jnp.sqrt(jnp.maximum(w, 0))[None, :]
            J = jax.jacobian(lambda o: forward(o, x)[1])(zeros)  # (C, 1, m) each
            vectors = [(Jk[:, 0, :].T @ R).T for Jk in J]  # (C, m)
        inputs = [jnp.append(a, 1.0) if "b" in p else a for a, p in zip(inputs, params)]
        return inputs, vectors

    X, y = batch
    inputs, vectors = jax.vmap(example)(X, y)
    n = X.shape[0]
    A = [np.einsum("bi,bj->ij", a, a) / n for a in inputs]
    G = [np.einsum("bci,bcj->ij", v, v) / n for v in vectors]
    return A, G


@pytest.mark.parametrize("estimator", ["ggn", "empirical"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
@pytest.mark.parametrize("layout", ["x @ W", "x @ W.T"])
def test_factors_equal_an_independent_autodiff_computation(layout, bias, estimator):
    params, batch = _params(layout, bias), _batch()
    found = jax.jit(lambda p, b: mcjax.kfac_factors(
        lambda q, c: _loss(q, c, layout=layout), p, b, estimator=estimator))(params, batch)
    A, G = _independent(params, batch, layout, estimator)
    assert list(found) == ["[0]['W']", "[1]['W']"]
    rtol, atol = tolerance(F64)
    for k, factors in enumerate(found.values()):
        np.testing.assert_allclose(factors.A, A[k], rtol=rtol, atol=atol)
        np.testing.assert_allclose(factors.G, G[k], rtol=rtol, atol=atol)


@pytest.mark.parametrize("estimator", ["ggn", "empirical"])
def test_factors_equal_kfac_jax_s_in_float32(estimator):
    """kfac-jax 0.0.8's factors (JAX 0.8.2, made by experiments/kfac_reference.py) of an MLP
    64-32-16-10 on 64 digits; kfac-jax's fisher_empirical G is 1/B of Martens & Grosse's."""
    data = np.load(FIXTURE)
    params = [{"W": jnp.asarray(data[f"W{i}"]), "b": jnp.asarray(data[f"b{i}"])}
              for i in range(3)]
    batch = (jnp.asarray(data["X"]), jnp.asarray(data["y"]))
    found = mcjax.kfac_factors(mcjax.mlp_model((64, 32, 16, 10)).loss, params, batch,
                               estimator=estimator)
    scale = batch[0].shape[0] if estimator == "empirical" else 1
    for i, (A, G) in enumerate(found.values()):
        assert A.dtype == G.dtype == F32
        for mine, ref in ((A, data[f"A{i}_{estimator}"]),
                          (G, scale * data[f"G{i}_{estimator}"])):
            assert np.max(np.abs(mine - ref)) <= KFAC_JAX_AGREEMENT * np.max(np.abs(ref))


def _plant(found, slip):
    path = "[0]['W']"
    A, G = found[path]
    planted = {**{p: tuple(f) for p, f in found.items()}}
    planted[path] = {
        "A without the bias": (A[:-1, :-1], G),
        "G over B": (A, G / B),
        "G times B": (A, G * B),
        "swapped": (G, A),
        "asymmetric A": (A.at[0, 1].add(1.0), G),
        "A off": (A.at[1, 1].add(0.01 * jnp.max(jnp.abs(A))), G),
    }[slip]
    return planted


SLIPS = [("A without the bias", "A has shape (5, 5) but the layer has a bias"),
         ("G over B", "G is 0.1667 times the exact one (= 1/B, B = 6"),
         ("G times B", "G is 6 times the exact one (= B = 6: a sum over the examples"),
         ("swapped", "A and G are swapped"),
         ("asymmetric A", "A is not symmetric"),
         ("A off", "A differs from the exact one by 0.01 of its largest entry")]


def _slip_loss(p, b):
    return _loss(p, b, layout="x @ W.T")


@pytest.fixture(scope="module")
def exact_factors():
    params, batch = _params("x @ W.T", True), _batch()
    return params, batch, mcjax.kfac_factors(_slip_loss, params, batch)


def test_the_factor_check_passes_the_exact_factors_in_float64_and_float32(exact_factors):
    params, batch, found = exact_factors
    assert mcjax.kfac_factor_problems(_slip_loss, params, batch, found) == []
    params32, batch32 = _params("x @ W.T", True, F32), _batch(F32)
    found32 = mcjax.kfac_factors(_slip_loss, params32, batch32)
    assert mcjax.kfac_factor_problems(_slip_loss, params32, batch32, found32) == []


@pytest.mark.parametrize(("slip", "words"), SLIPS, ids=[s for s, _ in SLIPS])
def test_the_factor_check_catches_and_names_a_planted_slip(exact_factors, slip, words):
    params, batch, found = exact_factors
    problems = mcjax.kfac_factor_problems(_slip_loss, params, batch, _plant(found, slip))
    assert len(problems) == 1 and problems[0].startswith("layer [0]['W']: "), problems
    assert words in problems[0], problems


def test_the_factor_check_names_a_missing_and_an_unknown_layer():
    params, batch = _params("x @ W", False), _batch()

    def loss(p, b):
        return _loss(p, b, layout="x @ W")

    found = mcjax.kfac_factors(loss, params, batch)
    given = {"[1]['W']": found["[1]['W']"], "['W']": found["[0]['W']"]}
    assert mcjax.kfac_factor_problems(loss, params, batch, given) == [
        "layer [0]['W']: no factors given; expected A and G",
        "layer ['W']: no dense layer of the loss has this weight; the layers are [0]['W'], "
        "[1]['W']"]


REFUSED = [
    (lambda p, b: jnp.sum(jnp.tanh(b[0] @ p["W"] @ p["W"].T)),
     "parameter ['W'] enters two dot_generals (shared weights)"),
    (lambda p, b: jnp.sum(b[0] @ (p["W"] @ p["V"])),
     "parameter ['W'] is multiplied by parameter ['V'], not by an activation"),
    (lambda p, b: jnp.sum(jax.lax.conv_general_dilated(
        b[0][:, None, :], p["W"][:, None, :], (1,), "VALID")),
     "parameter ['W'] enters conv_general_dilated, which is no dense layer"),
    (lambda p, b: jnp.sum(b[0] @ (2.0 * p["W"])),
     "parameter ['W'] enters a dot_general after an operation on it"),
    (lambda p, b: jnp.sum(jnp.tile(b[0][:, None, :], (1, 3, 1)) @ p["W"]),
     "parameter ['W'] meets an activation of shape"),
]


@pytest.mark.parametrize(("loss", "words"), REFUSED, ids=[w[:40] for _, w in REFUSED])
def test_a_parameter_that_is_no_dense_layer_is_refused_naming_it(loss, words):
    params = {"W": jnp.ones((5, 5), F64), "V": jnp.ones((5, 5), F64)}
    with pytest.raises(ValueError) as refused:
        mcjax.kfac_factors(loss, params, _batch())
    message = str(refused.value)
    assert message.startswith("mcjax.kfac_factors: ") and words in message, message
    assert message.count(". ") == 0  # one sentence


def test_leaves_outside_dense_layers_pass_through_and_an_l2_term_is_no_second_use():
    params = {"W": jnp.ones((5, 3), F64), "scale": jnp.ones((), F64)}

    def loss(p, b):
        s = p["scale"] * (b[0] @ p["W"])
        return _xent(s, b[1]) + 1e-3 * jnp.sum(p["W"] ** 2)

    found = mcjax.kfac_factors(loss, params, _batch())
    assert list(found) == ["['W']"] and found["['W']"].A.shape == (5, 5)
    opt = mcjax.kfac(0.1)
    grads = jax.grad(loss)(params, _batch())
    updates, _ = opt.update(grads, opt.init(params), params, loss=loss, batch=_batch())
    # momentum's first step is the direction itself: the scale's gradient, untouched
    np.testing.assert_allclose(updates["scale"], -0.1 * grads["scale"], rtol=tolerance(F64).rtol)


def _xent(logits, y):
    log_p = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1))


@pytest.mark.parametrize("inverse", ["cholesky", "eigh"])
def test_the_transformation_preconditions_by_the_damped_factors_under_jit(inverse):
    params, batch = _params("x @ W.T", True), _batch()

    def loss(p, b):
        return _loss(p, b, layout="x @ W.T")

    damping = 1e-2
    opt = mcjax.kfac(1.0, damping=damping, momentum=0.0, inverse=inverse, refresh_every=3)
    step = jax.jit(lambda g, s, p, b: opt.update(g, s, p, loss=loss, batch=b))
    grads = jax.grad(loss)(params, batch)
    updates, state = step(grads, opt.init(params), params, batch)
    # the formula, written out: (G + s/pi I)^-1 [gW gb] (A + pi s I)^-1, s = sqrt(damping)
    A, G = mcjax.kfac_factors(loss, params, batch)["[0]['W']"]
    pi = np.sqrt((np.trace(A) / A.shape[0]) / (np.trace(G) / G.shape[0]))
    s = np.sqrt(damping)
    gWb = np.concatenate([grads[0]["W"], grads[0]["b"][:, None]], axis=1)
    want = np.linalg.solve(G + s / pi * np.eye(G.shape[0]),
                           np.linalg.solve(A + pi * s * np.eye(A.shape[0]), gWb.T).T)
    rtol, atol = tolerance(F64)
    np.testing.assert_allclose(updates[0]["W"], -want[:, :-1], rtol=rtol, atol=atol)
    np.testing.assert_allclose(updates[0]["b"], -want[:, -1], rtol=rtol, atol=atol)
    assert int(optax.tree_utils.tree_get(state, "count")) == 1


@pytest.mark.parametrize("adaptive", [False, True], ids=["fixed step", "adaptive step"])
def test_the_transformation_decreases_the_loss_and_refreshes_every_k_steps(adaptive):
    params, batch = _params("x @ W", True), _batch()

    def loss(p, b):
        return _loss(p, b, layout="x @ W")

    opt = mcjax.optimizer("kfac", learning_rate=1.0 if adaptive else 0.3, damping=1e-2,
                          refresh_every=2, adaptive=adaptive)
    state = opt.init(params)

    @jax.jit
    def step(p, s):
        updates, s = opt.update(jax.grad(loss)(p, batch), s, p, loss=loss, batch=batch)
        return optax.apply_updates(p, updates), s

    losses = [float(loss(params, batch))]
    kfac_state = []
    for _ in range(4):
        params, state = step(params, state)
        losses.append(float(loss(params, batch)))
        kfac_state.append(state[0].factors[0][1])  # G of layer 0 (A sees only X)
    assert losses[-1] < 0.5 * losses[0], losses
    chex.assert_trees_all_equal(kfac_state[0], kfac_state[1])  # step 2 does not refresh
    assert not np.array_equal(kfac_state[1], kfac_state[2])  # step 3 does


BAD_KFAC = [
    (dict(damping=0.0), "damping=0.0; expected a number > 0"),
    (dict(refresh_every=0), "refresh_every=0; expected an integer >= 1"),
    (dict(refresh_every=2.5), "refresh_every=2.5; expected an integer >= 1"),
    (dict(inverse="qr"), "inverse='qr'; expected one of 'eigh', 'cholesky'"),
    (dict(estimator="natural"),
     "estimator='natural'; expected one of 'ggn', 'empirical', 'fisher'"),
    (dict(seed=-1), "seed=-1; expected an integer >= 0"),
    (dict(factor_decay=1.0), "factor_decay=1.0; expected a number in [0, 1)"),
    (dict(momentum=-0.1), "momentum=-0.1; expected a number in [0, 1)"),
    (dict(learning_rate=0.0), "learning_rate=0.0; expected a finite number > 0"),
    (dict(adaptive_damping=1), "adaptive_damping=1; expected true or false"),
    (dict(damping_adaptation_interval=0),
     "damping_adaptation_interval=0; expected an integer >= 1"),
    (dict(damping_adaptation_decay=1.0),
     "damping_adaptation_decay=1.0; expected a number in (0, 1)"),
]


@pytest.mark.parametrize(("kwargs", "words"), BAD_KFAC, ids=[w[:30] for _, w in BAD_KFAC])
def test_kfac_refuses_a_value_out_of_range_by_name_and_directly(kwargs, words):
    for make, prefix in ((lambda **k: mcjax.optimizer("kfac", **k), "mcjax.optimizer: "),
                         (mcjax.kfac, "mcjax.kfac: ")):
        with pytest.raises(ValueError) as refused:
            make(**kwargs)
        assert str(refused.value).startswith(prefix) and words in str(refused.value)
    with pytest.raises(TypeError, match=r"mcjax.kfac takes no hyper-parameter lambda_; it "
                                        r"takes damping, refresh_every"):
        mcjax.optimizer("kfac", lambda_=1.0)


@pytest.mark.parametrize("options", [{}, {"adaptive_damping": True,
                                          "damping_adaptation_interval": 2,
                                          "estimator": "fisher", "refresh_every": 3}],
                         ids=["fixed damping", "adaptive damping, sampled fisher"])
def test_train_by_name_with_kfac_checkpoints_and_resumes(tmp_path, options):
    model = mcjax.mlp_model((4, 8, 3), dtype=F32)
    X = jax.random.normal(jax.random.key(0), (64, 4), F32)
    y = jnp.argmax(X[:, :3], axis=1).astype(jnp.int32)
    kw: dict[str, Any] = dict(optimizer="kfac", learning_rate=0.3, batch_size=16,
                              optimizer_options={"damping": 1e-2, **options}, progress=False)
    first = mcjax.train(model, (X, y), epochs=1, checkpoint_dir=tmp_path / "run", **kw)
    resumed = mcjax.train(model, (X, y), epochs=2, checkpoint_dir=tmp_path / "run",
                          resume=True, **kw)
    straight = mcjax.train(model, (X, y), epochs=2, **kw)
    assert resumed.resumed_from == first.checkpoint
    chex.assert_trees_all_equal(resumed.params, straight.params)
    chex.assert_trees_all_equal(resumed.opt_state, straight.opt_state)  # lambda included
    assert straight.history["loss"][-1] < straight.history["loss"][0]
    if options:  # lambda moved (4 steps an epoch, adjusted every 2nd) and is reported; the
        # labels' key moved at each refresh (steps 1, 4, 7)
        assert resumed.history == straight.history and len(straight.history["damping"]) == 2
        assert straight.history["damping"][-1] != 1e-2
        kfac_state = straight.opt_state.inner[0]
        assert float(kfac_state.damping) == straight.history["damping"][-1]
        assert not np.array_equal(kfac_state.key, mcjax.kfac().init(first.params)[0].key)
    else:
        assert set(straight.history) == {"loss"}


def test_the_levenberg_marquardt_rule_moves_the_damping_by_the_reduction_ratio():
    from mcjax._train._kfac import MIN_DAMPING, levenberg_marquardt

    lam, omega = jnp.asarray(0.5, F64), 0.8
    rhos = (1.0, 0.8, 0.5, 0.3, 0.2, -3.0, float("nan"), float("inf"))  # NaN: a failed step
    moved = [float(levenberg_marquardt(jnp.asarray(rho, F64), lam, omega)) for rho in rhos]
    np.testing.assert_allclose(moved, [0.4, 0.4, 0.5, 0.5, 0.625, 0.625, 0.625, 0.625],
                               rtol=tolerance(F64).rtol)
    floor = levenberg_marquardt(jnp.asarray(1.0, F64), jnp.asarray(MIN_DAMPING, F64), omega)
    assert float(floor) == MIN_DAMPING


def _least_squares(p, b):
    """A linear model and squared error: the Gauss-Newton model is the loss's Taylor
    expansion, exact to every order."""
    x, t = b
    return jnp.mean(jnp.sum((x @ p["W"] + p["b"][None, :] - t) ** 2, axis=1))


def _least_squares_problem():
    kx, kt, kw = jax.random.split(jax.random.key(6), 3)
    params = {"W": jax.random.normal(kw, (4, 3), F64), "b": jnp.zeros(3, F64)}
    batch = (jax.random.normal(kx, (8, 4), F64), jax.random.normal(kt, (8, 3), F64))
    return params, batch


@pytest.mark.parametrize("rate", [0.05, 3.0])
def test_the_reduction_ratio_is_one_where_the_quadratic_model_is_exact(rate):
    """rho = (L(theta + delta) - L(theta)) / (1/2 delta^T F delta + g^T delta) is 1 for a
    quadratic loss whose GGN is its Hessian, whatever the step: a slip in M (the 1/2, the
    sign, the gradient term, F) would move it off 1."""
    from mcjax._train._kfac import reduction_ratio

    params, batch = _least_squares_problem()
    grads = jax.grad(_least_squares)(params, batch)
    step = jax.tree.map(lambda g: -rate * g, grads)
    rho = jax.jit(lambda p, b: reduction_ratio(_least_squares, p, b, grads, step))(params, batch)
    np.testing.assert_allclose(float(rho), 1.0, rtol=tolerance(F64).rtol)


def test_adaptive_damping_shrinks_lambda_where_the_model_is_exact_and_grows_it_where_not():
    """One step each, adjusted after it (T1 = 1, omega = 0.5): the least-squares step does
    what its model promised (rho = 1 -> lambda * omega); a cross-entropy step ten times too
    long raises the loss (rho < 0 -> lambda / omega)."""
    def one_step(loss, params, batch, rate):
        opt = mcjax.kfac(rate, damping=1e-2, momentum=0.0, adaptive_damping=True,
                         damping_adaptation_interval=1, damping_adaptation_decay=0.5)
        grads = jax.grad(loss)(params, batch)
        _, state = jax.jit(lambda s: opt.update(grads, s, params, loss=loss, batch=batch))(
            opt.init(params))
        return float(state.inner[0].damping), float(state.rho)

    lam, rho = one_step(_least_squares, *_least_squares_problem(), 0.5)
    np.testing.assert_allclose(rho, 1.0, rtol=tolerance(F64).rtol)
    np.testing.assert_allclose(lam, 0.5e-2, rtol=tolerance(F64).rtol)

    def loss(p, b):
        return _loss(p, b, layout="x @ W")

    lam, rho = one_step(loss, _params("x @ W", True), _batch(), 30.0)
    assert rho < 0.25, rho
    np.testing.assert_allclose(lam, 2e-2, rtol=tolerance(F64).rtol)


def test_train_refuses_kfac_for_a_model_without_a_dense_layer():
    model = mcjax.neuron_model(3)
    X = jnp.ones((8, 3), F32)
    with pytest.raises(ValueError, match=r"parameter \['w'\] enters a dot_general as a 1-D "
                                         r"operand"):
        mcjax.train(model, (X, jnp.zeros(8, F32)), optimizer="kfac", epochs=1, batch_size=8,
                    progress=False)


def test_kfac_refuses_a_loss_without_a_dense_layer():
    params = {"w": jnp.ones((5,), F64)}

    def loss(p, b):
        return jnp.mean((b[0] * p["w"][None, :]) ** 2)

    assert mcjax.kfac_factors(loss, params, _batch()) == {}
    opt = mcjax.kfac()
    with pytest.raises(ValueError, match="mcjax.kfac: the loss has no dense layer to "
                                         "precondition"):
        opt.update(params, opt.init(params), params, loss=loss, batch=_batch())


def test_the_gauss_newton_quadratic_equals_an_independent_computation():
    """The adaptive step's v_j^T F v_k, F the exact GGN in all the parameters, against the
    written-out MLP's J^T H J from jax.jvp and jax.hessian."""
    from mcjax._derive._kfac import dense_layers, ggn_quadratic

    params, batch = _params("x @ W.T", True), _batch()

    def loss(p, b):
        return _loss(p, b, layout="x @ W.T")

    keys = jax.random.split(jax.random.key(5), 2)
    directions = [jax.tree.map(lambda x, k=k: jax.random.normal(k, x.shape, x.dtype), params)
                  for k in keys]
    layers, program = dense_layers(loss, params, batch)
    M = jax.jit(lambda p, b: ggn_quadratic(layers, program, p, b, directions))(params, batch)

    def output(p, x):  # the logits of one example
        h = x[None]
        for k, layer in enumerate(p):
            h = h @ layer["W"].T + jnp.reshape(layer["b"], (1, -1))
            h = jnp.tanh(h) if k < len(p) - 1 else h
        return h[0]

    def gram(x, y):
        z, *_ = jax.jvp(lambda p: output(p, x), (params,), (directions[0],))
        dz = jnp.stack([jax.jvp(lambda p: output(p, x), (params,), (v,))[1]
                        for v in directions])
        H = jax.hessian(lambda z: -jax.nn.log_softmax(z)[y])(z)
        return dz @ H @ dz.T

    want = jax.jit(lambda X, y: jnp.mean(jax.vmap(gram)(X, y), axis=0))(*batch)
    rtol, atol = tolerance(F64)
    np.testing.assert_allclose(M, want, rtol=rtol, atol=atol)
    assert M.shape == (2, 2)


def test_check_hessian_takes_kfac_factors_and_names_a_slip_in_its_report(exact_factors):
    """``mcjax.check_hessian(loss, factors, params, batch, kind="kfac")``: the exact factors
    pass, a planted slip fails and the report's diagnosis names it and its layer."""
    params, batch, found = exact_factors
    right = mcjax.check_hessian(_slip_loss, found, params, batch, kind="kfac")
    assert right.ok and right.derivative == "K-FAC factors" and "[0]['W']" in right.shapes
    wrong = mcjax.check_hessian(_slip_loss, _plant(found, "G over B"), params, batch, kind="kfac")
    assert not wrong.ok and [s.kind for s in wrong.slips] == ["kfac-factor"], wrong
    assert "G is 0.1667 times the exact one (= 1/B, B = 6" in wrong.diagnosis[0]
    assert "FAIL" in str(wrong) and "diagnosis: layer [0]['W']: G is" in str(wrong)
    with pytest.raises(ValueError, match="kind='kfac' takes the point as \\(params, batch\\)"):
        mcjax.check_hessian(_slip_loss, found, params, kind="kfac")


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse"])
def test_the_sampled_fisher_averages_to_the_ggn_factors_like_one_over_root_draws(loss):
    """kfac-jax's fisher_gradients: labels drawn from the model (Categorical(softmax z); z + eps
    with eps ~ N(0, I/h) for mse's h I), so the mean of G over D draws tends to the exact GGN's
    G with an error ~ 1/sqrt(D), A untouched.  Labels from the data (the empirical Fisher,
    46 % and 210 % off here) or a wrong variance would not shrink."""
    X = jax.random.normal(jax.random.key(1), (B, 5), F64)
    Y = jnp.arange(B, dtype=jnp.int32) % 3 if loss == "softmax_cross_entropy" \
        else jax.random.normal(jax.random.key(2), (B, 3), F64)
    model = mcjax.mlp_model((5, 4, 3), loss=loss, activation="tanh", dtype=F64)
    params = model.init(jax.random.key(0))
    exact = mcjax.kfac_factors(model.loss, params, (X, Y))
    draws = jax.jit(jax.vmap(lambda k: mcjax.kfac_factors(
        model.loss, params, (X, Y), estimator="fisher", key=k)))(
        jax.random.split(jax.random.key(0), 4096))

    def error(n):  # relative Frobenius error of the mean of the first n draws, worst layer
        return max(float(np.linalg.norm(np.mean(draws[p].G[:n], 0) - f.G)
                         / np.linalg.norm(f.G)) for p, f in exact.items())

    few, many = error(64), error(4096)
    assert few / many > 3 and many * np.sqrt(4096) < 1.5, (few, many)  # 1/sqrt(D): 8, ~0.5
    for path, f in exact.items():
        np.testing.assert_allclose(draws[path].A[0], f.A, rtol=tolerance(F64).rtol)


def test_the_sampled_fisher_refuses_a_loss_it_cannot_sample_and_a_missing_key():
    params, batch = _least_squares_problem()

    def squashed(p, b):  # squared error after a tanh: the Hessian in z is no multiple of I
        x, t = b
        return jnp.mean(jnp.sum((jnp.tanh(x @ p["W"] + p["b"][None, :]) - t) ** 2, axis=1))

    with pytest.raises(ValueError, match=r"^mcjax.kfac_factors: estimator='fisher' draws labels "
                                         r"from the model for softmax cross-entropy or squared "
                                         r"error .* expected estimator='ggn' or 'empirical', "
                                         r"which take any loss$"):
        mcjax.kfac_factors(squashed, params, batch, estimator="fisher", key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"estimator='fisher' draws labels from the model and "
                                         r"needs a key; expected key=jax.random.key\(seed\)"):
        mcjax.kfac_factors(_least_squares, params, batch, estimator="fisher")
    with pytest.raises(ValueError, match=r"^mcjax.kfac_factor_problems: estimator='fisher' draws "
                                         r"random labels, so its factors have no exact value"):
        mcjax.kfac_factor_problems(_least_squares, params, batch, {}, estimator="fisher")
    found = mcjax.kfac_factors(_least_squares, params, batch, estimator="fisher",
                               key=jax.random.key(0))  # squared error, h = 2: sampled
    assert found["['W']"].G.shape == (3, 3)

    def soft_labels(p, b):  # cross-entropy with one-hot float labels: recognised too
        x, q = b
        return -jnp.mean(jnp.sum(q * jax.nn.log_softmax(x @ p["W"] + p["b"][None, :]), axis=1))

    one_hot = (batch[0], jax.nn.one_hot(jnp.arange(8) % 3, 3, dtype=F64))
    found = mcjax.kfac_factors(soft_labels, params, one_hot, estimator="fisher",
                               key=jax.random.key(0))
    assert found["['W']"].G.shape == (3, 3)
