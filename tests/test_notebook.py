"""mcjax in a notebook: docs/notebooks/tour.ipynb, executed in a Jupyter kernel (nbclient and
ipykernel, the test extra), shows what a notebook user sees: a Jacobian's typeset formula, a
failing report's verdict first, a progress bar that ends at the last epoch, an error that
names the cell and stops at the user's call."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
TOUR = ROOT / "docs" / "notebooks" / "tour.ipynb"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _text(html: str) -> str:
    """What a reader sees of ``html``: the tags dropped, the spaces collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    """The tour, executed in a fresh kernel that imports this checkout's mcjax."""
    nb = nbformat.read(TOUR, as_version=4)
    env_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env_path]))
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path_factory.mktemp("tour"))}})
    try:
        try:
            client.km = client.create_kernel_manager()
            client.start_new_kernel()
            client.start_new_kernel_client()
        except Exception as error:  # noqa: BLE001 - no kernel here: nothing to test
            pytest.skip(f"no Jupyter kernel could start ({type(error).__name__}: {error})")
        client.execute()
    finally:
        if env_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = env_path
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _data(cell, mime: str) -> list[str]:
    return [out["data"][mime] for out in cell.outputs if mime in out.get("data", {})]


def _cell(cells, start: str):
    return next(c for c in cells if c.source.startswith(start))


def test_a_jacobian_shows_its_structure_shapes_and_typeset_formula(tour):
    (markdown,) = _data(_cell(tour, "def layer"), "text/markdown")
    assert markdown.startswith("**Composed** Jacobian `(8,) ← (8, 4)`, float32")
    assert (r"$$\operatorname{diag}(\mathbb{1}[\mathbf{z} > 0])\,(I_{8} \otimes "
            r"\mathbf{x}^\top),\quad \mathbf{z} = W\,\mathbf{x} + \mathbf{b}$$"
            in markdown.replace("\n", ""))
    assert "├─ Diagonal  (8,) ← (8,)" in markdown


def test_a_report_shows_its_verdict_first(tour):
    (ok,) = _data(_cell(tour, "def f(x)"), "text/html")
    assert _text(ok).startswith("ok d f / d x by df")
    cell = _cell(tour, "def df_wrong")
    (html,) = _data(cell, "text/html")
    seen = _text(html)
    assert seen.startswith("FAIL d f / d x by df_wrong")
    # the comparisons, then the diagnosis, which names the slip
    assert seen.index("jax.jacfwd") < seen.index("diagnosis") < seen.index("a missing term")
    defined = _cell(tour, "def f(x)").execution_count  # the slip's line, in its cell
    assert f"`jnp.tanh(x) * x` (Cell In[{defined}], line 2)" in seen
    (plain,) = _data(cell, "text/plain")
    assert plain.startswith("Report(FAIL: d f / d x by df_wrong;") and len(plain) < 300


def test_a_progress_bar_ends_at_its_last_epoch_and_a_result_shows_a_table(tour):
    cell = _cell(tour, "(X, y), _ = mcjax.datasets")
    texts = _data(cell, "text/plain")
    assert len(texts) == 2, texts  # the bar's one output, replaced epoch by epoch, and the result
    bar, result = texts
    assert re.match(r"epoch 5/5 ━+ loss [\d.]+ ", bar), bar
    assert result.startswith("TrainResult(epoch=5, step=40, ")
    (html,) = _data(cell, "text/html")[1:]
    assert html.count("<tr>") == 1 + 5
    if "<img" in html:  # matplotlib in the kernel: a small plot beside the table
        assert "src='data:image/png;base64," in html


def test_an_error_names_the_cell_and_stops_at_the_call(tour):
    cell = _cell(tour, "def g(x)")
    (error,) = [out for out in cell.outputs if out.output_type == "error"]
    assert error.ename == "TraceError"
    count = cell.execution_count
    assert f"f cannot be traced at Cell In[{count}], line 2 (`if x[0] > 0:" in error.evalue
    frames = ANSI.sub("", "\n".join(error.traceback))
    assert f"Cell In[{count}], line 6" in frames
    assert "mcjax" + os.sep + "_" not in frames and "site-packages" not in frames
