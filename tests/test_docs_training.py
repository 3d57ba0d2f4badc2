"""docs/training.md: its ```python blocks run, top to bottom, as one script."""

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


def test_the_page_has_code_and_the_images_it_shows():
    text = PAGE.read_text()
    assert len(python_blocks(text)) >= 5
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (PAGE.parent / image).is_file(), image


# The page's code runs (as a reader would, in float32) in tests/test_docs.py, with every other
# page; its asserts check the accuracy and the bit-exact resume.
