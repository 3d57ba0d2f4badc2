"""Every bad input to ``mcjax.train`` is refused before anything is compiled, with a message that
names it, what was expected and what arrived; several bad settings are listed at once."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mcjax
from tests.compile_count import counting_compiles

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
    ("epochs negative", dict(epochs=-1), ValueError, r"epochs=-1; expected an integer >= 1"),
    ("epochs 0", dict(epochs=0), ValueError, r"epochs=0; expected an integer >= 1"),
    ("epochs float", dict(epochs=1.5), ValueError, r"epochs=1.5; expected an integer >= 1"),
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
     r"optimizer=<function adam.*; expected a name such as 'adam' or an optax transformation "
     r"\(an object with init and update, such as optax.adam\(1e-3\) or optax.MultiSteps\(...\)\) "
     r"\(did you mean to call it\?\)"),
    ("optimizer number", dict(optimizer=42), ValueError, r"optimizer=42; expected a name"),
    ("rate with a transformation", dict(optimizer=optax.adam(1e-3), learning_rate=0.1),
     ValueError, r"learning_rate=0.1 with an optax transformation as optimizer; expected them "
                 r"inside the transformation"),
    ("options with a transformation", dict(optimizer=optax.sgd(0.1),
                                           optimizer_options={"momentum": 0.9}),
     ValueError, r"optimizer_options=\{'momentum': 0.9\} with an optax transformation"),
    ("unknown hyper-parameter", dict(optimizer_options={"beta1": 0.9}), ValueError,
     r"optax.adam takes no hyper-parameter beta1; it takes b1"),
    ("kfac option out of range", dict(optimizer="kfac", optimizer_options={"damping": -1}),
     ValueError, r"damping=-1; expected a number > 0"),
    ("options not a mapping", dict(optimizer_options=[("b1", 0.9)]), ValueError,
     r"optimizer_options=\[\('b1', 0.9\)\]; expected a mapping"),
    ("hyper-parameter of a wrong kind", dict(optimizer="sgd", optimizer_options={
        "momentum": "fast"}), ValueError, r"momentum='fast'; expected a number in \[0, 1\) or None"),
    ("learning rate among the options", dict(optimizer_options={"learning_rate": 5}), ValueError,
     r"optimizer_options holds learning_rate=5; expected it as the learning_rate keyword"),
    ("b1 out of range", dict(optimizer_options={"b1": 2.0}), ValueError,
     r"b1=2.0; expected a number in \[0, 1\)"),
    ("two hyper-parameters out of range", dict(optimizer_options={"b2": 1.0, "eps": 0.0}),
     ValueError, r"b2=1.0; expected a number in \[0, 1\); and eps=0.0; expected a number > 0"),
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
    ("hyper-parameter not a number", dict(optimizer_options={"b1": "notanumber"}), ValueError,
     r"b1='notanumber'; expected a number in \[0, 1\)"),
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
     r"the loss of model 'model' returns float64\(8,\); expected a floating scalar"),
    ("backprop of the wrong shape", dict(model=OWN._replace(
        backprop=lambda p, b: {"w": jnp.zeros(4, F64)}), grad="analytic"), mcjax.ShapeError,
     r"the backprop of model .model. returns gradients that do not match the parameters "
     r"\(w: float64\(4,\)\)"),
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
    with counting_compiles() as compiled, pytest.raises(error, match=message) as caught:
        mcjax.train(model, data, epochs=kwargs.pop("epochs", 2),
                    batch_size=kwargs.pop("batch_size", 8), **kwargs)
    assert str(caught.value).startswith("mcjax.")
    assert not compiled.count, f"compiled {compiled.count} programs before refusing"


def test_the_list_of_bad_inputs_covers_every_kind():
    assert len(BAD) >= 50


# mcjax.optimizer's own checks: (name, keywords, the sentence's words); a ValueError each
BAD_HYPER_PARAMETERS = [
    ("adam", dict(learning_rate=-1), "learning_rate=-1; expected a finite number > 0 or an optax "
                                     "schedule"),
    ("adam", dict(learning_rate=float("inf")), "learning_rate=inf; expected a finite number > 0"),
    ("adam", dict(learning_rate=True), "learning_rate=True; expected a finite number > 0"),
    ("adam", dict(b1=2.0), "b1=2.0; expected a number in [0, 1)"),
    ("adam", dict(b1=-0.1), "b1=-0.1; expected a number in [0, 1)"),
    ("adam", dict(b2=1), "b2=1; expected a number in [0, 1)"),
    ("adam", dict(eps=0.0), "eps=0.0; expected a number > 0"),
    ("adam", dict(eps=float("nan")), "eps=nan; expected a number > 0"),
    ("adam", dict(eps_root=-1e-8), "eps_root=-1e-08; expected a number >= 0"),
    ("adam", dict(nesterov="yes"), "nesterov='yes'; expected true or false"),
    ("adamw", dict(weight_decay=-1e-4), "weight_decay=-0.0001; expected a number >= 0"),
    ("momentum", dict(momentum=1.0), "momentum=1.0; expected a number in [0, 1)"),
    ("sgd", dict(momentum=-0.5), "momentum=-0.5; expected a number in [0, 1) or None"),
    ("rmsprop", dict(decay=1.5), "decay=1.5; expected a number in [0, 1)"),
    ("adagrad", dict(initial_accumulator_value=-1.0), "initial_accumulator_value=-1.0; "
                                                      "expected a number >= 0"),
    ("lars", dict(trust_coefficient=0.0), "trust_coefficient=0.0; expected a number > 0"),
    ("rprop", dict(eta_plus=0.5), "eta_plus=0.5; expected a number > 1"),
    ("adam", dict(learning_rate=0, b1=1.0), "learning_rate=0; expected a finite number > 0 or an "
                                            "optax schedule; and b1=1.0; expected"),
    # mcjax's own K-FAC: every hyper-parameter
    ("kfac", dict(damping=-1.0), "damping=-1.0; expected a number > 0"),
    ("kfac", dict(refresh_every=0), "refresh_every=0; expected an integer >= 1"),
    ("kfac", dict(inverse="svd"), "inverse='svd'; expected one of 'eigh', 'cholesky'"),
    ("kfac", dict(estimator="natural"),
     "estimator='natural'; expected one of 'ggn', 'empirical', 'fisher'"),
    ("kfac", dict(factor_decay=1.5), "factor_decay=1.5; expected a number in [0, 1)"),
    ("kfac", dict(momentum=1.0), "momentum=1.0; expected a number in [0, 1)"),
    ("kfac", dict(kl_clip=0.0), "kl_clip=0.0; expected a number > 0 or None"),
    ("kfac", dict(adaptive="yes"), "adaptive='yes'; expected true or false"),
]


@pytest.mark.parametrize(("name", "kwargs", "words"), BAD_HYPER_PARAMETERS,
                         ids=[f"{n} {k}" for n, k, _ in BAD_HYPER_PARAMETERS])
def test_optimizer_refuses_a_hyper_parameter_out_of_range_naming_it(name, kwargs, words):
    with pytest.raises(ValueError) as refused:
        mcjax.optimizer(name, **kwargs)
    assert str(refused.value).startswith("mcjax.optimizer: ") and words in str(refused.value)


def test_optimizer_accepts_every_default_and_names_the_known_hyper_parameters():
    import inspect

    from mcjax._train._optim import known_optimizers

    for name, make in known_optimizers().items():  # optax's (and kfac's) defaults are in range
        defaults = {k: p.default for k, p in list(inspect.signature(make).parameters.items())[1:]
                    if p.default is not p.empty and p.default is not None}
        with warnings.catch_warnings():  # optax's deprecated names (optimistic_adam) and
            warnings.simplefilter("ignore")  # noisy_sgd without a key say so; no matter here
            mcjax.optimizer(name, learning_rate=0.1, **defaults)
    mcjax.optimizer("sgd", learning_rate=optax.constant_schedule(0.1), momentum=None)
    with pytest.raises(TypeError, match=r"optax.adam takes no hyper-parameter beta1; it takes b1, "
                                        r"b2, eps, eps_root, mu_dtype, nesterov"):
        mcjax.optimizer("adam", beta1=0.9)


# the other public functions a training run is built from: (call, the sentence's words)
BAD_BUILDING_BLOCKS = [
    (lambda: mcjax.neuron_model(0), "mcjax.neuron_model: n_features=0; expected an integer >= 1"),
    (lambda: mcjax.neuron_model(2.5), "mcjax.neuron_model: n_features=2.5; expected an integer"),
    (lambda: mcjax.mlp_model((64, 0, 10)), "mcjax.mlp_model: sizes=(64, 0, 10); expected (n_in, "
                                           "hidden..., n_out): two or more integers >= 1"),
    (lambda: mcjax.mlp_model((64,)), "mcjax.mlp_model: sizes=(64,); expected (n_in, hidden"),
    (lambda: mcjax.mlp_model("64,10"), "mcjax.mlp_model: sizes='64,10'; expected (n_in"),
    (lambda: mcjax.mlp_model(64), "mcjax.mlp_model: sizes=64; expected (n_in"),
    (lambda: mcjax.datasets.neuron_data(jax.random.key(0), n_samples=0, n_features=3),
     "mcjax.datasets.neuron_data: n_samples=0; expected an integer >= 1"),
    (lambda: mcjax.datasets.neuron_data(jax.random.key(0), n_samples=8, n_features=-1,
                                        noise=-0.1),
     "n_features=-1; expected an integer >= 1; and noise=-0.1; expected a finite number >= 0"),
    (lambda: mcjax.datasets.digits_data(seed=-1),
     "mcjax.datasets.digits_data: seed=-1; expected an integer >= 0"),
    (lambda: mcjax.datasets.digits_data(test_fraction=1.0),
     "mcjax.datasets.digits_data: test_fraction=1.0; expected a number in (0, 1)"),
    (lambda: mcjax.schedule("cosine_decay", init_value=0.1, decay_steps=0),
     "mcjax.schedule: The cosine_decay_schedule requires positive decay_steps"),
    (lambda: mcjax.schedule("cosine_decay", init_value=0.1, steps=10),
     "mcjax.schedule: cosine_decay_schedule() got an unexpected keyword argument 'steps'"),
]


@pytest.mark.parametrize(("call", "words"), BAD_BUILDING_BLOCKS,
                         ids=[w[:60] for _, w in BAD_BUILDING_BLOCKS])
def test_a_building_block_refuses_a_value_out_of_range_naming_it(call, words):
    with pytest.raises((ValueError, TypeError)) as refused:
        call()
    assert words in str(refused.value)
