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

        def dlog_diagonal(x):  # the diagonal alone: no derivative of log has this shape
            return 1 / x

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
    (["user_model.py:log", "user_model.py:dlog_diagonal", "--shapes", "4", "--dist", "positive"], 1,
     "mcjax check: FAIL: derivative returned shape (4,)"),
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


# -- every keyword out of range: a sentence naming the function and the keyword ------------
def sin_d(x):
    return mcjax.Diagonal(jnp.cos(x))


CHECKS = {  # each public function with the keywords to sweep, called at a right derivative
    "check": lambda **kw: mcjax.check(jnp.sin, sin_d, X, **kw),
    "assert_derivative": lambda **kw: mcjax.assert_derivative(jnp.sin, sin_d, X, **kw),
    "check_points": lambda **kw: mcjax.check_points(jnp.sin, sin_d, **{"points": [(X,)], **kw}),
    "check_cases": lambda **kw: mcjax.check_cases(**{"cases": [(jnp.sin, sin_d, (X,), 0)], **kw}),
    "check_chain": lambda **kw: mcjax.check_chain(
        kw.pop("chain", mcjax.vector_chain_rule(mcjax.sin, mcjax.tanh)), X, **kw),
    "derive": lambda **kw: mcjax.derive(**{"f": jnp.sin, **kw})(X),
    "registry.verify": lambda **kw: mcjax.registry.verify(**{"pattern": "relu",
                                                            "dtypes": ("float32",), **kw}),
}

BAD = [  # (function, keyword, value, error)
    *[(fn, "argnums", value, error) for fn in ("check", "check_points", "derive")
      for value, error in ((3, ValueError), (-2, ValueError), ((0, 0), ValueError),
                           ((), TypeError), ("0", TypeError), (True, TypeError),
                           (1.0, TypeError))],
    *[(fn, "mode", "slow", ValueError) for fn in ("check", "assert_derivative", "check_chain")],
    *[(fn, "layout", "rows", ValueError) for fn in ("check", "check_points", "check_cases")],
    *[(fn, "points", value, error) for fn in ("check", "registry.verify")
      for value, error in ((0, ValueError), (-1, ValueError), (1.5, TypeError),
                           (True, TypeError))],
    ("check", "directions", 0, ValueError),
    ("check", "directions", -3, ValueError),
    ("check", "directions", None, TypeError),
    *[(fn, "kink_convention", "up", ValueError) for fn in ("check", "check_points",
                                                          "check_cases")],
    *[(fn, "seed", value, error) for fn in ("check", "check_points", "check_cases",
                                            "registry.verify")
      for value, error in ((-1, ValueError), (0.5, TypeError), ("0", TypeError))],
    *[(fn, tol, value, error) for fn in ("check", "check_points", "check_cases")
      for tol in ("rtol", "atol")
      for value, error in ((-1e-3, ValueError), (float("nan"), ValueError),
                           (float("inf"), ValueError), ("1e-3", TypeError),
                           (True, TypeError))],
    ("check_points", "points", [X], TypeError),
    ("check_cases", "cases", [(jnp.sin, sin_d)], TypeError),
    ("check_cases", "stencils", "no", TypeError),
    ("check_chain", "chain", jnp.sin, TypeError),
    ("derive", "f", "sin", TypeError),
    ("derive", "strict", "yes", TypeError),
    ("registry.verify", "registry", "mine", TypeError),
    ("registry.verify", "pattern", 3, TypeError),
    ("registry.verify", "dtypes", ("float16",), ValueError),
    ("registry.verify", "dtypes", "float32", ValueError),
    ("registry.verify", "cases", [], ValueError),
    ("registry.verify", "processes", 0, ValueError),
    ("registry.verify", "imports", "my_rules.py", TypeError),
]


def _stable(value) -> str:
    """A test id the same in every pytest-xdist worker: no object addresses."""
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    if hasattr(value, "shape"):
        return f"array{tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_stable(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    return repr(value)


@pytest.mark.parametrize(("function", "keyword", "value", "error"), BAD,
                         ids=[f"{fn}-{kw}={_stable(v)}" for fn, kw, v, _ in BAD])
