"""A derived formula says what the Jacobian holds: each printed expression, evaluated at the
point from its arguments and constants (``mcjax._jacobian._evaluate``), rebuilds a Jacobian
equal to the derived one.  The printer's algebra rewrites what it prints (cancelled factors,
collected sums, softmax and one-hot targets recognised, signs of positive values dropped, a
selection pulled into a row), so the text is checked, not only the arrays: on the derive corpus,
a fifth of JAX's own gradient-test functions and the losses researchers write; and a formula
changed by one sign or factor is caught."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from derive_corpus import CASES as DERIVE_CASES
from hypothesis import given
from hypothesis import strategies as st

import mcjax
from mcjax._derive._names import argument_exprs, constant_exprs
from mcjax._jacobian import _expr as E
from mcjax._jacobian._algebra import replace
from mcjax._jacobian._evaluate import NotWritten, as_written, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from _jax_functions import CASES as JAX_CASES  # noqa: E402


def bindings(f, args) -> dict:
    """The values of the names ``derive`` gives ``f``'s arguments and constants."""
    values = {}
    for exprs, a in zip(argument_exprs(f, args), args):
        for e, leaf in zip(exprs, jax.tree_util.tree_leaves(a)):
            values[e.param[0]] = jnp.asarray(leaf)
    closed = jax.make_jaxpr(f)(*args)
    for e, c in zip(constant_exprs(f, closed.consts), closed.consts):
        if e.op == "arg":
            values[e.param[0]] = jnp.asarray(c)
    return values


def written_agrees(f, args, argnums=0, rtol=1e-6, atol=1e-9) -> tuple[int, int]:
    """Assert that every block of ``derive(f)``'s result, rebuilt from its formula, equals it;
    return how many arrays were computed from text and how many kept as held."""
    derived = mcjax.derive(f, argnums=argnums)(*args)
    blocks = jax.tree_util.tree_leaves(derived, is_leaf=lambda j: isinstance(j, mcjax.Jacobian))
    values = bindings(f, args)
    written = kept = 0
    for J in blocks:
        rebuilt, n_written, n_kept = as_written(J, values)
        np.testing.assert_allclose(np.asarray(rebuilt.dense(), np.float64),
                                   np.asarray(J.dense(), np.float64), rtol=rtol, atol=atol,
                                   err_msg=J.formula())
        written, kept = written + n_written, kept + n_kept
        assert_latex_well_formed(J.latex())
    return written, kept


# the commands a formula may use: LaTeX's and amsmath's math mode
LATEX_COMMANDS = {
    "operatorname", "mathbf", "mathrm", "mathbb", "boldsymbol", "frac", "tfrac", "sqrt", "top",
    "odot", "otimes", "oslash", "cdot", "quad", "ldots", "cdots", "partial", "infty", "circ",
    "left", "right", "sum", "prod", "exp", "log", "ln", "sin", "cos", "tan", "tanh", "sinh",
    "cosh", "max", "min", "det", "sigma", "pi", "star", "geq", "leq", "neq", "Phi", "Sigma",
    "in", "times", "lvert", "rvert", "langle", "rangle", "backslash", "operatorname*",
    "neg", "land", "lor", "lfloor", "rfloor", "lceil", "rceil", "mid", "sim", "wedge",
    # the Greek letters a parameter may be named by
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "iota",
    "kappa", "lambda", "mu", "nu", "xi", "rho", "tau", "upsilon", "phi", "varphi", "chi", "psi",
    "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Upsilon", "Psi", "Omega",
}
_COMMAND = re.compile(r"\\([A-Za-z]+\*?|.)")


def assert_latex_well_formed(tex: str) -> None:
    """Braces balance, every command is one LaTeX knows, no script follows a script, the
    text of an operator or upright name has no bare ``_`` (a subscript there, ``stop_gradient``
    typeset with a subscript g), a number in scientific notation is a power of ten
    (``10^{-5}``, never ``1e-05``, which typesets as 1e − 05), and every character is ASCII
    (a Greek letter is its command)."""
    depth = 0
    for char in tex.replace(r"\{", "").replace(r"\}", ""):
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0, tex
    assert depth == 0, tex
    for name in _COMMAND.findall(tex):
        assert name in LATEX_COMMANDS or not name.isalpha(), (name, tex)
    for m in re.finditer(r"\\(?:operatorname|mathrm)\{((?:[^{}]|\{[^{}]*\})*)\}", tex):
        assert re.search(r"(?<!\\)_", m.group(1)) is None, tex
    assert re.search(r"\^\{[^{}]*\}\^|_\{[^{}]*\}_", tex) is None, tex
    assert re.search(r"(?<![\\A-Za-z])\d+(\.\d*)?[eE][+-]?\d", tex) is None, tex
    assert tex.isascii(), tex


