"""Fast mode names the slip: a slip corpus on a 205,642-parameter MLP, float32 and float64.

Each case is a backprop slip a person makes, tagged with the kind fast mode must name and the
leaf it must name (None: the whole argument).  The loss is :func:`mcjax.mlp_loss` (one ReLU
hidden layer, softmax cross-entropy) plus weight decay ``lam/2 sum ||W||^2``, and its gradient
is written out as a first project writes it, with switches for the slips (per-leaf factors, a
transposition, a dropped weight-decay term, a bias left out of the backward pass, a forgotten
ReLU gate).  Each wrong gradient closes over its switches, arrays that mcjax lifts out of the
traced program, so one compiled check per dtype serves every case.  ``corpus()`` gives the
cases in the shape of a slip corpus entry.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mcjax
from mcjax._check import _fast_diagnose
from mcjax._check._flat import FlatSpec

SIZES = (448, 448, 10)  # 205,642 parameters; W1 is square, so it can be transposed
BATCH = 32
DECAY = 0.01
LEAVES = ("[0]['W']", "[0]['b']", "[1]['W']", "[1]['b']")


@functools.cache
def problem(dtype, zero_biases=False):
    rng = np.random.default_rng(0)
    params = [{"W": jnp.asarray(rng.standard_normal((m, n)) * np.sqrt(2 / n), dtype),
               "b": jnp.asarray(np.zeros(m) if zero_biases else 0.1 * rng.standard_normal(m), dtype)}
              for n, m in zip(SIZES[:-1], SIZES[1:])]
    X = jnp.asarray(rng.standard_normal((BATCH, SIZES[0])), dtype)
    return params, X, jnp.arange(BATCH) % SIZES[-1]


def loss(params, X, Y):
    """:func:`mcjax.mlp_loss` plus weight decay."""
    decay = sum(jnp.sum(layer["W"] ** 2) for layer in params)
    return mcjax.mlp_loss(params, X, Y) + jnp.asarray(DECAY / 2, X.dtype) * decay


def backprop(params, X, Y, slip):
    """The hand gradient of :func:`loss`, as a first project writes it, with the slips that
    ``slip`` switches on: ``scale`` multiplies each leaf, ``transpose`` transposes ``dW1``,
    ``decay`` weighs ``W2``'s weight-decay term (0: dropped), ``bias`` the biases in the
    recomputed forward pass (0: left out), ``gate`` the ReLU's mask (0: forgotten)."""
    (W1, b1), (W2, b2) = ((layer["W"], layer["b"]) for layer in params)
    lam = jnp.asarray(DECAY, X.dtype)
    z1 = X @ W1.T + slip["bias"] * b1[None, :]
    a1 = jnp.maximum(z1, 0)
    logits = a1 @ W2.T + slip["bias"] * b2[None, :]
    dlogits = (jax.nn.softmax(logits) - jax.nn.one_hot(Y, SIZES[-1], dtype=X.dtype)) / len(Y)
    dW2 = dlogits.T @ a1 + slip["decay"] * lam * W2
    dz1 = dlogits @ W2 * jnp.where(z1 > 0, 1.0, 1 - slip["gate"]).astype(X.dtype)
    dW1 = dz1.T @ X + lam * W1
    dW1 = jnp.where(slip["transpose"], dW1.T, dW1)
    grads = (dW1, dz1.sum(0), dW2, dlogits.sum(0))
    return [{"W": grads[2 * k] * slip["scale"][2 * k],
             "b": grads[2 * k + 1] * slip["scale"][2 * k + 1]} for k in range(2)]


def slip_of(dtype, scale=None, transpose=False, decay=1.0, bias=1.0, gate=1.0):
    ones = np.ones(len(LEAVES))
    for leaf, c in (scale or {}).items():
        ones[LEAVES.index(leaf)] = c
    return {"scale": jnp.asarray(ones, dtype), "transpose": jnp.asarray(transpose),
            "decay": jnp.asarray(decay, dtype), "bias": jnp.asarray(bias, dtype),
            "gate": jnp.asarray(gate, dtype)}


