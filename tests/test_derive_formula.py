"""What ``mcjax.derive`` finds, rule by rule against the registry's hand derivations, and how
it writes it: the structure, the simplifications and the formula printer.

**What "agree" means.** For a registered rule and argument, the derived Jacobian and the hand
one agree when

1. *structure*: the trees of classes are equal, reading a ``BlockDiagonal`` or a
   ``Broadcast`` without batch axes as the matrix or identity it is, a gradient array as a
   ``Dense`` row, and any Jacobian from ``()`` to ``()`` as a number;
2. *value*: the dense arrays are equal to the checker's tolerance;
3. *formula*: the formulas are the same text once spelled alike (:func:`normalise`: ascii
   for ``ᵀ ⊗ · ²``, juxtaposition for ``⊙``, no spaces, ``I_8`` read as ``I_m``, the
   registry's parenthetical remarks dropped), comparing the formula before its definitions
   and requiring the registry's definitions (``z = w.x + b``) among derive's.  Where the
   registry writes a sum over examples (the paper's loss) and derive the same in matrix
   notation, the table :data:`MATRIX_FORM` states derive's text and the identity that makes
   the two one formula.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from derive_corpus import registry_cases

import mcjax
from mcjax._jacobian import _expr as E
from mcjax._jacobian._algebra import add, compose
from mcjax._jacobian._build import dense, diagonal, identity, kronecker, scaled_identity
from mcjax._jacobian._print import Printer
from mcjax._jacobian._sym import Sym
from mcjax.compilation import quick_jit
from mcjax.conventions import check_atol, check_rtol

# -- agreement with the registry ------------------------------------------------------------------
PAPER = ["neuron/w", "neuron/x", "neuron/b", "affine/W", "affine/x", "affine/b",
         "affine_batch/W", "matvec/W", "matvec/x",
         "add_scalar/x", "add_scalar/z", "subtract_scalar/x", "subtract_scalar/z",
         "multiply_scalar/x", "multiply_scalar/z", "divide_scalar/x", "divide_scalar/z",
         "sum_reduction/x", "sum_product/x", "sum_product/z", "sum_scalar_product/x",
         "sum_scalar_product/z", "dot/w", "dot/x", "relu/x", "sigmoid/x", "tanh/x",
         "softplus/x", "add/x", "add/y", "subtract/x", "subtract/y", "multiply/x", "multiply/y",
         "divide/x", "divide/y", "maximum/x", "maximum/y", "square/x", "exp/x", "log/x",
         "sqrt/x", "sin/x", "cos/x", "abs/x", "negative/x"]
"""Rules whose derived formula is the registry's text, once spelled alike."""

MATRIX_FORM = {
    # sum_{i: z_i > 0} (z_i - y_i) x_i^T = ((z - y) ⊙ 1[z > 0])^T X, and relu(z) = z where z > 0;
    # N = 2 examples, so 2/N = 1
    "neuron_loss/w": ("2/N sum_{i: z_i > 0} (w.x_i + b - y_i) x_i^T",
                      "-((y - relu(z)) ⊙ 1[z > 0])ᵀ X, z = X w + b"),
    "neuron_loss/b": ("2/N sum_{i: z_i > 0} (w.x_i + b - y_i)",
                      "-sum((y - relu(z)) ⊙ 1[z > 0]), z = X w + b"),
    # N = B m = 8 entries: 2/N = 1/4
    "mse/y_hat": ("2/N (y_hat - y)", "1/4 (y_hat - y)"),
    # the registry's remark for a batch of B = 2 examples, written out
    "affine_batch/x": ("W (I_B (x) W for a batch)", "I_2 ⊗ W"),
    "affine_batch/b": ("I (one copy per row for a batch)", "(1 ⊗ I)"),
}

KNOWN_DIFFERENCES = {
    "negative/x": "derive finds -I, a scaled identity; the hand rule stores the diagonal",
    "softmax/z": "derive keeps diag(s) - s sᵀ factored (O(n) numbers); the hand rule is dense",
}


def signature(J):
    """The tree of classes, read as the module docstring says."""
    if not isinstance(J, mcjax.Jacobian):
        return "number" if np.ndim(J) == 0 else "Dense"
    if J.out_shape == () and J.in_shape == ():
        return "number"
    if isinstance(J, mcjax.Composed):
        return ("Composed", signature(J.outer), signature(J.inner))
    if isinstance(J, mcjax.Sum):
        return ("Sum", *(signature(t) for t in J.terms))
    if isinstance(J, mcjax.BlockDiagonal) and not J.batch_shape:
        return "Dense"
    if isinstance(J, mcjax.Broadcast) and not J.batch_shape:
        return "ScaledIdentity"
    return type(J).__name__