def _x64(args):
    return tuple(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), a) for a in args)


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


# -- the corpora ------------------------------------------------------------------------------
@pytest.mark.parametrize("case", DERIVE_CASES, ids=lambda c: c.name)
def test_derive_corpus_formulas_hold_their_values(case):
    args = case.sample(np.random.default_rng(0), jnp.float64)
    written_agrees(case.f, args, case.argnums)


JAX_SAMPLE = [c for c in JAX_CASES if not c.kink][::5]


@pytest.mark.parametrize("case", JAX_SAMPLE, ids=lambda c: c.name)
def test_jax_functions_formulas_hold_their_values(case):
    args = _x64(case.draw(np.random.default_rng(1), np.float64))
    written_agrees(case.f, args, case.argnums)


# -- the losses, as researchers write them --------------------------------------------------------
_z = jnp.linspace(-1.0, 1.5, 5)
_w, _x, _y = jnp.linspace(-0.5, 0.5, 4), jnp.linspace(0.2, 1.0, 4), 0.3


def _bce(w, x, y):
    s = jax.nn.sigmoid(jnp.dot(w, x))
    return -(y * jnp.log(s) + (1 - y) * jnp.log(1 - s))


LOSSES = [
    ("bce by hand", _bce, (_w, _x, _y), "(sigmoid(z) - y) xᵀ, z = w·x"),
    ("bce, logaddexp", lambda w, x, y: jnp.logaddexp(0.0, w @ x) - y * (w @ x), (_w, _x, _y),
     "(sigmoid(z) - y) xᵀ, z = w·x"),
    ("optax bce", lambda w, x, y: optax.sigmoid_binary_cross_entropy(w @ x, y), (_w, _x, _y),
     "(sigmoid(z) - y) xᵀ, z = w·x"),
    ("ce, one-hot", lambda z: -jnp.sum(jax.nn.one_hot(1, 5) * jax.nn.log_softmax(z)), (_z,),
     "(softmax(z) - e_1)ᵀ"),
    ("ce, take_along_axis",
     lambda z: -jnp.take_along_axis(jax.nn.log_softmax(z), jnp.array([1]), axis=0)[0], (_z,),
     "(softmax(z) - e_1)ᵀ"),
    ("ce, index", lambda z: -jax.nn.log_softmax(z)[1], (_z,), "(softmax(z) - e_1)ᵀ"),
    ("optax ce", lambda z: optax.softmax_cross_entropy_with_integer_labels(z, 1), (_z,),
     "(softmax(z) - e_1)ᵀ"),
    ("logsumexp", lambda z: jax.nn.logsumexp(z), (_z,), "softmax(z)ᵀ"),
    ("trace", lambda A: jnp.trace(jnp.arange(12.0).reshape(3, 4) @ A), (jnp.ones((4, 3)),),
     None),
    ("gelu exact", lambda x: jax.nn.gelu(x, approximate=False), (_x,),
     "diag(1/2 erfc(-1/√2 x) + 1/√(2π) (x ⊙ exp(-1/2 x²)))"),
]


@pytest.mark.parametrize("name, f, args, text", LOSSES, ids=[c[0] for c in LOSSES])
def test_losses_are_written_as_a_person_writes_them(name, f, args, text):
    written, kept = written_agrees(f, args)
    assert written >= 1 and kept == 0
    if text is not None:
        assert mcjax.derive(f)(*args).formula() == text


def test_a_trace_is_the_transposed_matrix():
    W = jnp.arange(12.0).reshape(3, 4)
    assert mcjax.derive(lambda A: jnp.trace(W @ A))(jnp.ones((4, 3))).formula() == "Wᵀ"
    assert mcjax.derive(lambda A: jnp.sum(A * W))(jnp.ones((3, 4))).formula() == "W"


# -- the check can fail ---------------------------------------------------------------------------
def _with_symbol(J, expr):
    return replace(J, symbols=(expr,))


@pytest.mark.parametrize("slip", ["sign", "factor", "swap"])
def test_a_formula_one_slip_away_is_caught(slip):
    """The bce gradient's text changed by one slip no longer rebuilds the derived values."""
    J = mcjax.derive(_bce)(_w, _x, _y)
    row = mcjax.Dense(J.dense(), in_ndim=1, symbols=J.symbols) if J.symbols else None
    assert row is not None
    (e,) = row.symbols
    values = {"w": _w, "x": _x, "y": jnp.asarray(_y)}
    w, x = E.arg("w", "w", (4,)), E.arg("x", "x", (4,))
    wrong = {"sign": E.neg(e), "factor": E.mul(E.num(2.0), e),
             "swap": E.mul(E.sub(E.arg("y", "y"), E.call("sigmoid", E.dot(w, x))), x)}[slip]
    good, n_good, _ = as_written(row, values)
    bad, n_bad, _ = as_written(_with_symbol(row, wrong), values)
    assert n_good == n_bad == 1  # both computed from their text
    np.testing.assert_allclose(good.dense(), J.dense(), rtol=1e-6)
    assert not np.allclose(bad.dense(), J.dense(), rtol=1e-3)


