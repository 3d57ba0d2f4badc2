"""``mcjax.check_rule`` on a corpus of custom rules (``tests/rule_corpus.py``): every right rule
passes in float32 and float64, on its kinks too; every planted slip is caught, and the
report says which direction (JVP, VJP) or which structural test fails.

The corpus is checked with ``mcjax.check_rules`` (one compiled program per call); the other
tests use ``mcjax.check_rule`` on a few rules each.
"""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rule_corpus import CORPUS, clip_gradient, relu, softplus, straight_through_round

import _mcjax_pytest
import mcjax
from mcjax._check._rule_free import rule_free
from mcjax._cli import main

BY_NAME = {c.name: c for c in CORPUS}


def _point(case, dtype):
    return case.point(np.random.default_rng(0), jnp.dtype(dtype))


def test_the_corpus_is_what_the_issue_asks_for():
    assert len(CORPUS) >= 20 and all(len(c.slips) >= 3 for c in CORPUS)
    assert {"softplus", "logsumexp", "softmax_cross_entropy", "straight_through_round",
            "clip_gradient", "embedding", "masked_mean", "sincos", "row_norms"} <= set(BY_NAME)
    assert sum(c.surrogate is not None for c in CORPUS) >= 2
    assert sum(c.kink is not None for c in CORPUS) >= 4


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_right_rule_passes_on_and_off_its_kinks(dtype):
    cases, names = [], []
    for c in CORPUS:
        f = c.build(None)
        cases.append((f, _point(c, dtype), c.argnums, c.surrogate))
        names.append(c.name)
        if c.kink is not None:
            cases.append((f, c.kink(jnp.dtype(dtype)), c.argnums, c.surrogate))
            names.append(f"{c.name} on a kink")
    reports = mcjax.check_rules(cases)
    failed = [f"{name}:\n{r}" for name, r in zip(names, reports) if not r.ok]
    assert not failed, "\n\n".join(failed)
    for name, r in zip(names, reports):
        labels = [label for label, _ in r.parts]
        # a custom_vjp has no forward mode: its report says so and judges the VJP alone
        vjp_only = "custom_vjp" in r.derivative
        assert labels == (["VJP"] if vjp_only else ["JVP", "VJP"]), name
        assert not vjp_only or any("no forward mode" in n for n in r.notes), name
        assert any("structural tests" in n and "pass" in n for n in r.notes), name
    on_kinks = [r for name, r in zip(names, reports) if name.endswith("kink")]
    assert sum(r.kinks is not None and r.kinks.at > 0 for r in on_kinks) >= 3


@pytest.fixture(scope="module")
def slips():
    """Every planted slip of the corpus, checked in float32: ``{(rule, slip): report}``."""
    keys = [(c.name, slip) for c in CORPUS for slip in c.slips]
    cases = [(BY_NAME[name].build(slip), _point(BY_NAME[name], "float32"),
              BY_NAME[name].argnums, BY_NAME[name].surrogate) for name, slip in keys]
    return dict(zip(keys, mcjax.check_rules(cases)))


# what the diagnosis names, where it can (a factor, a sign, a transpose, a dropped term named
# with the line of the function's own computation it belongs to)
NAMED = {
    ("relu", "factor"): "times 2",
    ("logsumexp", "sign"): "the sign is flipped",
    ("newton_sqrt", "sign"): "the sign is flipped",
    ("affine", "transpose"): "axes (0, 1) swapped",
    ("matmul", "transpose"): "axes (0, 1) swapped",
    ("affine", "dropped-term"): "missing term",
    ("gelu", "dropped-term"): "`x + 0.044715 * x**3` (rule_corpus.py",
    ("logistic_loss", "dropped-term"): "missing term",
    ("layer_norm", "factor"): "N = 6",
    ("product", "transpose"): "the wrong argument",
    ("relu", "missing-gate"): "missing gate",
    ("sigmoid", "dropped-term"): "value where its derivative was due",
    ("softmax_cross_entropy", "factor"): "times 2",
    ("clip_gradient", "sign"): "the sign is flipped",
}