def gradient(**slip):
    """The hand gradient with the slips ``slip`` (none: the right one), as ``(params, X, Y)
    -> grads``; it closes over its switches, one set per dtype."""
    switches = {dtype: slip_of(dtype, **slip) for dtype in ("float32", "float64")}

    def hand_gradient(params, X, Y):
        return backprop(params, X, Y, switches[X.dtype.name])

    return hand_gradient


def check(dtype, zero_biases=False, **slip):
    params, X, Y = problem(dtype, zero_biases)
    return mcjax.check(loss, gradient(**slip), params, X, Y, mode="fast")


# (name, the slip, the kind it must get, the leaf it must name: None for the whole argument)
SLIPS = [
    ("missing 1/B everywhere", dict(scale={leaf: BATCH for leaf in LEAVES}), "factor", None),
    ("sign flipped on every leaf", dict(scale={leaf: -1.0 for leaf in LEAVES}), "sign", None),
    ("1/B twice everywhere", dict(scale={leaf: 1 / BATCH for leaf in LEAVES}), "factor", None),
    ("sign flipped on b1", dict(scale={"[0]['b']": -1.0}), "sign", "params[0]['b']"),
    ("sign flipped on both W", dict(scale={"[0]['W']": -1.0, "[1]['W']": -1.0}), "sign",
     "params[0]['W'] and params[1]['W']"),
    ("sum for mean on b2 (x B)", dict(scale={"[1]['b']": BATCH}), "factor", "params[1]['b']"),
    ("W1's gradient transposed", dict(transpose=True), "transposed", "params[0]['W']"),
    ("weight decay dropped on W2", dict(decay=0.0), "missing-term", "params[1]['W']"),
    ("W2's gradient left out", dict(scale={"[1]['W']": 0.0}), "missing-term", "params[1]['W']"),
    ("ReLU gate forgotten", dict(gate=0.0), "missing-term", "params[0]['W'] and params[0]['b']"),
]


def corpus():
    """These cases as a slip corpus entry: ``(f, correct, args(dtype), argnums, slips)``,
    ``slips``: name -> ``(wrong gradient, kinds)``."""
    return (loss, gradient(), problem, 0,
            {name: (gradient(**slip), {kind}) for name, slip, kind, _ in SLIPS})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, slip, kind, leaf", SLIPS, ids=[s[0] for s in SLIPS])
def test_fast_mode_names_the_slip_and_the_leaf(dtype, name, slip, kind, leaf):
    r = check(dtype, **slip)
    assert not r.ok and r.mode == "fast", r
    assert [s.kind for s in r.slips] == [kind], r.slips
    sentence = r.slips[0].sentence
    if leaf is None:
        assert sentence.startswith("a constant factor: matches the reference times"), sentence
    else:
        assert leaf in sentence, sentence
        right = [line for line in r.where if line.startswith("right:")]
        wrong = leaf.split(" and ")
        assert right and right[0].count("params[") == len(LEAVES) - len(wrong), r.where
        assert not any(w in right[0] for w in wrong), r.where
    if "missing 1/B" in name or "x B" in name:
        assert f"N = {BATCH}" in sentence and "a sum where a mean was due" in sentence
    if "1/B twice" in name:
        assert f"1/N = 1/{BATCH}" in sentence and "1/N twice" in sentence
    assert r.diagnosis == (sentence,)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_right_gradient_passes_at_x_alone(dtype):
    """No false alarm, and a generic x (random biases) costs one point: every entry of the
    gradient is compared there.  (Through ``corpus()``, which holds every slip above.)"""
    f, correct, args, argnums, slips = corpus()
    params, X, Y = args(dtype)
    assert sum(a.size for a in jax.tree_util.tree_leaves(params)) > 200_000
    assert {name: kinds for name, (_, kinds) in slips.items()} == {s[0]: {s[2]} for s in SLIPS}
    r = mcjax.check(f, correct, params, X, Y, argnums=argnums, mode="fast")
    assert r.ok and r.points == 1 and not r.slips, r


