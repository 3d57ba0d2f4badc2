"""Checks that need several devices, run on 4 forced CPU devices.

``tests/test_sharding.py`` runs this file with pytest in a subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (the flag is read once, when JAX
starts, so it cannot be set inside the test process).  The file name does not match
``test_*.py``: the suite's own collection skips it.

That process also sets ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES=1`` and
``JAX_PROCESS_ID=0``: the launcher's one-process path (:func:`mcjax.sharding.init_distributed`
reading the environment, then ``jax.distributed.initialize`` for real) runs first, at import,
before anything starts JAX's backend, and every check below runs inside it.
"""

import functools
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import mcjax

if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    PROCESSES = mcjax.sharding.init_distributed()

from mcjax import densify  # noqa: E402
from mcjax.conventions import data_parallel_tolerance, tolerance  # noqa: E402

pytestmark = pytest.mark.skipif(
    jax.device_count() < 4,
    reason="needs 4 devices: tests/test_sharding.py runs this file with "
           "XLA_FLAGS=--xla_force_host_platform_device_count=4",
)
F32, F64 = jnp.float32, jnp.float64


def _max_diff(got, ref) -> float:
    return max(float(np.max(np.abs(np.asarray(g, np.float64) - np.asarray(r, np.float64))))
               for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True))


def _assert_data_parallel_close(got, ref, dtype, steps, what="4 devices vs 1") -> float:
    """``max|got - ref| <= atol + rtol * max|ref|`` with the data-parallel bound; returns
    the difference (printed: the figure the docs quote)."""
    tol = data_parallel_tolerance(dtype, steps)
    scale = max(float(np.max(np.abs(np.asarray(r)))) for r in jax.tree.leaves(ref))
    diff = _max_diff(got, ref)
    bound = tol.atol + tol.rtol * scale
    print(f"{what}: max |Δparams| = {diff:.3g} after {steps} steps ({np.dtype(dtype).name}; "
          f"bound {bound:.3g})")
    assert diff <= bound, f"{diff} > {bound}"
    return diff


def _mlp_batches(dtype, steps=8, rows=32):
    # data from NumPy and a jitted init: eager jax.random would compile once per call
    model = mcjax.mlp_model((6, 16, 16, 3), dtype=dtype)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((steps, rows, 6)).astype(dtype)
    Y = rng.integers(0, 3, (steps, rows)).astype(np.int32)
    return model, X, Y


@functools.cache
def _run_steps(dtype, *, grad, devices=None):
    """8 Adam steps, one batch each, on one device or on a mesh, as a user runs them.

    Returns the parameters, the losses, the compiled program's text (from the cache: no
    second compilation) and the step."""
    model, X, Y = _mlp_batches(dtype)
    mesh = None if devices is None else mcjax.sharding.data_mesh(devices)
    opt = optax.adam(1e-2)
    step = mcjax.steps.make_train_step(mcjax.objective(model, grad=grad), opt, mesh=mesh)
    params = jax.jit(model.init)(jax.random.key(1))
    opt_state = jax.jit(opt.init)(params)
    place = (lambda b: b) if mesh is None else functools.partial(mcjax.sharding.shard_batch, mesh=mesh)
    if mesh is not None:
        params, opt_state = mcjax.sharding.replicate((params, opt_state), mesh)
    lowered = step.lower(params, opt_state, place((X[0], Y[0])))
    losses = []
    for x, y in zip(X, Y):
        params, opt_state, metrics = step(params, opt_state, place((x, y)))
        losses.append(float(metrics["loss"]))
    return params, losses, lowered.compile().as_text(), step


# -- the step ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("grad", "dtype"), [("autodiff", F32), ("analytic", F64)])
def test_step_on_four_devices_equals_one_device(grad, dtype):
    _, X, Y = _mlp_batches(dtype)
    mesh = mcjax.sharding.data_mesh(4)
    single, single_losses, *_ = _run_steps(dtype, grad=grad)
    sharded, sharded_losses, hlo, _ = _run_steps(dtype, grad=grad, devices=4)
    _assert_data_parallel_close(sharded, single, dtype, steps=len(X))
    np.testing.assert_allclose(sharded_losses, single_losses, rtol=tolerance(dtype).rtol)
    # really data-parallel: each device holds a quarter of the batch, the parameters come
    # back whole on every device, and the program all-reduces (the gradient)
    batch = mcjax.sharding.shard_batch((X[0], Y[0]), mesh)
    assert {s.data.shape for s in batch[0].addressable_shards} == {(8, 6)}
    assert all(leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
               for leaf in jax.tree.leaves(sharded))
    assert "all-reduce" in hlo


