"""docs/scaling.md names only functions mcjax has (its code runs in tests/test_docs.py)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "scaling.md"


# The page's code runs (as a reader would, on one device) in tests/test_docs.py, with every
# other page; its asserts check the sharded run and the resume on one device.


def test_the_page_names_no_function_mcjax_lacks():
    import mcjax

    named = set(re.findall(r"mcjax\.([a-z_]+)\(", PAGE.read_text()))
    assert named and not [n for n in named if not hasattr(mcjax, n)]