def normalise(text: str) -> str:
    text = re.sub(r"\s*\((?:[^()]|\([^()]*\))*\b(?:row|column|copy|batch|ones)\b"
                  r"(?:[^()]|\([^()]*\))*\)\s*$", "", text)
    for a, b in (("ᵀ", "^T"), ("⊗", "(x)"), ("·", "."), ("²", "^2"), ("⊙", " ")):
        text = text.replace(a, b)
    return re.sub(r"I_\d+", "I_m", text.replace(" ", ""))


def _split(text: str) -> tuple[str, set[str]]:
    """``(formula, {definitions})``: the definitions follow the first top-level comma."""
    depth = 0
    for i, ch in enumerate(text):
        depth += ch in "([{" and 1 or (ch in ")]}" and -1 or 0)
        if ch == "," and depth == 0:
            return text[:i], {d.strip() for d in text[i + 1:].split(",")}
    return text, set()


REGISTRY_CASES = {c.name: c for c in registry_cases()}


@pytest.fixture(scope="module")
def derived_and_hand():
    """Every registered rule's derived and hand Jacobians, from one compiled program (the
    formulas travel in the Jacobians' static pytree data, through jax.jit)."""
    names = list(REGISTRY_CASES)
    rules = [mcjax.registry.REGISTRY.get(name.split("/")[0]) for name in names]
    points = [REGISTRY_CASES[n].sample(np.random.default_rng(0), "float64") for n in names]

    def both(points):
        out = []
        for n, rule, a in zip(names, rules, points):
            J = mcjax.derive(REGISTRY_CASES[n].f, REGISTRY_CASES[n].argnums)(*a)
            hand = rule.derivative(n.split("/")[1])(*a, **rule.hyper)  # the corpus's f's keywords
            out.append((J, hand, mcjax.densify(J), mcjax.densify(hand)))
        return out

    values = quick_jit(both)(points)
    return {n: (*v, rule.wrt[n.split("/")[1]].text) for n, rule, v in zip(names, rules, values)}


def test_every_rule_has_the_hand_structure_or_a_stated_reason(derived_and_hand):
    differing = set()
    for name, (derived, hand, got, want, _) in derived_and_hand.items():
        is_leaf = lambda J: isinstance(J, mcjax.Jacobian)  # noqa: E731
        mine = jax.tree_util.tree_map(signature, derived, is_leaf=is_leaf)
        theirs = jax.tree_util.tree_map(signature, hand, is_leaf=is_leaf)
        if mine != theirs:
            differing.add(name)
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(g, w, rtol=check_rtol("float64", w.size),
                                       atol=check_atol("float64"), err_msg=name)
    assert differing == set(KNOWN_DIFFERENCES), differing ^ set(KNOWN_DIFFERENCES)


@pytest.mark.parametrize("name", PAPER)
def test_the_derived_formula_is_the_hand_formula(derived_and_hand, name):
    derived, *_, text = derived_and_hand[name]
    mine, my_definitions = _split(normalise(derived.formula()))
    theirs, their_definitions = _split(normalise(text))
    assert mine == theirs, (derived.formula(), text)
    assert their_definitions <= my_definitions, (derived.formula(), text)


@pytest.mark.parametrize("name", sorted(MATRIX_FORM))
def test_the_loss_is_written_in_matrix_notation(derived_and_hand, name):
    hand_text, derived_text = MATRIX_FORM[name]
    derived, *_, text = derived_and_hand[name]
    assert text == hand_text
    assert derived.formula() == derived_text


def test_the_issue_example_and_its_latex():
    W, x, b = jnp.ones((8, 4)), jnp.ones(4), jnp.ones(8)
    J = mcjax.derive(lambda W, x, b: jax.nn.relu(W @ x + b))(W, x, b)
    assert isinstance(J, mcjax.Composed)
    assert isinstance(J.outer, mcjax.Diagonal) and isinstance(J.inner, mcjax.Kronecker)
    assert J.formula() == "diag(1[z > 0]) (I_8 ⊗ xᵀ), z = W x + b"
    assert J.latex() == (r"\operatorname{diag}(\mathbb{1}[\mathbf{z} > 0])\,(I_{8} \otimes "
                         r"\mathbf{x}^\top),\quad \mathbf{z} = W\,\mathbf{x} + \mathbf{b}")