def test_the_bound_catches_a_real_difference():
    """The comparison can fail: parameters 1e-4 away (relative) are outside the bound."""
    single, *_ = _run_steps(F32, grad="autodiff")
    sharded, *_ = _run_steps(F32, grad="autodiff", devices=4)
    moved = jax.tree.map(lambda p: np.asarray(p) * (1 + 1e-4), sharded)
    with pytest.raises(AssertionError):
        _assert_data_parallel_close(moved, single, F32, steps=8)


def test_shard_map_with_an_explicit_pmean_equals_the_jit_step():
    """docs/scaling.md's explicit-collectives step, on 4 devices, with the hand-derived
    gradient (a custom_vjp: the case that needs check_vma=False)."""
    model, X, Y = _mlp_batches(F32, steps=1)
    mesh = mcjax.sharding.data_mesh(4)
    loss, opt = mcjax.objective(model, grad="analytic"), optax.adam(1e-2)

    def local_step(params, opt_state, batch):
        value, grads = jax.value_and_grad(loss)(params, batch)
        value, grads = jax.lax.pmean((value, grads), "data")
        with jax.numpy_dtype_promotion("standard"):  # optax is written for standard promotion
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value

    P = PartitionSpec
    explicit = jax.jit(jax.shard_map(local_step, mesh=mesh, in_specs=(P(), P(), P("data")),
                                     out_specs=(P(), P(), P()), check_vma=False))
    params = jax.jit(model.init)(jax.random.key(1))
    state = mcjax.sharding.replicate((params, opt.init(params)), mesh)
    batch = mcjax.sharding.shard_batch((X[0], Y[0]), mesh)
    got = explicit(*state, batch)
    want = mcjax.steps.make_train_step(loss, opt, mesh=mesh)(*mcjax.sharding.replicate(state, mesh), batch)
    _assert_data_parallel_close(got[0], want[0], F32, steps=1, what="shard_map vs jit")
    loss_value = float(want[2]["loss"])
    assert abs(float(got[2]) - loss_value) <= tolerance(F32).rtol * loss_value


def test_steps_called_back_to_back_do_not_deadlock_on_cpu_devices():
    """Without waiting, XLA:CPU can deadlock with two all-reducing programs in flight (the
    process aborts after 40 s); the data-parallel step waits for its result on CPU meshes."""
    params, _, _, step = _run_steps(F32, grad="autodiff", devices=4)
    _, X, Y = _mlp_batches(F32)
    mesh = mcjax.sharding.data_mesh(4)
    host = jax.device_get(params)  # a copy: the step donates what it gets
    state = mcjax.sharding.replicate([host, optax.adam(1e-2).init(host)], mesh)
    batch = mcjax.sharding.shard_batch((X[0], Y[0]), mesh)
    for _ in range(40):
        *state, metrics = step(*state, batch)
    assert np.isfinite(float(metrics["loss"]))


