"""``mcjax train MODULE:NAME``: a user's own model from the command line, in real processes: it
trains, a second process resumes it to the end an uninterrupted run reaches, bit for bit, an
edit of the model's code is refused on resume, and every usage error is one line, status 2."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import optax

import mcjax
from mcjax._core._compat import enable_x64  # jax.enable_x64 from JAX 0.8

ROOT = Path(__file__).resolve().parents[1]

OWN_MODEL = '''
import jax
import jax.numpy as jnp
import numpy as np

import mcjax


def init(key):
    return {"w": 0.1 * jax.random.normal(key, (3,), jnp.float32), "b": jnp.zeros((), jnp.float32)}


def loss(params, batch):
    X, y = batch
    return jnp.mean((jnp.tanh(X @ params["w"] + params["b"]) - y) ** 2)


model = mcjax.Model(init, loss, name="tanh_fit")
SCALE = 0.5


def make():
    return init, loss


def broken():
    raise ValueError("no model today")


def ragged():
    return np.zeros((64, 3), np.float32), np.zeros(60, np.float32)


def data(seed=0):
    X = np.random.default_rng(seed).standard_normal((64, 3)).astype(np.float32)
    return X, np.tanh(X @ np.array([0.5, -1.0, 0.3], np.float32))
'''
FLAGS = ["--batch-size", "16", "--no-progress", "--no-cache", "--json"]


def _start(folder: Path, *args) -> subprocess.Popen:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "mcjax", "train", *args], cwd=folder,
                            env={**os.environ, "PYTHONPATH": path}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _done(process: subprocess.Popen, returncode: int = 0) -> tuple[str, str]:
    out, err = process.communicate(timeout=300)
    assert process.returncode == returncode, err
    return out, err


def _state(folder: Path):
    params = {"b": np.zeros((), np.float32), "w": np.zeros(3, np.float32)}
    like = (params, optax.adam(1e-3).init(params))
    return mcjax.checkpoints.restore_checkpoint(mcjax.checkpoints.latest_checkpoint(folder),
                                                like=like)[0]


def _module(path: Path):
    spec = importlib.util.spec_from_file_location("own_model_here", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_users_model_trains_resumes_in_another_process_and_refuses_an_edit(tmp_path):
    (tmp_path / "own_model.py").write_text(OWN_MODEL)
    part = _start(tmp_path, "own_model.py:make", "--epochs", "2", "--checkpoint-dir", "a",
                  *FLAGS)
    assert json.loads(_done(part)[0])["task"] == "own_model.py:make"
    resumed = json.loads(_done(_start(tmp_path, "own_model.py:make", "--epochs", "4",
                                      "--checkpoint-dir", "a", "--resume", *FLAGS))[0])
    assert resumed["resumed_from"] == "a/epoch_00000002" and resumed["epochs"] == 4
    # the uninterrupted run, here, as the command runs it (float32, its defaults)
    own = _module(tmp_path / "own_model.py")
    with enable_x64(False):
        straight = mcjax.train(own.model, own.data(), epochs=4, batch_size=16)
    assert resumed["final_loss"] == straight.history["loss"][-1]
    chex.assert_trees_all_equal(_state(tmp_path / "a"),
                                jax.device_get((straight.params, straight.opt_state)))

    edited = OWN_MODEL.replace("jnp.tanh(X @", "jnp.sin(X @")
    (tmp_path / "own_model.py").write_text(edited)
    _, err = _done(_start(tmp_path, "own_model.py:make", "--epochs", "6", "--checkpoint-dir",
                          "a", "--resume", *FLAGS), returncode=2)
    line = edited.splitlines().index(
        '    return jnp.mean((jnp.sin(X @ params["w"] + params["b"]) - y) ** 2)') + 1
    assert err.count("\n") == 1 and err.startswith("mcjax train: cannot resume "
                                                   "the run in a (run "), err
    assert f"the traced loss (and its gradient) differs: sin where tanh was (`jnp.sin(X @ " \
           f"params[\"w\"] + params[\"b\"])` (own_model.py:{line}))" in err


USAGE_ERRORS = [
    (["nowhere.py:model"], "mcjax train: TASK 'nowhere.py:model': nowhere.py: no such file"),
    (["own_model.py:modle"], "mcjax train: TASK 'own_model.py:modle': module own_model.py has "
                             "no 'modle'"),
    (["own_model.py:SCALE"], "mcjax train: TASK 'own_model.py:SCALE' is a float; expected a "
                             "mcjax.Model, an (init, loss) pair, or a function of no arguments "
                             "that returns one"),
    (["own_model.py:broken"], "mcjax train: TASK 'own_model.py:broken' raised ValueError: no "
                              "model today (own_model.py:27)"),
    (["own_model.py:model", "--data", "dataset"],
     "mcjax train: own_model.py has no 'dataset'; expected the training data there: a pytree "
     "of arrays with one example per row, or a function that returns one"),
    (["own_model.py:model", "--grad", "analytic"],
     "model 'tanh_fit' has no callable backprop (--grad analytic trains with it)"),
    (["own_model.py:model", "--data", "ragged"],
     "mcjax train: X has shape (64, 3) but Y has shape (60,); expected one row of "
     "each per example"),
    (["neuron", "--data", "dataset"], "--data names a module's data; expected it with TASK "
                                      "MODULE:NAME, not neuron"),
    (["own_model"], "argument TASK: 'own_model' is neither neuron nor digits nor MODULE:NAME "
                    "(e.g. my_model.py:model)"),
]


# mcjax train's main() for each argument list, in one fresh process (one start of Python and
# JAX for all): its status and what it wrote on stderr
EACH_IN_TURN = """
import contextlib, io, json, sys
from mcjax.__main__ import main
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(["train", *args, "--no-cache"])
        except SystemExit as exit_:
            code = exit_.code
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def test_every_usage_error_of_a_users_model_is_one_line_with_status_2(tmp_path):
    (tmp_path / "own_model.py").write_text(OWN_MODEL)
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", EACH_IN_TURN,
                           json.dumps([args for args, _ in USAGE_ERRORS])], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": path}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for (code, err), (args, message) in zip(json.loads(done.stdout), USAGE_ERRORS):
        assert code == 2 and err.count("\n") == 1 and message in err, (args, err)
    assert OWN_MODEL.splitlines()[26].strip() == 'raise ValueError("no model today")'