def test_every_planted_slip_is_caught(slips):
    missed = [f"{name}/{slip}:\n{r}" for (name, slip), r in slips.items() if r.ok]
    assert not missed, "\n\n".join(missed)
    for key, words in NAMED.items():
        assert any(words in line for line in slips[key].diagnosis), (key, slips[key].diagnosis)


def test_the_report_says_which_direction_departs(slips):
    jvp_rule, vjp_rule = slips["relu", "factor"], slips["sigmoid", "stale-residual"]
    assert jvp_rule.diagnosis[0].startswith("the JVP (jax.jacfwd of relu") and "both" in \
        jvp_rule.diagnosis[0] and "the custom_jvp rule of relu" in jvp_rule.diagnosis[0]
    assert re.search(r"relu_jvp \(rule_corpus\.py:\d+\)", jvp_rule.diagnosis[0])
    assert [(label, part.ok) for label, part in jvp_rule.parts] == [("JVP", False),
                                                                     ("VJP", False)]
    assert vjp_rule.diagnosis[0].startswith("the VJP (jax.vjp of sigmoid") and re.search(
        r"backward pass of the custom_vjp rule of sigmoid \(fwd \(rule_corpus\.py:\d+\), "
        r"bwd \(rule_corpus\.py:\d+\)\)", vjp_rule.diagnosis[0])
    assert any(c.reference == "VJP vs finite differences" and not c.ok
               for c in vjp_rule.comparisons)
    assert "mcjax.check: FAIL" in str(vjp_rule) and vjp_rule.as_dict()["parts"][0]["part"] == "VJP"


def test_slips_a_jacobian_cannot_show_are_caught_by_the_structural_tests(slips):
    # a backward pass that treats a symbolic zero cotangent as "nothing moved"
    moments = slips["moments", "symbolic-zero"]
    assert all(part.ok for _, part in moments.parts)
    assert any("symbolic zeros" in p for p in moments.problems), moments.problems
    # a backward kernel (pure_callback) that sums over the batch axis vmap adds
    batch = slips["normalise", "batch-axis"]
    assert any(p.startswith("under jax.vmap the VJP of a batch") for p in batch.problems)
    # a rule for the JVP along x that drops x's tangent when y's is a symbolic zero
    product = slips["product", "symbolic-zero"]
    assert any("symbolic zero tangent" in p for p in product.problems)


def _nonlinear(slip):
    @jax.custom_jvp
    def square_tangent(x):
        return jnp.sin(x)

    @square_tangent.defjvp
    def square_tangent_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        if slip == "nonlinear":
            return jnp.sin(x), t * t * jnp.cos(x)  # e_j * e_j = e_j: a Jacobian cannot tell
        return x, t * jnp.cos(x)  # the primal it returns is x, not sin(x)

    return square_tangent


@jax.custom_vjp
def cube(x):
    return x**3


def _cube_kernel(x, g):  # a backward kernel that computes in float32 whatever it is given
    return 3 * np.asarray(x, np.float32) ** 2 * np.asarray(g, np.float32)


cube.defvjp(lambda x: (cube(x), x), lambda x, g: (jax.pure_callback(
    _cube_kernel, jax.ShapeDtypeStruct(g.shape, jnp.float32), x, g,
    vmap_method="expand_dims"),))


def test_a_jvp_not_linear_in_its_tangent_and_a_wrong_primal_are_caught():
    x = jnp.asarray([0.3, -1.2, 2.0], jnp.float32)
    nonlinear, primal, float32_kernel = mcjax.check_rules([
        (_nonlinear("nonlinear"), (x,)), (_nonlinear("primal"), (x,)), (cube, (x,))])
    # a rule that rounds to float32 is judged with float32's thresholds, even in the
    # structural tests (which run on float64 arguments)
    assert float32_kernel.ok, float32_kernel
    assert not nonlinear.ok and [label for label, _ in nonlinear.parts] == ["JVP"]
    assert nonlinear.parts[0][1].ok  # jax.jacfwd feeds basis vectors: t * t = t there
    assert any(p.startswith("the JVP is not linear in its tangent") for p in nonlinear.problems)
    assert any(p.startswith("the VJP cannot be computed") and "not linear in its tangent" in p
               for p in nonlinear.problems)
    assert not primal.ok and any(p.startswith("the primal output of jax.jvp (the custom_jvp "
                                              "rule's own) differs") for p in primal.problems)