def test_every_keyword_out_of_range_is_refused_with_a_sentence(function, keyword, value, error):
    with pytest.raises(error) as info:
        CHECKS[function](**{keyword: value})
    message = str(info.value)
    passed_on = function in ("assert_derivative", "check_chain") and keyword != "chain"
    assert message.startswith(f"mcjax.{'check' if passed_on else function}:"), message
    assert keyword in message and "expected" in message and "\n" not in message, message


def test_the_sweep_covers_every_keyword():
    """A keyword added to a public function without a case above fails here."""
    import inspect

    functions = {"check": mcjax.check, "check_points": mcjax.check_points,
                 "check_cases": mcjax.check_cases, "derive": mcjax.derive,
                 "registry.verify": mcjax.registry.verify}
    swept = {(fn, kw) for fn, kw, _, _ in BAD}
    missing = [(name, p.name) for name, fn in functions.items()
               for p in inspect.signature(fn).parameters.values()
               if p.kind is not p.VAR_POSITIONAL and (name, p.name) not in swept
               and not (name.startswith("check") and p.name in ("f", "derivative"))]  # above
    assert not missing, f"keywords with no out-of-range case: {missing}"


def test_the_sweep_passes_at_good_values():
    assert mcjax.check(jnp.sin, sin_d, X, argnums=-1, points=2, directions=1, seed=3,
                       rtol=1e-3, atol=0).ok
    assert mcjax.check(jnp.sin, sin_d, X, mode="fast", points=1, directions=1).ok
    assert all(r.ok for r in mcjax.check_points(jnp.sin, lambda x: (sin_d(x),), [[X], (2 * X,)],
                                                argnums=(0,)))  # a tuple: one per argument
    with pytest.raises(mcjax.ShapeError, match=r"f maps x \(3,\) to shape \(3,\); "
                                               "expected jax.jacfwd's structure for a tuple"):
        mcjax.check(jnp.sin, sin_d, X, argnums=(0,))
    assert mcjax.check_chain(mcjax.vector_chain_rule(mcjax.sin, mcjax.tanh), X, mode="full").ok
    with pytest.raises(TypeError, match=r"mcjax.check_cases: the args of cases\[0\] are a "
                                        r"jax.Array of shape \(3,\); expected a tuple"):
        mcjax.check_cases([(jnp.sin, sin_d, X, 0)])  # not its rows as three arguments


