"""docs/scaling.md: its Python blocks run, top to bottom, as one script on one CPU device."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "scaling.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_python_blocks_of_the_scaling_page_run_as_one_script(tmp_path):
    blocks = python_blocks(PAGE.read_text())
    assert len(blocks) >= 8
    script = tmp_path / "scaling.py"
    script.write_text("\n\n".join(blocks))
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("XLA_FLAGS", None)  # one device, as a reader's laptop
    done = subprocess.run([sys.executable, "-W", "error", str(script)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "1 device(s)" in done.stdout and "resumed from ckpt-00000002.npz" in done.stdout


def test_the_page_names_no_function_mcjax_lacks():
    import mcjax

    named = set(re.findall(r"mcjax\.([a-z_]+)\(", PAGE.read_text()))
    assert named and not [n for n in named if not hasattr(mcjax, n)]
