"""Every bad input to ``mcjax.train`` is refused before anything is compiled, with a message that
names it, what was expected and what arrived; several bad settings are listed at once."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mcjax

F64 = jnp.float64
X = np.random.default_rng(0).standard_normal((40, 3))
Y = np.abs(np.random.default_rng(1).standard_normal(40))
MLP = mcjax.mlp_model((3, 4, 10), dtype=F64)
LABELS = np.random.default_rng(2).integers(0, 10, 40).astype(np.int32)


def _init(key):
    return {"w": jnp.zeros(3, F64)}


def _mse(params, batch):
    X, y = batch
    return jnp.mean((X @ params["w"] - y) ** 2)


OWN = mcjax.Model(_init, _mse)

# (id, keyword arguments of mcjax.train besides the defaults below, error type, message regex)
BAD = [
    ("batch_size 0", dict(batch_size=0), ValueError, r"batch_size=0; expected an integer >= 1"),
    ("batch_size float", dict(batch_size=2.5), ValueError, r"batch_size=2.5; expected an integer"),
    ("batch_size bool", dict(batch_size=True), ValueError, r"batch_size=True; expected an integer"),
    ("epochs negative", dict(epochs=-1), ValueError, r"epochs=-1; expected an integer >= 0"),
    ("epochs float", dict(epochs=1.5), ValueError, r"epochs=1.5; expected an integer >= 0"),
    ("checkpoint_every 0", dict(checkpoint_every=0), ValueError,
     r"checkpoint_every=0; expected an integer >= 1"),
    ("keep 0", dict(keep_checkpoints=0), ValueError,
     r"keep_checkpoints=0; expected an integer >= 1 or None"),
    ("keep -1", dict(keep_checkpoints=-1), ValueError, r"keep_checkpoints=-1; expected"),
    ("learning_rate 0", dict(learning_rate=0), ValueError,
     r"learning_rate=0; expected a finite number > 0 or an optax schedule"),
    ("learning_rate negative", dict(learning_rate=-0.1), ValueError, r"learning_rate=-0.1;"),
    ("learning_rate nan", dict(learning_rate=float("nan")), ValueError, r"learning_rate=nan;"),
    ("learning_rate text", dict(learning_rate="fast"), ValueError, r"learning_rate='fast';"),
    ("optimizer misspelled", dict(optimizer="adm"), ValueError,
     r"'adm' is not an optimizer; .*did you mean adam"),
    ("optimizer uncalled", dict(optimizer=optax.adam), ValueError,
     r"optimizer=<function adam.*; expected a name such as 'adam' or an "
     r"optax.GradientTransformation \(did you mean to call it\?\)"),
    ("optimizer number", dict(optimizer=42), ValueError, r"optimizer=42; expected a name"),
    ("rate with a transformation", dict(optimizer=optax.adam(1e-3), learning_rate=0.1),
     ValueError, r"learning_rate=0.1 with an optax transformation as optimizer; expected them "
                 r"inside the transformation"),
    ("options with a transformation", dict(optimizer=optax.sgd(0.1),
                                           optimizer_options={"momentum": 0.9}),
     ValueError, r"optimizer_options=\{'momentum': 0.9\} with an optax transformation"),
    ("unknown hyper-parameter", dict(optimizer_options={"beta1": 0.9}), ValueError,
     r"optax.adam takes no hyper-parameter beta1; it takes b1"),
    ("options not a mapping", dict(optimizer_options=[("b1", 0.9)]), ValueError,
     r"optimizer_options=\[\('b1', 0.9\)\]; expected a mapping"),
    ("hyper-parameter of a wrong kind", dict(optimizer="sgd", optimizer_options={
        "momentum": "fast"}), ValueError, r"the optimizer cannot update this model's parameters"),
    ("grad unknown", dict(grad="numeric"), ValueError, r"grad='numeric'; expected one of "
                                                       r"'autodiff', 'analytic'"),
    ("seed float", dict(seed=1.5), ValueError, r"seed=1.5; expected an integer"),
    ("seed too large", dict(seed=2**70), ValueError, r"seed=1180591620717411303424; expected"),
    ("shuffle text", dict(shuffle="yes"), ValueError, r"shuffle='yes'; expected True or False"),
    ("resume number", dict(resume=1), ValueError, r"resume=1; expected True or False"),
    ("checkpoint_dir number", dict(checkpoint_dir=42), ValueError,
     r"checkpoint_dir=42; expected a path or None"),
    ("resume without a folder", dict(resume=True), mcjax.CheckpointError,
     r"resume=True needs a checkpoint_dir"),
    ("overwrite without a folder", dict(overwrite=True), mcjax.CheckpointError,
     r"overwrite=True needs a checkpoint_dir"),
    ("two at once", dict(batch_size=0, epochs=-1, learning_rate=0), ValueError,
     r"epochs=-1; .*; and batch_size=0; .*; and learning_rate=0;"),
    # the model
    ("model a function", dict(model=_mse), TypeError,
     r"model is a function; expected a mcjax.Model \(at least init and loss\)"),
    ("model without init", dict(model=mcjax.Model(None, _mse)), TypeError,
     r"model 'model' has no callable init; expected functions there"),
    ("analytic without backprop", dict(model=OWN, grad="analytic"), TypeError,
     r"has no callable backprop \(grad='analytic' trains with it\)"),
    ("loss not a scalar", dict(model=mcjax.Model(_init, lambda p, b: b[0] @ p["w"])), TypeError,
     r"model 'model''s loss returns float64\(8,\); expected a floating scalar"),
    ("backprop of the wrong shape", dict(model=OWN._replace(
        backprop=lambda p, b: {"w": jnp.zeros(4, F64)}), grad="analytic"), mcjax.ShapeError,
     r"backprop returns gradients that do not match the parameters \(w: float64\(4,\)\)"),
    ("backprop of a missing leaf", dict(model=OWN._replace(backprop=lambda p, b: {"v": p["w"]}),
                                        grad="analytic"),
     mcjax.ShapeError, r"\(v: extra; w: missing\)"),
    ("evaluate not callable", dict(evaluate="accuracy"), TypeError,
     r"evaluate='accuracy'; expected a function params -> \{name: number\} or None"),
    # the data
    ("data an array", dict(data=X), mcjax.ShapeError,
     r"the batch is a ndarray; expected \(X, y\)"),
    ("data empty", dict(data=()), mcjax.ShapeError, r"data is tuple \(\) with no arrays"),
    ("data rows differ", dict(data=(X, Y[:39])), mcjax.ShapeError,
     r"X has shape \(40, 3\) but Y has shape \(39,\); expected one row of each per example"),
    ("data a scalar", dict(data=(X, 1.0)), mcjax.ShapeError, r"Y has shape \(\)"),
    ("data text", dict(data=(X, np.array(["a"] * 40))), mcjax.ShapeError,
     r"Y has dtype <U1; expected arrays of numbers"),
    ("data NaN", dict(data=(X, np.where(np.arange(40) == 5, np.nan, Y))), ValueError,
     r"Y holds NaN or Inf in 1 of its 40 rows \(the first is row 5\); expected finite data"),
    ("data Inf", dict(data=(np.where(np.arange(120).reshape(40, 3) == 61, np.inf, X), Y)),
     ValueError, r"X holds NaN or Inf in 1 of its 40 rows \(the first is row 20\)"),
    ("batch larger than the data", dict(batch_size=41), mcjax.ShapeError,
     r"batch_size=41 but the data has only 40 examples"),
    ("features do not fit", dict(data=(X[:, :2], Y)), mcjax.ShapeError,
     r"X has shape \(40, 2\) but the neuron's w has shape \(3,\); expected X of shape \(N, 3\)"),
    ("labels outside the classes", dict(model=MLP, data=(X, np.where(LABELS == 3, 12, LABELS))),
     mcjax.ShapeError, r"Y holds labels from 0 to 12 \(\d+ outside the classes\) but the last "
                       r"layer has 10 outputs; expected labels 0 to 9"),
    ("negative labels", dict(model=MLP, data=(X, LABELS - 1)), mcjax.ShapeError,
     r"Y holds labels from -1 to 8"),
    ("labels of the wrong shape", dict(model=MLP, data=(X, LABELS[:, None])), mcjax.ShapeError,
     r"Y has shape \(40, 1\); expected Y of shape \(40,\)"),
    ("data of another dtype", dict(data=(X.astype(np.float32), Y.astype(np.float32))),
     mcjax.DtypeError, r"float32"),
    # initial parameters
    ("params of another shape", dict(params={"w": jnp.zeros(4, F64), "b": jnp.zeros((), F64)}),
     mcjax.ShapeError, r"params w is float64\(4,\) but model.init gives float64\(3,\)"),
    ("params missing a leaf", dict(params={"w": jnp.zeros(3, F64)}), mcjax.ShapeError,
     r"params has no array b"),
    ("params of another dtype", dict(params={"w": jnp.zeros(3, jnp.float32),
                                             "b": jnp.zeros((), F64)}),
     mcjax.ShapeError, r"params w is float32\(3,\) but model.init gives float64\(3,\)"),
    ("params NaN", dict(params={"w": jnp.full(3, jnp.nan, F64), "b": jnp.zeros((), F64)}),
     ValueError, r"params w hold NaN or Inf; expected finite initial parameters"),
    # devices
    ("devices 0", dict(devices=0), ValueError, r"devices=0; expected at least 1"),
    ("devices too many", dict(devices=99), ValueError, r"devices=99 but 1 cpu device is visible"),
    ("devices text", dict(devices="many"), TypeError, r"devices='many'; expected None, 'all'"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_a_bad_input_is_refused_before_anything_is_compiled(kwargs, error, message):
    kwargs = dict(kwargs)
    model = kwargs.pop("model", mcjax.neuron_model(3, dtype=F64))
    data = kwargs.pop("data", (X, Y))
    if kwargs.get("learning_rate", 0.1) is not None and isinstance(model, mcjax.Model) \
            and "optimizer" not in kwargs and "learning_rate" not in kwargs:
        kwargs["learning_rate"] = 0.01
    compiled = []

    def count(event, seconds, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(event)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        with pytest.raises(error, match=message) as caught:
            mcjax.train(model, data, epochs=kwargs.pop("epochs", 2),
                        batch_size=kwargs.pop("batch_size", 8), **kwargs)
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert str(caught.value).startswith("mcjax.")
    assert not compiled, f"compiled {len(compiled)} programs before refusing"


def test_the_list_of_bad_inputs_covers_every_kind():
    assert len(BAD) >= 50