# -- the training loop -------------------------------------------------------------------------
def _digits_like(n=96):
    rng = np.random.default_rng(2)
    return rng.standard_normal((n, 6)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


def _train(devices=None, **kwargs):
    kw = dict(optimizer="adam", learning_rate=1e-2, grad="analytic", epochs=4, batch_size=16,
              seed=0)
    return mcjax.train(mcjax.mlp_model((6, 16, 3)), _digits_like(), devices=devices,
                       **{**kw, **kwargs})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One training, on one device and on 4, and resumed from the 4-device run's epoch-2
    checkpoint on 2 devices and on 1."""
    tmp = tmp_path_factory.mktemp("runs")
    out = {"1": _train(None), "4": _train(4, checkpoint_dir=tmp / "4", checkpoint_every=2,
                                          keep_checkpoints=None)}
    for devices, name in ((2, "resumed on 2"), (None, "resumed on 1")):
        # the run as it was after epoch 2: its record and that epoch's orbax checkpoint
        (tmp / name).mkdir()
        shutil.copy(tmp / "4" / "run.json", tmp / name)
        shutil.copytree(tmp / "4" / "epoch_00000002", tmp / name / "epoch_00000002")
        out[name] = _train(devices, checkpoint_dir=tmp / name, resume=True)
    return out


def test_train_on_four_devices_equals_one_device(runs):
    single = runs["1"]
    _assert_data_parallel_close(runs["4"].params, single.params, F32, steps=single.step)
    np.testing.assert_allclose(runs["4"].history["loss"], single.history["loss"],
                               rtol=tolerance(F32).rtol)
    assert all(leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
               for leaf in jax.tree.leaves(runs["4"].params))
    # the epoch's minibatches are split inside the one compiled scan: it all-reduces
    mesh = mcjax.sharding.data_mesh(4)
    opt = optax.adam(1e-2)
    model = mcjax.mlp_model((6, 16, 3))
    params = mcjax.sharding.replicate(jax.jit(model.init)(jax.random.key(0)), mesh)
    epoch = mcjax.steps.make_train_epoch(mcjax.objective(model), opt, batch_size=16, mesh=mesh)
    hlo = epoch.lower(params, opt.init(params), mcjax.sharding.replicate(_digits_like(), mesh),
                      jax.random.key(0)).compile().as_text()
    assert "all-reduce" in hlo and "f32[4,16]" in hlo  # 16 rows / 4 devices per step


def test_checkpoints_of_four_devices_resume_on_two_and_on_one(runs):
    for name, devices in (("resumed on 2", 2), ("resumed on 1", 1)):
        resumed = runs[name]
        assert resumed.resumed_from.name == "epoch_00000002" and resumed.epoch == 4
        assert len(jax.tree.leaves(resumed.params)[0].sharding.device_set) == devices
        _assert_data_parallel_close(resumed.params, runs["4"].params, F32, steps=resumed.step,
                                    what=f"{name} vs 4 devices throughout")


def test_kfac_on_four_devices_equals_one_device():
    """K-FAC reads the batch (its factors, example by example, at labels drawn from the model;
    with adaptive damping the loss at the stepped parameters): under jit its means are the
    global batch's and the draws JAX's partitionable PRNG's, so 4 steps on 4 devices (the
    factors refreshed twice, the damping adapted twice) equal one device's."""
    kw = dict(optimizer="kfac", learning_rate=0.3, epochs=1, grad="autodiff",
              optimizer_options={"damping": 1e-2, "refresh_every": 2, "adaptive_damping": True,
                                 "damping_adaptation_interval": 2, "estimator": "fisher"})
    X, y = _digits_like(64)
    one, four = (mcjax.train(mcjax.mlp_model((6, 16, 3)), (X, y), devices=devices, **{
        **dict(batch_size=16, seed=0, progress=False), **kw}) for devices in (None, 4))
    _assert_data_parallel_close(four.params, one.params, F32, steps=one.step,
                                what="K-FAC, 4 devices vs 1")
    factors = lambda r: r.opt_state.inner[0].factors  # noqa: E731
    _assert_data_parallel_close(factors(four), factors(one), F32, steps=one.step,
                                what="K-FAC's factors, 4 devices vs 1")
    np.testing.assert_allclose(four.history["damping"], one.history["damping"],
                               rtol=tolerance(F32).rtol)
    assert len(jax.tree.leaves(four.params)[0].sharding.device_set) == 4