def test_a_surrogate_sets_the_references_but_not_the_primal():
    x = jnp.asarray([0.3, -1.7, 2.2], jnp.float64)
    without, with_surrogate = mcjax.check_rules([
        (straight_through_round(), (x,)), (straight_through_round(), (x,), 0, lambda x: x)])
    assert not without.ok and with_surrogate.ok  # round's own derivative is 0, the rule's 1
    assert any("surrogate" in n for n in with_surrogate.notes)

    @jax.custom_jvp
    def stale(x):
        return jnp.round(x)

    stale.defjvp(lambda primals, tangents: (primals[0], tangents[0]))  # x, not round(x)
    report = mcjax.check_rule(stale, x, surrogate=lambda x: x)
    assert all(part.ok for _, part in report.parts) and not report.ok
    assert any(p.startswith("the primal output of jax.jvp") for p in report.problems)


def test_fast_mode_for_a_large_argument():
    x = jnp.asarray(np.random.default_rng(1).standard_normal(3000), jnp.float32)
    right = mcjax.check_rule(softplus(), x)
    assert right.ok and right.mode == "fast", right
    assert any("through its transpose" in n for n in right.notes)
    wrong = mcjax.check_rule(softplus("factor"), x, mode="fast", points=1)
    assert not wrong.ok and wrong.parts[0][0] == "VJP"


def test_a_rule_under_jit_in_a_loss_and_the_rule_free_computation():
    W = jnp.asarray(np.random.default_rng(2).standard_normal((3, 4)), jnp.float64)
    rule = jax.jit(relu("sign"))

    def loss(w, x):  # the rule inside a cond and a jit, as it sits in a model
        return jax.lax.cond(x[0] > -10, lambda w: jnp.sum(rule(w @ x) ** 2), lambda w: 0.0 * jnp.sum(w), w)

    x = jnp.asarray([0.5, -1.0, 2.0, 0.1], jnp.float64)
    report = mcjax.check_rule(loss, W, x)
    assert not report.ok and "the custom_jvp rule of relu" in report.derivative
    # without its rules the loss is differentiated through its body, jnp.maximum
    body = jax.grad(lambda w: jnp.sum(jnp.maximum(w @ x, 0) ** 2))(W)
    np.testing.assert_array_equal(jax.grad(rule_free(loss))(W, x), body)


def test_check_names_the_rule_when_the_references_depart():
    rule = softplus("sign")

    def f(x):
        return jnp.sum(rule(x) ** 2)

    def by_hand(x):
        return 2 * jnp.log1p(jnp.exp(x)) * jax.nn.sigmoid(x)

    x = jnp.asarray([0.5, -1.0, 2.0], jnp.float64)
    report = mcjax.check(f, by_hand, x)
    # the exact references run the wrong rule; finite differences and the Taylor test, which
    # evaluate f itself, agree with the hand derivative: it is not failed on their authority
    assert report.ok and not report.diagnosis
    note = report.notes[0]
    assert note.startswith("the references disagree: jax.jacfwd and jax.jacrev depart") and \
        "the custom_jvp rule of softplus called in `rule(x)` (test_check_rules.py:" in note and \
        "(softplus_jvp (rule_corpus.py:" in note and \
        "the derivative under test agrees with finite differences there" in note
    assert [c.reference for c in report.comparisons if not c.ok] == [
        "jax.jacfwd (runs the rule)", "jax.jacrev (runs the rule)"]
    # a wrong hand derivative still fails, on finite differences' authority
    wrong = mcjax.check(f, lambda x: 2 * by_hand(x), x)
    assert not wrong.ok and any(c.reference == "finite differences" and not c.ok
                                for c in wrong.comparisons)


