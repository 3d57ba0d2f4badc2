"""How results show themselves: a Jacobian's notebook view (structure, shapes, typeset formula),
a report's one-line repr and HTML (verdict first), and every result printable whatever
container it sits in (a flax nnx module, a tree map's leaves); in IPython, a cell named as
IPython names it and mcjax's errors shown at the user's call.  (tests/test_notebook.py runs
the same in a real kernel.)"""

from __future__ import annotations

import re
import sys
import types

import jax
import jax.numpy as jnp
import pytest

import mcjax
from mcjax._core import _ipython

F64 = jnp.float64


def _layer(W, x, b):
    return jax.nn.relu(W @ x + b)


LAYER_ARGS = (jnp.ones((8, 4), F64), jnp.arange(4.0, dtype=F64), jnp.zeros(8, F64))


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


# -- Jacobians ------------------------------------------------------------------------------------
def test_a_jacobian_shows_its_structure_shapes_and_formula():
    J = mcjax.derive(_layer)(*LAYER_ARGS)
    page = J._repr_markdown_()
    head, formula, tree = page.split("\n\n")
    assert head == "**Composed** Jacobian `(8,) ← (8, 4)`, float64"
    assert formula == f"$$\n{J.latex()}\n$$"
    assert tree == f"```text\n{J.structure()}\n```"
    assert J._repr_latex_() == f"$${J.latex()}$$"
    # one structure: no tree to draw
    single = mcjax.derive(jnp.sin)(jnp.ones(3, F64))._repr_markdown_()
    assert single.startswith("**Diagonal** Jacobian `(3,) ← (3,)`") and "```" not in single


def test_a_jacobian_whose_arrays_a_tree_map_replaced_still_prints():
    J = mcjax.derive(_layer)(*LAYER_ARGS)
    for leaf in (None, object()):
        odd = jax.tree.map(lambda a, leaf=leaf: leaf, J)
        assert repr(odd).startswith("Composed(") and str(odd) == repr(odd)
        assert odd._repr_markdown_() and odd._repr_latex_() is None
    shapes_only = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), J)
    assert repr(shapes_only) == repr(J) == "Composed(out_shape=(8,), in_shape=(8, 4))"


def test_a_derive_result_over_a_flax_nnx_model_prints():
    nnx = pytest.importorskip("flax.nnx")

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(3, 4, rngs=rngs, param_dtype=F64)
            self.l2 = nnx.Linear(4, 1, rngs=rngs, param_dtype=F64)

    model = MLP(nnx.Rngs(0))
    graphdef, state = nnx.split(model)

    def loss(state, x):
        m = nnx.merge(graphdef, state)
        return jnp.sum(m.l2(jax.nn.relu(m.l1(x))))

    x = jnp.ones(3, F64)
    for J in (mcjax.derive(loss)(state, x), nnx.merge(graphdef, mcjax.derive(loss)(state, x))):
        text = repr(J)  # flax's repr maps its ArrayRepr over the Jacobians' arrays
        assert "Dense(out_shape=(), in_shape=(3, 4))" in text and str(J)


# -- reports -----------------------------------------------------------------------------------------
def _f(x):
    return jnp.tanh(x) * x


def _df(x):
    return jnp.diag((1 - jnp.tanh(x) ** 2) * x + jnp.tanh(x))


def _df_wrong(x):  # the product rule with a term dropped
    return jnp.diag((1 - jnp.tanh(x) ** 2) * x)


X = jnp.linspace(-1.0, 1.0, 4, dtype=F64)