# -- batches that do not divide ----------------------------------------------------------------
def test_batches_that_do_not_divide_are_refused_with_both_numbers():
    mesh = mcjax.sharding.data_mesh(4)
    with pytest.raises(mcjax.ShapeError, match=(
            r"^mcjax.train: batch_size=6 does not divide among the 4 devices of the mesh's "
            r"'data' axis; expected a multiple of 4 \(e.g. 4 or 8\)$")):
        _train(4, batch_size=6)
    model, X, Y = _mlp_batches(F32, steps=1, rows=30)
    opt = optax.sgd(0.1)
    params = mcjax.sharding.replicate(model.init(jax.random.key(0)), mesh)
    step = mcjax.steps.make_train_step(mcjax.objective(model), opt, mesh=mesh)
    with pytest.raises(mcjax.ShapeError, match=(
            r"^mcjax.steps.make_train_step: the batch of 30 rows does not divide among the 4 devices "
            r".*expected a multiple of 4 \(e.g. 28 or 32\), or pad it with mcjax.sharding.pad_batch$")):
        step(params, opt.init(params), (X[0], Y[0]))
    with pytest.raises(mcjax.ShapeError,
                       match=r"^mcjax.sharding.shard_batch: the batch of 30 rows .* 4 devices"):
        mcjax.sharding.shard_batch((X[0], Y[0]), mesh)
    with pytest.raises(mcjax.ShapeError,
                       match=r"^mcjax.steps.make_train_epoch: the batch of 6 rows .* 4 devices"):
        mcjax.steps.make_train_epoch(mcjax.objective(model), opt, batch_size=6, mesh=mesh).lower(
            params, opt.init(params), (X[0], Y[0]), jax.random.key(0))


def test_a_padded_and_masked_batch_has_the_loss_and_gradient_of_the_batch():
    model, X, Y = _mlp_batches(F64, steps=1, rows=30)
    batch = (X[0], Y[0])
    params = model.init(jax.random.key(3))
    mesh = mcjax.sharding.data_mesh(4)
    (Xp, Yp), mask = mcjax.sharding.pad_batch(batch, mesh)
    assert Xp.shape == (32, 6) and int(mask.sum()) == 30
    sharded = mcjax.sharding.shard_batch((Xp, Yp, mask), mesh)
    # the hand-derived gradient: a custom_vjp under jax.vmap (autodiff is the easy case)
    loss = mcjax.objective(model, grad="analytic")
    got = jax.jit(jax.value_and_grad(mcjax.sharding.masked_objective(loss)))(
        mcjax.sharding.replicate(params, mesh), sharded)
    want = jax.jit(jax.value_and_grad(loss))(params, batch)
    assert _close(got, want, F64)
    # the mask is what makes it equal: the plain mean over the padded rows differs
    unmasked = jax.jit(jax.value_and_grad(loss))(params, (Xp, Yp))
    assert not _close(unmasked, want, F64)


def _close(got, want, dtype) -> bool:
    """``max |got - want| <= atol + rtol * max |want|`` over every leaf (``mcjax.conventions.tolerance``)."""
    tol = tolerance(dtype)
    got, want = jax.tree.leaves(got), jax.tree.leaves(want)
    scale = max(float(np.max(np.abs(w))) for w in want)
    return all(float(np.max(np.abs(np.asarray(g) - np.asarray(w)))) <= tol.atol + tol.rtol * scale
               for g, w in zip(got, want))


# -- derivatives on sharded arguments ----------------------------------------------------------
BATCHED_RULES = [r for r in mcjax.registry.REGISTRY if any(s[:1] == ("B",) for s in r.shapes.values())]


def _shard_rows(rule, args, mesh):
    """The arguments whose symbolic shape starts with the batch dimension B, split along
    ``"data"``; the others replicated."""
    return tuple(mcjax.sharding.shard_batch(a, mesh) if rule.shapes[name][:1] == ("B",)
                 else mcjax.sharding.replicate(a, mesh) for name, a in zip(rule.arg_names, args))


def _rule_and_jacrev(rule):
    @jax.jit
    def both(*args):
        out = {}
        for name in rule.wrt:
            i = rule.arg_index(name)
            f = lambda a, i=i: rule(*args[:i], a, *args[i + 1:])  # noqa: E731
            out[name] = (densify(rule.derivative(name)(*args, **rule.hyper)),  # as verified
                         jax.jacrev(f)(args[i]))
        return out

    return both


@pytest.mark.parametrize("rule", BATCHED_RULES, ids=lambda r: r.name)
def test_registry_derivatives_on_sharded_arguments_under_jit(rule):
    assert len(BATCHED_RULES) >= 6
    dims = {"B": 8, "n": 3, "m": 4, "k": 3}
    args = rule.example(np.random.default_rng(0), dims, F64)
    mesh = mcjax.sharding.data_mesh(4)
    both = _rule_and_jacrev(rule)
    sharded, plain = both(*_shard_rows(rule, args, mesh)), both(*args)
    for name in rule.wrt:
        (got, ref), (got_plain, ref_plain) = sharded[name], plain[name]
        assert _close(got, ref, F64), (rule.name, name)
        assert _close(got_plain, ref_plain, F64), (rule.name, name)
        assert _close(got, got_plain, F64), (rule.name, name)
        # the comparison can fail: a 1% slip in the formula is caught on sharded arguments
        slipped = jax.tree.map(lambda g: 1.01 * g, got)
        assert not _close(slipped, ref, F64), (rule.name, name)


