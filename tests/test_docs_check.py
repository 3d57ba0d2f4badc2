"""docs/check.md: its python code blocks run top to bottom as one script."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "check.md"


def test_check_page_code_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 5
    exec(compile("\n".join(blocks), str(DOC), "exec"), {"__name__": "docs_check"})
    assert "FAIL" in capsys.readouterr().out
