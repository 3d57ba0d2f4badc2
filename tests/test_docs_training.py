"""docs/training.md: its ```python blocks run, top to bottom, as one script."""

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


def test_the_page_has_code_and_the_images_it_shows():
    text = PAGE.read_text()
    assert len(python_blocks(text)) >= 5
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (PAGE.parent / image).is_file(), image


def test_the_code_runs_as_one_script(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    script = "\n".join(python_blocks(PAGE.read_text()))
    exec(compile(script, str(PAGE), "exec"), {"__name__": "docs_training"})
    out = capsys.readouterr().out
    assert "test accuracy" in out and "resumed from ckpt-00000003.npz" in out