def test_assert_rule_and_the_pytest_plugins_summary():
    x = jnp.asarray([0.5, 1.5, -0.5], jnp.float32)
    assert mcjax.assert_rule(clip_gradient(), x, 1.0,
                             surrogate=lambda x, b: jnp.clip(x, -b, b)).ok
    with pytest.raises(mcjax.DerivativeError) as caught:
        mcjax.assert_rule(clip_gradient("factor"), x, 1.0,
                          surrogate=lambda x, b: jnp.clip(x, -b, b))
    headline, report = str(caught.value).split("\n", 1)
    assert headline.startswith("the VJP (jax.vjp of clip_gradient") and report.startswith(
        "mcjax.check: FAIL")
    assert _mcjax_pytest._summary(caught.value) == f"DerivativeError: {headline}"


def double(x):
    return 2 * x


def total(x):
    return jnp.sum(x)


def test_one_sentence_for_a_wrong_call():
    x = jnp.ones(3, jnp.float32)
    with pytest.raises(ValueError, match=r"^mcjax.check_rule: double calls no jax.custom_jvp "
                                         r"or jax.custom_vjp function; expected a function "
                                         r"with a custom derivative rule"):
        mcjax.check_rule(double, x)
    with pytest.raises(mcjax.ShapeError, match=r"^mcjax.check_rule: the surrogate total returns "
                                               r"shape \(\) but f returns shape \(3,\); "
                                               r"expected the same outputs"):
        mcjax.check_rule(softplus(), x, surrogate=total)
    with pytest.raises(ValueError, match=r"argnums=2 but f gets 1 argument"):
        mcjax.check_rule(softplus(), x, argnums=2)
    with pytest.raises(ValueError, match=r"mode='slow'; expected one of auto, full, fast"):
        mcjax.check_rule(softplus(), x, mode="slow")
    with pytest.raises(mcjax.DtypeError, match=r"^mcjax.check_rule: cannot differentiate with "
                                               r"respect to args\[0\], which has dtype int32"):
        mcjax.check_rule(softplus(), jnp.ones(3, jnp.int32))
    with pytest.raises(TypeError, match=r"^mcjax.check_rule: f is a jax.Array of shape \(3,\), "
                                        r"not a function; expected a function f\(\*args\)"):
        mcjax.check_rule(x, x)


def test_check_cases_keeps_each_cases_constants():
    x = jnp.asarray([1.0, 2.0], jnp.float64)
    right, wrong = mcjax.check_cases([
        (lambda x: 3.0 * x, lambda x: jnp.diag(jnp.full(2, 3.0)), (x,), 0),
        (lambda x: 3.0 * x, lambda x: jnp.diag(jnp.full(2, 2.0)), (x,), 0)])
    assert right.ok and not wrong.ok  # one program, two sets of lifted constants


RULES_FILE = '''
import jax, jax.numpy as jnp

@jax.custom_vjp
def clip_gradient(x):
    return x

def fwd(x):
    return x, x

def bwd(x, g):
    return (jnp.where(jnp.abs(x) <= 1, g, 0) * SCALE,)

clip_gradient.defvjp(fwd, bwd)
SCALE = {scale}

def clip(x):
    return jnp.clip(x, -1, 1)
'''


@pytest.mark.parametrize("scale, status", [(1, 0), (2, 1)])
def test_the_command_line(tmp_path, capsys, scale, status):
    path = tmp_path / "rules.py"
    path.write_text(RULES_FILE.format(scale=scale))
    args = ["check", "--rule", f"{path}:clip_gradient", "--shapes", "4", "--surrogate",
            f"{path}:clip"]
    assert main(args) == status
    out = capsys.readouterr().out
    assert out.startswith(f"mcjax.check: {'ok' if status == 0 else 'FAIL'}  d clip_gradient")
    if status:
        return
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and [p["part"] for p in report["parts"]] == ["VJP"]
    assert main(["check", f"{path}:clip_gradient", "--shapes", "4"]) == 2
    assert "expected MODULE:DERIVATIVE after MODULE:FUNCTION (or --rule" in capsys.readouterr().err
    assert main(["check", "--rule", f"{path}:clip", "--shapes", "4"]) == 2
    assert capsys.readouterr().err.startswith("mcjax check --rule: clip calls no jax.custom_jvp")
