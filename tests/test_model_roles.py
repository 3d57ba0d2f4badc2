"""The three roles of a model's leaves in mcjax.check, mcjax.derive and mcjax.hessian, as in
mcjax.train: trained leaves (nnx.Param, linen's "params") are differentiated; state
(nnx.BatchStat, an nnx.Rngs' counts, linen's batch_stats) and untouched leaves (keys) are
passed to f as they are.  A gradient over the whole model has entries at the state: they are
not compared, and the report says so.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import mcjax
from mcjax._core._conventions import tolerance
from mcjax._core._pytrees import STATE, TRAINED, UNTOUCHED, leaf_roles, partition

flax = pytest.importorskip("flax", minversion="0.12")
from flax import linen, nnx  # noqa: E402

F32 = jnp.float32
TOL = tolerance(F32)
X = jnp.asarray(np.random.default_rng(0).standard_normal((6, 3)), F32)


class Normed(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(3, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.out = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(nnx.relu(self.bn(self.lin(x)))))


def loss(model, x):
    return jnp.sum(jnp.tanh(model(x)) ** 2)


@pytest.fixture(scope="module")
def net():
    model = Normed(nnx.Rngs(params=0, dropout=1))
    # running statistics away from their init, so that they matter in eval mode
    model.bn.mean[...] = jnp.asarray([0.3, -0.2, 0.1, 0.5], F32)
    model.bn.var[...] = jnp.asarray([1.5, 0.7, 1.2, 2.0], F32)
    model.eval()  # deterministic: the running statistics, no dropout
    return model


def n_params(model):
    return sum(a.size for a in jax.tree.leaves(nnx.state(model, nnx.Param)))


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=TOL.rtol, atol=TOL.atol)


def test_roles_of_an_nnx_module_and_of_dicts(net):
    roles = {}
    flat = jax.tree_util.tree_flatten_with_path(net)[0]
    for (path, _), (role, source) in zip(flat, leaf_roles(net)):
        roles[jax.tree_util.keystr(path)] = (role, source)
    assert roles[".lin.kernel.value"] == (TRAINED, None)
    assert roles[".bn.mean.value"] == (STATE, "nnx.BatchStat")
    assert roles[".drop.rngs.count.value"] == (STATE, "nnx.RngCount")
    assert roles[".drop.rngs.key.value"][0] == UNTOUCHED
    # linen variables are collections of dicts; a dict of arrays with a "params" key is not
    assert [r for r, _ in leaf_roles({"params": {"w": X}, "batch_stats": {"m": X}})] == [
        STATE, TRAINED]
    assert [r for r, _ in leaf_roles({"params": X, "b": X})] == [TRAINED, TRAINED]


def test_check_differentiates_the_params_and_catches_a_flipped_sign(net):
    r = mcjax.check(loss, nnx.grad(loss), net, X)
    assert r.ok, r
    assert "bn.mean" not in r.shapes and ".bn.scale.value (4,)" in r.shapes, r.shapes

    def flipped(model, x):  # one parameter's sign slipped
        return jax.tree_util.tree_map_with_path(
            lambda p, g: -g if jax.tree_util.keystr(p).startswith("['out']['bias']") else g,
            nnx.grad(loss)(model, x))

    wrong = mcjax.check(loss, flipped, net, X)
    assert not wrong.ok and wrong.worst[0].label == "model.out.bias.value[0]", wrong
    with pytest.raises(mcjax.TraceError, match=r"holds integer state \(nnx.RngCount: an "
                       r"nnx.Rngs' count\): differentiate its nnx.Param with nnx.grad$"):
        mcjax.check(loss, jax.grad(loss), net, X)  # jax.grad cannot take the counts


def test_a_whole_state_gradient_is_compared_on_the_params_and_says_so(net):
    graph, state = nnx.split(net)

    def f(s, x):
        return loss(nnx.merge(graph, s), x)

    whole = jax.grad(f, allow_int=True)  # has (nonzero) entries at the running statistics
    assert float(jnp.max(jnp.abs(whole(state, X)["bn"]["mean"][...]))) > 0.0
    r = mcjax.check(f, whole, state, X)
    assert r.ok, r
    assert any("not compared" in n and "bn/mean/value" in n and "nnx.BatchStat" in n
               for n in r.notes), r.notes
    assert "not compared" in str(r)
    fast = mcjax.check(f, whole, state, X, mode="fast")
    assert fast.ok and any("not compared" in n for n in fast.notes), fast.notes
    params_only = lambda s, x: nnx.grad(loss)(nnx.merge(graph, s), x)  # noqa: E731
    assert not any("not compared" in n for n in mcjax.check(f, params_only, state, X).notes)
    # a slip at a parameter still fails, the state's entries notwithstanding
    off = lambda s, x: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda p, g: 1.5 * g if "kernel" in jax.tree_util.keystr(p) else g, whole(s, x))
    assert not mcjax.check(f, off, state, X).ok


def test_derive_leaves_the_state_out_and_matches_jacfwd_of_the_params(net):
    J = mcjax.derive(loss)(net, X)
    assert J.bn.mean.get_value() is None and J.bn.var.get_value() is None
    assert J.drop.rngs.count.get_value() is None
    graph, params, rest = nnx.split(net, nnx.Param, ...)
    want = jax.jacfwd(lambda p: loss(nnx.merge(graph, p, rest), X))(params)
    got = jax.tree.map(lambda j: j.dense(), J, is_leaf=lambda j: isinstance(j, mcjax.Jacobian))
    for path in (("lin", "kernel"), ("bn", "scale"), ("out", "bias")):
        close(getattr(getattr(got, path[0]), path[1])[...], want[path[0]][path[1]][...])


def test_hessian_acts_on_the_params_only(net):
    H = mcjax.hessian(loss)(net, X)
    assert H.shape == (n_params(net), n_params(net))
    graph, params, rest = nnx.split(net, nnx.Param, ...)
    flat, unravel = ravel_pytree(params)
    want = jax.hessian(lambda v: loss(nnx.merge(graph, unravel(v), rest), X))(flat)
    # the same order: ravel_pytree of the trained part, whose leaves are the Params' in order
    assert ravel_pytree(partition(net)[0])[0].shape == flat.shape
    close(H.dense(), want)

    def outputs(model, x):
        return model(x)[:, 0]

    G = mcjax.gauss_newton(outputs, lambda z: jnp.sum(z ** 2))(net, X)
    J = jax.jacfwd(lambda v: outputs(nnx.merge(graph, unravel(v), rest), X))(flat)
    close(G.dense(), 2 * J.T @ J)  # J^T H_L J on the Params alone


def test_check_hessian_of_a_model_is_with_respect_to_its_params(net):
    assert mcjax.check_hessian(loss, mcjax.hessian(loss)(net, X), net, X).ok
    doubled = lambda m, x: 2 * mcjax.hessian(loss)(m, x).dense()  # noqa: E731
    assert not mcjax.check_hessian(loss, doubled, net, X).ok

    def hvp(v, model, x):  # v: the Params (the trained part of the model)
        flat, unravel = ravel_pytree(v)
        return unravel(mcjax.hessian(loss)(model, x).hvp(flat))

    r = mcjax.check_hessian(loss, hvp, net, X, kind="hvp", points=1)
    assert r.ok and r.derivative.endswith(".hvp"), r
    with pytest.raises(TypeError, match=r"^mcjax.check_hessian: args\[0\] is a model with state "
                       r"\(nnx.BatchStat, nnx.RngCount\); expected for kind='kfac' its"):
        mcjax.check_hessian(loss, {}, net, X, kind="kfac")


def test_linen_batch_stats_are_state_in_check_derive_and_hessian():
    class Net(linen.Module):
        @linen.compact
        def __call__(self, x):
            h = linen.BatchNorm(use_running_average=True)(linen.Dense(4)(x))
            return linen.Dense(1)(jax.nn.relu(h))

    net = Net()
    v = net.init(jax.random.key(0), X)
    v = {"params": v["params"],
         "batch_stats": jax.tree.map(lambda a: a + jnp.asarray(0.3, F32), v["batch_stats"])}

    def f(v, x):
        return jnp.sum(jnp.tanh(net.apply(v, x)) ** 2)

    def of_params(p):
        return f({"params": p, "batch_stats": v["batch_stats"]}, X)

    r = mcjax.check(f, jax.grad(f), v, X)
    assert r.ok and any("linen collection 'batch_stats'" in n for n in r.notes), r
    assert mcjax.check(f, lambda v, x: {"params": jax.grad(of_params)(v["params"])}, v, X).ok
    flipped = lambda v, x: {"params": jax.tree.map(lambda g: -g, jax.grad(of_params)(v["params"]))}  # noqa: E731
    assert not mcjax.check(f, flipped, v, X).ok
    J = mcjax.derive(f)(v, X)
    assert jax.tree.leaves(J["batch_stats"]) == []
    close(J["params"]["Dense_0"]["kernel"].dense(),
          jax.grad(of_params)(v["params"])["Dense_0"]["kernel"])
    H = mcjax.hessian(f)(v, X)
    flat, unravel = ravel_pytree(v["params"])
    assert H.shape == (flat.size, flat.size)
    close(H.dense(), jax.hessian(lambda q: of_params(unravel(q)))(flat))
