"""mcjax's pytest plugin as a user meets it: pytest finds it through its ``pytest11`` entry
point, and a slip in a user's test file shows mcjax's report, diagnosis included, at the
user's own line.  The user's test file is the code of docs/testing.md, run by pytest in a
subprocess; the output that page shows must be what pytest prints."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "testing.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", PAGE.read_text(), flags=re.M | re.S)


def run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """A fresh interpreter with this checkout first on the path, and none of this pytest
    run's own settings (xdist's worker variables, PYTEST_ADDOPTS ...); it keeps XLA_FLAGS
    (conftest.py's compile-time options)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env["COLUMNS"] = "250"  # the short summary line is not cut to the terminal's width
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_plugin_is_a_pytest11_entry_point_that_imports_neither_mcjax_nor_jax(tmp_path):
    points = [p for p in importlib.metadata.entry_points(group="pytest11") if p.name == "mcjax"]
    assert [p.value for p in points] == ["_mcjax_pytest"], "reinstall: pip install -e ."
    # pytest imports every installed plugin at start-up, in every project
    done = run(["-c", "import sys, _mcjax_pytest; "
                      "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mcjax', 'jax')))"],
               tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_project")
    (folder / "test_derivatives.py").write_text("\n\n".join(blocks("python")))
    return run(["-m", "pytest", "-p", "no:cacheprovider", "--hypothesis-seed=0",
                "test_derivatives.py"], folder)


def test_a_slip_in_a_users_test_shows_the_report_and_its_diagnosis(user_run):
    out = user_run.stdout
    assert user_run.returncode == 1, out[-3000:] + user_run.stderr[-3000:]
    # found through the entry point: nothing on the command line names it
    assert re.search(r"^plugins: .*\bmcjax-", out, re.M), out[:2000]
    assert "1 failed, 2 passed" in out  # the slip fails; the property tests pass
    # the page shows what pytest prints, line for line ("..." stands for lines left out)
    shown = [line.rstrip() for line in blocks("text")[0].splitlines()
             if line.strip() not in ("", "E ...") and not line.startswith("=")
             and not re.fullmatch(r"E\s+\.\.\.", line)]
    missing = [line for line in shown if line not in out.splitlines()]
    assert not missing, f"not in pytest's output: {missing}\n\n{out[-4000:]}"
    assert any(line.startswith("E         diagnosis: a constant factor") for line in shown)
    # the traceback ends at the user's call: no frame inside mcjax
    assert f"mcjax{os.sep}_check" not in out, out[-4000:]