@pytest.mark.parametrize("tex", [r"\operatorname{stop_gradient}(x)", r"\mathbf{x}^{2}^{3}",
                                 r"\frac{1}{2", r"\foo{x}", r"J_{\mathrm{custom_vjp}}",
                                 r"\mathbf{x} + 1e-05", r"2.5e+20\,I", r"\operatorname{Φ}"])
def test_malformed_latex_is_caught(tex):
    with pytest.raises(AssertionError):
        assert_latex_well_formed(tex)


def test_a_part_without_a_value_is_kept_not_guessed():
    e = E.Expr("pull", (E.num(1.0),), ("J", "J"), (3,))
    with pytest.raises(NotWritten):
        evaluate(e, {})
    with pytest.raises(NotWritten, match="no value for 'q'"):
        evaluate(E.arg("q", "q", (2,)), {})


def test_powers_and_inverses_are_told_apart():
    A = jnp.array([[2.0, 1.0], [0.0, 4.0]])
    assert np.allclose(evaluate(E.inverse(E.arg("A", "A", (2, 2))), {"A": A}), jnp.linalg.inv(A))
    assert np.allclose(evaluate(E.power(E.arg("A", "A", (2, 2)), -1.0), {"A": A + 1}),
                       1 / (A + 1))
    assert mcjax.derive(lambda A: jnp.linalg.inv(A))(A).formula() == "-A⁻¹ (·) A⁻¹"
    x = jnp.array([-8.0, 27.0])
    assert np.allclose(evaluate(E.power(E.arg("x", "x", (2,)), 1 / 3), {"x": x}), [-2.0, 3.0])


# -- LaTeX that typesets ----------------------------------------------------------------------
@jax.custom_jvp
def stable_softplus(x):
    return jnp.logaddexp(x, 0.0)


@stable_softplus.defjvp
def _stable_softplus_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return stable_softplus(x), jax.nn.sigmoid(x) * dx


@jax.custom_vjp
def clip_gradient(x):
    return x


clip_gradient.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -1.0, 1.0),))

TYPESET = [
    ("a rule's name", lambda x: stable_softplus(x) ** 2, r"\operatorname{stable\_softplus}"),
    ("an opaque block's name", lambda x: 2.0 * clip_gradient(x), r"J_{\mathrm{clip\_gradient}}"),
    ("an epsilon", lambda x: x / jnp.sqrt(jnp.sum(x**2) + 1e-5), "10^{-5}"),
    ("large and tiny", lambda x: 1e20 * x + 2.5e-30 * x**2, r"5 \times 10^{-30}"),
    ("a rule written as a formula", jax.lax.cumlogsumexp, r"\operatorname{diag}(e^{-\mathbf{y}})"),
]


@pytest.mark.parametrize("name, f, expected", TYPESET, ids=[c[0] for c in TYPESET])
def test_names_and_numbers_typeset(name, f, expected):
    tex = mcjax.derive(f)(jnp.linspace(-1.0, 1.0, 3)).latex()
    assert expected in tex
    assert_latex_well_formed(tex)


def _value_of(tex: str) -> float:
    """The number a LaTeX number denotes: ``-\\frac{1}{3}``, ``1.5 \\times 10^{-7}``."""
    sign = -1.0 if tex.startswith("-") else 1.0
    tex = tex.lstrip("-")
    if m := re.fullmatch(r"\\frac\{(\d+)\}\{(\d+)\}", tex):
        return sign * int(m.group(1)) / int(m.group(2))
    if m := re.fullmatch(r"(?:([\d.]+) \\times )?10\^\{(-?\d+)\}", tex):
        return sign * float(f"{m.group(1) or 1}e{m.group(2)}")
    assert re.fullmatch(r"\d+(\.\d+)?", tex), tex
    return sign * float(tex)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_number_is_typeset_as_the_number_it_is(value):
    """Any float64, and its float32 rounding: a decimal, a ratio, a named constant or a power
    of ten, equal to the number at the precision it has (never 1e-05, never 0 for 1e-300)."""
    from mcjax._jacobian._print import KNOWN_CONSTANTS, number_text

    for v in {value, float(np.float32(value)) if abs(value) < 3e38 else value}:
        tex = number_text(v, True)
        assert_latex_well_formed(tex)
        if any(tex.lstrip("-") == known for _, _, known in KNOWN_CONSTANTS):
            continue
        written = _value_of(tex)
        # a float32 constant is written with the digits that identify it as float32
        assert written == pytest.approx(v, rel=float(np.finfo(np.float32).eps), abs=0.0), tex