def test_a_slip_that_x_hides_is_caught_at_the_point_near_it():
    """Biases left out of the backward pass are invisible at b = 0 (mcjax.mlp_init's biases):
    x is special (constant leaves), so the point near x is checked too, and fails; the right
    gradient there passes with a note that says why two points ran."""
    params, X, Y = problem("float32", True)
    assert mcjax.check(loss, gradient(bias=0.0), params, X, Y, mode="fast",
                       points=1).ok  # x alone cannot see it
    r = check("float32", zero_biases=True, bias=0.0)
    assert not r.ok and r.points == 2, r
    right = check("float32", zero_biases=True)
    assert right.ok and right.points == 2, right
    assert any("the point could hide a slip (params[0]['b'] is constant" in n for n in right.notes), right.notes


def tanh_layer(x, W, scale):
    return jnp.tanh(W @ x)


def tanh_layer_vjp(x, W, scale):
    """The VJP ``u -> u^T J`` of :func:`tanh_layer`, times ``scale``."""
    return lambda u: scale * ((u * (1 - tanh_layer(x, W, scale) ** 2)) @ W)


def test_a_vector_function_gets_the_factor_of_its_vjp_named():
    """For a vector f fast mode compares u^T J of one random u: a factor shows the same."""
    rng = np.random.default_rng(1)
    W = jnp.asarray(rng.standard_normal((300, 400)) / 20)
    x = jnp.asarray(rng.standard_normal(400))
    r = mcjax.check(tanh_layer, tanh_layer_vjp, x, W, jnp.asarray(0.5), mode="fast")
    assert not r.ok and [s.kind for s in r.slips] == ["factor"], r
    assert "times 1/2" in r.slips[0].sentence


def test_a_transposed_non_square_leaf_is_named_with_its_path():
    """W2 (10, 448) returned as (448, 10): no check can run, and the error says which leaf and
    asks whether its gradient is transposed."""
    params, X, Y = problem("float32")

    def transposed(params, X, Y):
        grads = gradient()(params, X, Y)
        grads[1]["W"] = grads[1]["W"].T
        return grads

    with pytest.raises(mcjax.ShapeError, match=r"\[1\]\['W'\] is \(448, 10\) where \(10, 448\) "
                       r"was due: its gradient transposed"):
        mcjax.check(loss, transposed, params, X, Y, mode="fast")


def _diagnosed(got, ref, rtol=1e-6):
    """The fast diagnosis of one failing point, from ``u^T J`` pytrees (no check program)."""
    spec = FlatSpec.of(ref)
    leaves = lambda t: [np.asarray(a, np.float64) for a in jax.tree_util.tree_leaves(t)]  # noqa: E731
    allowed = np.array([[rtol * np.max(np.abs(r)) for r in leaves(ref)]])
    return _fast_diagnose.diagnose([(leaves(got), leaves(ref))], allowed, spec, {"B": BATCH})


def test_one_entry_fits_any_factor_so_only_a_usual_one_is_named():
    """A scalar leaf off by 0.3 at one point is no evidence of a constant factor; off by -1 it
    is named (a usual slip)."""
    ref = {"t": np.array(0.7), "w": np.arange(1.0, 5.0)}
    slips, where = _diagnosed({"t": np.array(1.0), "w": ref["w"]}, ref)
    assert [s.kind for s in slips] == ["missing-term"] and "x['t']" in slips[0].sentence
    assert where[-1] == "right: x['w']"
    slips, _ = _diagnosed({"t": np.array(-0.7), "w": ref["w"]}, ref)
    assert [s.kind for s in slips] == ["sign"] and "x['t'] only" in slips[0].sentence


def test_two_leaves_of_one_shape_with_their_gradients_swapped():
    rng = np.random.default_rng(4)
    ref = {"a": rng.standard_normal(6), "b": rng.standard_normal(6), "c": rng.standard_normal(3)}
    slips, _ = _diagnosed({"a": ref["b"], "b": ref["a"], "c": ref["c"]}, ref)
    assert [s.kind for s in slips] == ["swapped", "swapped"], slips
    assert "x['a'] matches the reference's gradient of x['b']" in slips[0].sentence