LOG = ["user_model.py:log", "user_model.py:dlog", "--shapes", "4", "--dist", "positive"]
BAD_FLAGS = [  # (command line, words of the one line on stderr); each exits 2
    (["verify", "-k", "nomatch"], "mcjax verify: -k 'nomatch': no rule matches"),
    (["verify", "--jobs", "0"], "argument --jobs: expected an int >= 1, got '0'"),
    (["verify", "--jobs", "two"], "argument --jobs: expected an int >= 1, got 'two'"),
    (["verify", "--points", "0"], "argument --points: expected an int >= 1"),
    (["verify", "--seed", "-1"], "argument --seed: expected an int >= 0"),
    (["verify", "--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
    (["verify", "--import", "no_such_rules.py"], "mcjax verify: --import"),
    (["check", *LOG, "--points", "0"], "argument --points: expected an int >= 1"),
    (["check", *LOG, "--points", "-1"], "argument --points: expected an int >= 1"),
    (["check", *LOG, "--directions", "0"], "argument --directions: expected an int >= 1"),
    (["check", *LOG, "--seed", "-1"], "argument --seed: expected an int >= 0"),
    (["check", *LOG, "--rtol", "-1"], "argument --rtol: expected a finite number >= 0"),
    (["check", *LOG, "--rtol", "nan"], "argument --rtol: expected a finite number >= 0"),
    (["check", *LOG, "--atol", "inf"], "argument --atol: expected a finite number >= 0"),
    (["check", *LOG, "--argnums", "x"], "argument --argnums: expected an argument number"),
    (["check", *LOG, "--argnums", "0,,1"], "argument --argnums: expected an argument number"),
    (["check", *LOG, "--argnums", "1"], "mcjax check: argnums=1 but f gets 1 argument(s)"),
    (["check", *LOG, "--argnums", "0,0"], "mcjax check: argnums=(0, 0) names an argument twice"),
    (["check", *LOG, "--mode", "slow"], "argument --mode: invalid choice: 'slow'"),
    (["check", *LOG, "--surrogate", "user_model.py:log"], "--surrogate goes with --rule"),
    (["check", "--rule", *LOG], "--rule checks the custom rules of user_model.py:log itself"),
    (["check", *LOG, "--layout", "rows"], "argument --layout: invalid choice: 'rows'"),
    (["check", *LOG, "--kink-convention", "up"], "argument --kink-convention: invalid choice"),
    (["check", *LOG, "--dtype", "int32"], "argument --dtype: invalid choice: 'int32'"),
    (["check", *LOG, "--second", "third"], "argument --second: invalid choice: 'third'"),
    (["check", *LOG, "--second", "hessian", "--layout", "denominator"],
     "mcjax check: --second takes no --layout"),
    (["check", *LOG, "--second", "hessian"], "mcjax check --second: f returns shape (4,); "
     "expected a scalar"),
    (["check", *LOG[:3], "3,x"], "mcjax check: --shapes '3,x' is not a shape"),
    (["check", *LOG[:3], "-2"], "mcjax check: --shapes '-2' is not a shape"),
    (["check", *LOG, "--dist", "gamma"], "mcjax check: --dist 'gamma' is not a distribution"),
    (["check", *LOG, "--heatmap", "user_model.py/j.png"],
     "user_model.py is a file; expected a path in a folder"),
    (["check", *LOG, "--heatmap", "."], "--heatmap . is a folder"),
    (["check", *LOG, "--heatmap", "j.png", "--mode", "fast"], "--mode fast never builds"),
    (["derive", "user_model.py:log", "--shapes", "3,x"], "mcjax derive: --shapes '3,x' is not"),
    (["derive", "user_model.py:log", "--shapes", "3", "--wrt", "x"],
     "argument --wrt: expected an argument number"),
    (["derive", "user_model.py:log", "--shapes", "3", "--wrt", "2"], "argnums=2 but f gets 1"),
    (["derive", "user_model.py:log", "--shapes", "3", "--seed", "-1"],
     "argument --seed: expected an int >= 0"),
    (["derive", "user_model.py:log", "--shapes", "3", "--probes", "0"],
     "argument --probes: expected an int >= 1"),
    (["derive", "user_model.py:log", "--shapes", "3", "--dtype", "float16"],
     "argument --dtype: invalid choice"),
]


@pytest.mark.parametrize(("argv", "words"), BAD_FLAGS, ids=[" ".join(a[3:] if a[0] != "verify"
                                                                     else a) for a, _ in BAD_FLAGS])
def test_every_flag_out_of_range_exits_2_with_one_line(user_dir, argv, words, capsys, monkeypatch):
    from mcjax.__main__ import main

    monkeypatch.chdir(user_dir)
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's own errors
        status = e.code
    out, err = capsys.readouterr()
    assert status == 2, out + err
    assert len(err.strip().splitlines()) == 1 and words in err, err
    assert err.startswith(f"mcjax {argv[0]}"), err


def test_the_flag_sweep_covers_every_flag_that_takes_a_value():
    """A flag added to verify, check or derive without a case above fails here."""
    from mcjax._cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    swept = {(argv[0], word) for argv, _ in BAD_FLAGS for word in argv if word.startswith("-")}
    swept |= {(argv[0], "--shapes") for argv, _ in BAD_FLAGS if "--shapes" in argv}
    missing = [(name, action.option_strings[-1]) for name in ("verify", "check", "derive")
               for action in commands[name]._actions
               if action.option_strings and action.nargs != 0 and action.dest != "help"
               and not any((name, o) in swept for o in action.option_strings)]
    assert not missing, f"flags with no out-of-range case: {missing}"
