"""Every mistake a user makes gets a sentence: in Python an mcjax error naming what was due and
what arrived, on the command line one line on stderr and exit status 2, never a traceback."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax

X = jnp.array([0.3, -1.2, 2.0])


def branchy(x):
    if x[0] > 0:  # Python control flow on a traced value
        return jnp.sin(x)
    return jnp.cos(x)


def test_a_function_jit_cannot_trace_is_named_with_the_users_line():
    with pytest.raises(mcjax.TraceError, match=r"f cannot be traced at test_check_errors.py:\d+ "
                                               r"\(`if x\[0\] > 0:"):
        mcjax.check(branchy, lambda x: mcjax.Diagonal(jnp.cos(x)), X)

    def numpy_derivative(x):
        return np.diag(np.cos(x))  # NumPy on a traced value

    with pytest.raises(mcjax.TraceError, match="the derivative cannot be traced.*np.diag"):
        mcjax.check(jnp.sin, numpy_derivative, X)

    def typo(x):
        return jnp.sinn(x)

    with pytest.raises(mcjax.TraceError, match="calling f raised AttributeError.*sinn"):
        mcjax.check(typo, lambda x: mcjax.Diagonal(jnp.cos(x)), X)


def test_the_error_carries_no_jax_traceback_into_mcjax():
    try:
        mcjax.check(branchy, lambda x: mcjax.Diagonal(jnp.cos(x)), X)
    except mcjax.TraceError as e:
        assert e.__cause__ is None and e.__suppress_context__
        assert "\n" not in str(e)


def test_an_array_where_a_function_was_due():
    with pytest.raises(TypeError, match=r"derivative is a jax.Array of shape \(3,\), not a "
                                        r"function; expected a function of the same arguments"):
        mcjax.check(jnp.sin, jnp.cos(X), X)
    with pytest.raises(TypeError, match="f is a NumPy array of shape"):
        mcjax.check(np.sin(np.ones(3)), jnp.cos, X)


def test_python_lists_are_arrays_and_integer_arguments_are_not_differentiated():
    r = mcjax.check(jnp.sin, lambda x: mcjax.Diagonal(jnp.cos(x)), [0.3, -1.2, 2.0])
    assert r.ok and "shape (3,)" in r.shapes

    def nll(logits, labels):
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), labels])

    def d_nll(logits, labels):
        return (jax.nn.softmax(logits) - jax.nn.one_hot(labels, 4, dtype=logits.dtype)) / 3

    logits = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4)))
    assert mcjax.check(nll, d_nll, logits, [0, 3, 1]).ok
    assert mcjax.check(nll, d_nll, logits, jnp.array([0, 3, 1])).ok
    assert not mcjax.check(nll, lambda *a: 2 * d_nll(*a), logits, [0, 3, 1]).ok
    with pytest.raises(mcjax.DtypeError, match=r"args\[1\], which has dtype int"):
        mcjax.check(nll, d_nll, logits, jnp.array([0, 3, 1]), argnums=1)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_arguments_are_judged_against_float32_references(dtype):
    x = jnp.asarray([0.3, -1.2, 2.0, 0.05], dtype)
    right = lambda x: mcjax.Diagonal(1 - jnp.tanh(x) ** 2)  # noqa: E731
    r = mcjax.check(jnp.tanh, right, x)
    assert r.ok and r.dtype == dtype and "in float32" in r.threshold.reference, r
    assert not mcjax.check(jnp.tanh, lambda x: mcjax.Diagonal(1.1 * (1 - jnp.tanh(x) ** 2)), x).ok


USER_FILES = {
    "user_helpers.py": """
        import jax.numpy as jnp

        def softmax(z):
            e = jnp.exp(z - jnp.max(z, axis=-1, keepdims=True))
            return e / jnp.sum(e, axis=-1, keepdims=True)
        """,
    "user_model.py": """
        import jax
        import jax.numpy as jnp
        from user_helpers import softmax  # a sibling file

        def loss(W, X, labels):
            p = softmax(X @ W.T)
            return -jnp.mean(jnp.log(p[jnp.arange(X.shape[0]), labels]))

        def grad(W, X, labels):
            y = jax.nn.one_hot(labels, W.shape[0], dtype=W.dtype)
            return (softmax(X @ W.T) - y).T @ X / X.shape[0]

        def grad_summed(W, X, labels):
            y = jax.nn.one_hot(labels, W.shape[0], dtype=W.dtype)
            return (softmax(X @ W.T) - y).T @ X

        def log(x):
            return jnp.log(x)

        def dlog(x):
            return jnp.diag(1 / x)

        def branchy(x):
            if x.sum() > 0:
                return x
            return -x

        def dbranchy(x):
            return jnp.eye(x.shape[0])

        def one_to_two(rng, shape, dtype):
            return rng.uniform(1, 2, shape).astype(dtype)
        """,
    "user_broken.py": "x = undefined_name\n",
}


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    for name, text in USER_FILES.items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


CASES = [  # (arguments, exit status, words on stdout or stderr)
    (["user_model.py:loss", "user_model.py:grad", "--shapes", "3,4", "5,4", "5",
      "--dist", "normal", "normal", "int:0:3"], 0, "mcjax.check: ok"),
    (["user_model.py:loss", "user_model.py:grad_summed", "--shapes", "3,4", "5,4", "5",
      "--dist", "normal", "normal", "int:0:3"], 1, "N = 5"),
    (["user_model.py:log", "user_model.py:dlog", "--shapes", "4", "--dist", "positive"], 0, "ok"),
    (["user_model.py:log", "user_model.py:dlog", "--shapes", "4", "--dist", "uniform:0.5:3"], 0, "ok"),
    (["user_model.py:log", "user_model.py:dlog", "--shapes", "4", "--dist", "user_model.py:one_to_two"], 0, "ok"),
    (["user_model.py:branchy", "user_model.py:dbranchy", "--shapes", "4"], 2, "f cannot be traced at user_model.py"),
    (["user_model.py:nope", "user_model.py:dlog", "--shapes", "4"], 2, "has no 'nope'"),
    (["user_model.py:log", "user_model.py:dlog", "--shapes", "4", "--dist", "gamma"], 2, "not a distribution"),
    (["user_model.py:log", "user_model.py:dlog", "--shapes", "4", "5"], 2, "calling f raised TypeError"),
    (["user_model.py:log", "user_model.py:dlog", "--shapes", "4", "--dist", "normal", "normal"], 2,
     "2 --dist entries for 1 --shapes"),
    (["user_broken.py:f", "user_broken.py:g", "--shapes", "4"], 2,
     "cannot import user_broken.py: NameError: name 'undefined_name' is not defined (user_broken.py:1)"),
    (["user_model.py:log", "user_model.py:dlog"], 2, "required: --shapes"),
]


@pytest.mark.parametrize(("argv", "status", "words"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_the_command_line_exit_statuses_and_sentences(user_dir, argv, status, words, capsys,
                                                      monkeypatch):
    from mcjax.__main__ import main

    monkeypatch.chdir(user_dir)
    try:
        got = main(["check", *argv])
    except SystemExit as e:  # argparse's own usage errors
        got = e.code
    out, err = capsys.readouterr()
    assert got == status, out + err
    assert words in out + err, out + err
    if status == 2:  # one line (argparse's own errors come after its usage text)
        assert err.strip().splitlines()[-1].startswith("mcjax check:"), err
        assert len(err.strip().splitlines()) == 1 or err.startswith("usage:"), err


def test_a_real_process_exits_1_on_a_wrong_derivative_and_2_on_a_trace_error(user_dir):
    """The statuses of a real ``mcjax check`` process, and no traceback on stderr."""
    for argv, status in ((CASES[1][0], 1), (CASES[5][0], 2)):
        run = subprocess.run([sys.executable, "-m", "mcjax", "check", *argv], cwd=user_dir,
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "JAX_PLATFORMS": "cpu"})
        assert run.returncode == status, run.stdout + run.stderr
        assert "Traceback" not in run.stderr, run.stderr