def test_a_report_has_a_short_repr_and_its_str_is_the_whole():
    ok = mcjax.check(_f, _df, X)
    assert repr(ok) == "Report(ok: d _f / d x by _df; float64, full mode, 1 point)"
    bad = mcjax.check(_f, _df_wrong, X)
    text = repr(bad)
    assert re.fullmatch(r"Report\(FAIL: d _f / d x by _df_wrong; 4 of 16 entries over "
                        r"against jax\.jacfwd \(worst \S+ x threshold\); diagnosis: a missing "
                        r"term: .*…\)", text), text
    assert len(text) < 250 and str(bad).startswith("mcjax.check: FAIL  d _f / d x")
    assert repr([bad, ok]) == f"[{text}, {ok!r}]"  # in a container, one line each


def test_a_report_in_a_notebook_shows_its_verdict_first():
    bad = mcjax.check(_f, _df_wrong, X)
    seen = _text(bad._repr_html_())
    assert seen.startswith("FAIL d _f / d x by _df_wrong")
    order = ["jax.jacfwd", "finite differences", "Taylor remainder", "[0, 0]", "diagnosis",
             "a missing term", "threshold:"]
    assert [seen.index(word) for word in order] == sorted(seen.index(word) for word in order)
    good = _text(mcjax.check(_f, _df, X)._repr_html_())
    assert good.startswith("ok d _f / d x by _df") and "diagnosis" not in good
    fast = mcjax.check(_f, _df_wrong, X, mode="fast")
    assert _text(fast._repr_html_()).startswith("FAIL") and "projections" in fast._repr_html_()
    # the names are escaped, not read as HTML
    odd = mcjax.check(lambda x: x * 1.0, lambda x: jnp.eye(4, dtype=F64), X)
    assert "<lambda>" not in odd._repr_html_() and "&lt;lambda&gt;" in odd._repr_html_()


# -- IPython -------------------------------------------------------------------------------------------
class _Compile:
    def format_code_name(self, name):
        return ("Cell", "In[11]") if name.endswith("2862798733.py") else None


class _Formatter:
    mode = "Context"

    def structured_traceback(self, etype, value, tb):
        frames = []
        while tb is not None:
            frames.append(tb.tb_frame.f_code.co_name)
            tb = tb.tb_next
        return [f"{etype.__name__} via {' > '.join(frames)}"]


@pytest.fixture
def ipython(monkeypatch):
    """A stand-in for a running IPython: its compiler's cell names and its formatter."""
    shell = types.SimpleNamespace(compile=_Compile(), InteractiveTB=_Formatter())
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    return shell


def test_a_cell_is_named_as_ipython_names_it(ipython):
    assert _ipython.code_location("/tmp/ipykernel_7/2862798733.py", 2) == "Cell In[11], line 2"
    assert _ipython.code_location("/home/me/model.py", 12) == "model.py:12"


def test_outside_ipython_files_are_named_and_errors_keep_their_traceback(monkeypatch):
    monkeypatch.setitem(sys.modules, "IPython", None)
    assert _ipython.code_location("/tmp/ipykernel_7/2862798733.py", 2) == "2862798733.py:2"
    with pytest.raises(mcjax.ShapeError) as caught:
        mcjax.check(_f, lambda x: jnp.ones((3, 3), F64), X)
    assert not hasattr(caught.value, "_render_traceback_")


def _users_call():
    return mcjax.check(_f, lambda x: jnp.ones((3, 3), F64), X)


def test_in_ipython_an_error_of_mcjax_stops_at_the_users_call(ipython):
    with pytest.raises(mcjax.ShapeError) as caught:
        _users_call()
    (shown,) = caught.value._render_traceback_()
    assert shown.endswith("_users_call") and "check" not in shown.split(" > ")[1:]
    assert "prepare" in [f.name for f in caught.traceback]  # the error keeps its whole stack
    ipython.InteractiveTB.mode = "Verbose"  # %xmode Verbose: every frame, IPython's own way
    assert not hasattr(caught.value, "_render_traceback_")
    with pytest.raises(ValueError) as raised_here:  # an error that never passed through mcjax
        raise mcjax.ShapeError("raised by the user")
    ipython.InteractiveTB.mode = "Context"
    assert not hasattr(raised_here.value, "_render_traceback_")