def test_a_two_layer_mlp_names_its_layers():
    def mlp(params, x):
        h = jax.nn.relu(params[0]["W"] @ x + params[0]["b"])
        return jax.nn.relu(params[1]["W"] @ h + params[1]["b"])

    params = [{"W": jnp.ones((4, 3)), "b": jnp.ones(4)}, {"W": jnp.ones((2, 4)), "b": jnp.ones(2)}]
    J = mcjax.derive(mlp)(params, jnp.ones(3))
    assert J[0]["W"].formula() == \
        "diag(1[z₂ > 0]) W₂ diag(1[z₁ > 0]) (I_4 ⊗ xᵀ), z₁ = W₁ x + b₁, z₂ = W₂ relu(z₁) + b₂"
    assert J[1]["b"].formula() == "diag(1[z₂ > 0]), z₁ = W₁ x + b₁, z₂ = W₂ relu(z₁) + b₂"


def test_every_leaf_has_its_own_name_from_its_path():
    """Two linen-style kernels are told apart by the module that holds them, in text and in
    LaTeX; a framework's ``value`` wrapper is no part of a name."""
    def mlp(params, x):
        h = jnp.tanh(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
        return h @ params["Dense_1"]["kernel"]

    params = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
              "Dense_1": {"kernel": jnp.ones((4, 2))}}
    J = mcjax.derive(mlp)(params, jnp.ones(3))
    text, tex = J["Dense_0"]["bias"].formula(), J["Dense_0"]["bias"].latex()
    assert text == "Dense_1.kernelᵀ diag(1 - tanh(z)²), z = Dense_0.kernelᵀ x + bias"
    assert r"\mathrm{Dense\_1.kernel}" in tex and r"\mathrm{Dense\_0.kernel}" in tex

    @jax.tree_util.register_dataclass
    @dataclasses.dataclass
    class Param:  # an nnx.Param-like box
        value: jax.Array

    boxed = {"w": Param(jnp.ones(3)), "v": Param(jnp.ones(3))}
    J = mcjax.derive(lambda p: jnp.sum(p["w"].value * p["v"].value))(boxed)
    assert J["w"].value.formula() == "vᵀ"


def test_constants_are_named_as_the_code_reaches_them():
    weights = {"enc": jnp.arange(12.0).reshape(3, 4) / 10, "dec": jnp.arange(8.0).reshape(4, 2)}
    J = mcjax.derive(lambda x: jnp.tanh(x @ weights["enc"]) @ weights["dec"])(jnp.ones(3))
    assert J.formula() == "decᵀ diag(1 - tanh(z)²) encᵀ, z = encᵀ x"
    hidden = np.arange(12.0).reshape(4, 3)  # reached by no name f holds: listed with its shape
    J = mcjax.derive(lambda x: jnp.tanh(jnp.asarray(hidden + 1.0) @ x))(jnp.ones(3))
    assert J.formula() == "diag(1 - tanh(z)²) C, z = C x, C ∈ ℝ^(4×3)"
    assert J.latex().endswith(r"C \in \mathbb{R}^{4\times 3}")


# -- the simplifications ---------------------------------------------------------------------------
x = jnp.array([1.0, -2.0, 3.0])


def sym(name, value):
    return Sym(value, E.arg(name, name, np.shape(value)))


def test_diagonal_times_diagonal_is_a_diagonal():
    J = compose(diagonal(sym("a", x), (3,), x.dtype), diagonal(sym("b", 2 * x), (3,), x.dtype))
    assert isinstance(J, mcjax.Diagonal) and J.formula() == "diag(a ⊙ b)"
    np.testing.assert_array_equal(J.diagonal, 2 * x * x)


def test_identities_vanish_and_numbers_scale():
    D = diagonal(sym("d", x), (3,), x.dtype)
    assert compose(identity((3,), x.dtype), D) is D and compose(D, identity((3,), x.dtype)) is D
    J = compose(scaled_identity(Sym(2.0, E.num(2.0)), (3,), x.dtype), D)
    assert isinstance(J, mcjax.Diagonal) and J.formula() == "diag(2 d)"


def test_a_kronecker_block_times_a_diagonal_stays_factored():
    K = kronecker(sym("x", jnp.ones(4)), 3)
    J = compose(diagonal(sym("d", x), (3,), x.dtype), K)
    assert isinstance(J, mcjax.Composed) and J.inner is K
    assert J.formula() == "diag(d) (I_3 ⊗ xᵀ)"