SHAPES = [(3, 3), (4,), (2, 5), (5, 5), (6,), ()]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(SHAPES), min_size=2, max_size=5), st.data())
def test_a_slip_planted_on_any_leaf_is_named_on_that_leaf(shapes, data):
    """Random leaves, one slip on one of them (a usual factor, its transpose when square, its
    gradient left out, a term that is no multiple of it, a gate missing): the diagnosis names the kind
    and the leaf, and every other leaf right.  Round-off-sized noise on every leaf changes
    nothing."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    ref = {f"p{k}": rng.standard_normal(s) + 0.1 for k, s in enumerate(shapes)}
    names = list(ref)
    leaf = data.draw(st.sampled_from(names))
    square = ref[leaf].ndim == 2 and ref[leaf].shape[0] == ref[leaf].shape[1]
    how = data.draw(st.sampled_from(["sign", "factor", "zero"]
                                    + (["term", "gate"] if ref[leaf].size > 1 else [])  # 1: any c
                                    + (["transposed"] if square else [])))
    if how == "gate":  # a ReLU's mask: half the entries are 0, and the slip fills them
        ref[leaf] = np.where(np.arange(ref[leaf].size).reshape(ref[leaf].shape) % 2, ref[leaf], 0)
    got = {k: v * (1 + 1e-9 * rng.standard_normal(np.shape(v))) for k, v in ref.items()}
    r = ref[leaf]
    got[leaf] = {"sign": -r, "factor": BATCH * r, "zero": 0 * r, "transposed": r.T,
                 "term": r + np.cos(np.arange(r.size).reshape(r.shape)),
                 "gate": np.where(r == 0, 0.5, r)}[how]
    slips, where = _diagnosed(got, ref)
    kind = {"sign": "sign", "factor": "factor", "zero": "missing-term", "term": "missing-term",
            "transposed": "transposed", "gate": "missing-gate"}[how]
    assert [s.kind for s in slips] == [kind], (how, slips)
    assert f"x['{leaf}']" in slips[0].sentence, slips
    assert where[-1].startswith("right:") and where[-1].count("x[") == len(names) - 1, where


def two_layer(p, X, transposed):
    """``0.5 / B sum ||W2 tanh(W1 X^T)||^2`` with a square ``W2`` (hidden size = output size)."""
    Y = p["W2"] @ jnp.tanh(p["W1"] @ X.T)
    return 0.5 * jnp.sum(Y * Y) / X.shape[0]


def two_layer_backprop(p, X, transposed):
    """Its gradient; ``transposed`` 0 forgets the transpose in ``dh = W2^T dY`` (W2 dY)."""
    H = jnp.tanh(p["W1"] @ X.T)
    dY = p["W2"] @ H / X.shape[0]
    W2t = transposed * p["W2"].T + (1 - transposed) * p["W2"]
    dZ = (W2t @ dY) * (1 - H * H)
    return {"W1": dZ @ X, "W2": dY @ H.T}


def test_a_missing_transpose_that_a_symmetric_leaf_hides_is_caught_near_it():
    """dh = W2 dY where W2^T dY was due (the hidden size equals the output size) is invisible
    at a symmetric W2: x is special, the point near it runs and fails.  At a generic W2 one
    point catches it."""
    rng = np.random.default_rng(5)
    A = rng.standard_normal((16, 16)) / 4
    X = jnp.asarray(rng.standard_normal((8, 12)))
    W1 = jnp.asarray(rng.standard_normal((16, 12)) / 4)
    symmetric = {"W1": W1, "W2": jnp.asarray((A + A.T) / 2)}
    right = mcjax.check(two_layer, two_layer_backprop, symmetric, X, jnp.asarray(1.0), mode="fast")
    assert right.ok and right.points == 2, right
    assert any("p['W2'] is symmetric" in n for n in right.notes), right.notes
    assert mcjax.check(two_layer, two_layer_backprop, symmetric, X, jnp.asarray(0.0),
                       mode="fast", points=1).ok  # x alone cannot see it
    hidden = mcjax.check(two_layer, two_layer_backprop, symmetric, X, jnp.asarray(0.0), mode="fast")
    assert not hidden.ok and hidden.points == 2, hidden
    assert [s.kind for s in hidden.slips] == ["missing-term"], hidden.slips
    assert "p['W1']" in hidden.slips[0].sentence and hidden.where[-1] == "right: p['W2']"
    generic = {"W1": W1, "W2": jnp.asarray(A)}
    caught = mcjax.check(two_layer, two_layer_backprop, generic, X, jnp.asarray(0.0), mode="fast")
    assert not caught.ok, caught