CHECKED_RULES = ["neuron_loss", "mlp_softmax_cross_entropy"]  # an array and a pytree argument


@pytest.mark.parametrize("name", CHECKED_RULES)
def test_check_gives_the_same_verdict_on_sharded_arguments(name):
    rule = mcjax.registry.REGISTRY.get(name)
    f = functools.partial(rule.forward, **rule.hyper)
    args = rule.example(np.random.default_rng(1), {"B": 8, "n": 3, "m": 4, "k": 3}, F32)
    sharded = _shard_rows(rule, args, mcjax.sharding.data_mesh(4))
    wrt = next(iter(rule.wrt))
    i = rule.arg_index(wrt)
    right = functools.partial(rule.derivative(wrt), **rule.hyper)  # as verify checks it

    def wrong(*a):
        return jax.tree.map(lambda g: 1.02 * g, densify(right(*a)))

    for derivative, verdict in ((right, True), (wrong, False)):
        plain = mcjax.check(f, derivative, *args, argnums=i)
        on_devices = mcjax.check(f, jax.jit(derivative), *sharded, argnums=i)
        assert plain.ok == on_devices.ok == verdict, (name, str(plain), str(on_devices))


# -- meshes and the launcher ----------------------------------------------------------------
def test_data_mesh_forms_and_errors():
    assert mcjax.sharding.data_mesh().shape == {"data": 4}
    assert mcjax.sharding.data_mesh(2).devices.tolist() == jax.devices()[:2]
    with pytest.raises(ValueError, match=r"mcjax.sharding.data_mesh: devices=5 but 4 cpu devices are "
                                         r"visible; expected at most 4 \(on CPU, set XLA_FLAGS"):
        mcjax.sharding.data_mesh(5)
    with pytest.raises(ValueError,
                       match=r"the mesh has axes \('batch',\); expected one named 'data'"):
        mcjax.sharding.data_mesh(Mesh(np.array(jax.devices()), ("batch",)))
    assert isinstance(mcjax.sharding.batch_sharding(mcjax.sharding.data_mesh(2)), NamedSharding)
    assert mcjax.sharding.batch_sharding(mcjax.sharding.data_mesh(2)).spec == PartitionSpec("data")


def test_a_mesh_with_a_model_axis_splits_the_batch_along_data_only():
    _, X, Y = _mlp_batches(F32)
    *_, single_step = _run_steps(F32, grad="autodiff")  # compiled already
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))
    assert mcjax.sharding.data_mesh(mesh) is mesh
    model, opt = mcjax.mlp_model((6, 16, 16, 3)), optax.adam(1e-2)
    step = mcjax.steps.make_train_step(mcjax.objective(model), opt, mesh=mesh)
    host = jax.device_get(jax.jit(model.init)(jax.random.key(1)))
    batch = mcjax.sharding.shard_batch((X[0], Y[0]), mesh)
    assert {s.data.shape for s in batch[0].addressable_shards} == {(16, 6)}  # 32 rows / 2
    got = step(*mcjax.sharding.replicate((host, opt.init(host)), mesh), batch)
    want = single_step(jax.tree.map(jnp.asarray, host), opt.init(host), (X[0], Y[0]))
    _assert_data_parallel_close(got[0], want[0], F32, steps=1, what="2 x 2 mesh vs 1 device")


def test_the_launcher_joined_a_one_process_run_from_the_environment():
    if not os.environ.get("JAX_COORDINATOR_ADDRESS"):
        pytest.skip("run without a coordinator")
    assert PROCESSES == mcjax.sharding.Processes(process_index=0, process_count=1, local_device_count=4,
                                        device_count=4, platform="cpu", initialized=True)
    # a second call is harmless: the process is already connected
    assert mcjax.sharding.init_distributed() == PROCESSES