def test_a_row_is_pulled_back_through_what_follows():
    """1ᵀ diag(d) W is the row (d)ᵀ W: the derivative of a scalar ends as its gradient."""
    row = mcjax.derive(jnp.sum)(x)
    W = dense(sym("W", jnp.ones((3, 2))), 1)
    J = compose(compose(row, diagonal(sym("d", x), (3,), x.dtype)), W)
    assert isinstance(J, mcjax.Dense) and J.out_shape == () and J.formula() == "dᵀ W"
    np.testing.assert_array_equal(J.array, x @ jnp.ones((3, 2)))


def test_two_paths_into_one_jacobian_are_factored():
    K = kronecker(sym("x", jnp.ones(4)), 3)
    paths = add(compose(dense(sym("A", jnp.eye(3)), 1), K), compose(dense(sym("B", jnp.eye(3)), 1), K))
    assert isinstance(paths, mcjax.Composed) and paths.inner is K
    assert paths.formula() == "(A + B) (I_3 ⊗ xᵀ)"


def test_an_elementwise_chain_is_one_diagonal_holding_n_numbers():
    J = mcjax.derive(lambda x: jnp.tanh(x) * x + jnp.sin(x))(x)
    assert isinstance(J, mcjax.Diagonal) and J.diagonal.shape == (3,)
    assert J.formula() == "diag(x ⊙ (1 - tanh(x)²) + tanh(x) + cos(x))"


def test_picking_a_part_of_a_concatenation_is_the_identity_or_nothing():
    J = mcjax.derive(lambda x, y: jnp.concatenate([x, y])[:3] * 2.0, 1)(x, jnp.ones(2))
    assert isinstance(J, mcjax.Zero)
    J = mcjax.derive(lambda x, y: jnp.concatenate([x, y])[:3] * 2.0)(x, jnp.ones(2))
    assert isinstance(J, mcjax.ScaledIdentity) and J.formula() == "2 I"


def test_a_transpose_feeding_a_product_is_read_through():
    """x @ W.T traces as transpose then dot_general: with respect to W it is I ⊗ xᵀ."""
    J = mcjax.derive(lambda W, x: x @ W.T)(jnp.ones((2, 3)), x)
    assert isinstance(J, mcjax.Kronecker) and J.formula() == "I_2 ⊗ xᵀ"


# -- the printer ------------------------------------------------------------------------------------
@pytest.mark.parametrize("expr, text, latex", [
    (E.mul(E.num(2.0), E.mul(E.num(0.5), E.arg("x", "x", (3,)))), "x", "x"),
    (E.add(E.arg("x", "x", (3,)), E.mul(E.num(2.0), E.arg("x", "x", (3,)))), "3 x", "3\\,x"),
    (E.sub(E.arg("a", "a"), E.neg(E.arg("b", "b"))), "a + b", "a + b"),
    (E.mul(E.arg("x", "x", (3,)), E.arg("y", "y", (3,))), "x ⊙ y", "x \\odot y"),
    (E.mul(E.arg("c", "c"), E.arg("y", "y", (3,))), "c y", "c\\,y"),
    (E.div(E.arg("x", "x"), E.power(E.arg("y", "y"), 2)), "x / y²", "\\frac{x}{y^{2}}"),
    (E.indicator(E.compare(">=", E.arg("z", "z"), E.num(0.0))), "1[z ≥ 0]",
     "\\mathbb{1}[z \\geq 0]"),
    (E.indicator(E.logical_not(E.compare(">", E.arg("z", "z"), E.num(0.0)))), "1[z ≤ 0]",
     "\\mathbb{1}[z \\leq 0]"),
    (E.mul(E.num(0.5), E.call("exp", E.arg("x", "x"))), "1/2 exp(x)", "\\frac{1}{2}\\,\\exp(x)"),
    (E.transpose(E.transpose(E.arg("W", "W", (2, 3)))), "W", "W"),
    (E.matmul(E.arg("W", "W", (2, 3)), E.add(E.arg("x", "x", (3,)), E.arg("b", "b", (3,))), (2,)),
     "W (x + b)", "W\\,(x + b)"),
])
def test_expressions_print_as_a_person_writes_them(expr, text, latex):
    assert Printer(False)(expr) == text
    assert Printer(True)(expr) == latex


def test_a_hand_built_jacobian_prints_with_placeholders():
    assert mcjax.Diagonal(x).formula() == "diag(d)"
    assert mcjax.Kronecker(jnp.ones(3), 2).formula() == "I_2 ⊗ xᵀ"
    assert mcjax.Fill(1.0, (), (3,)).formula() == "c 1ᵀ"
