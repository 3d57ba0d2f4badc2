"""The floors pyproject.toml declares are the versions .ci/run tests: .ci/oldest.txt pins each at
its floor, and .ci/oldest-subset.txt names test files that exist (docs/index.md, "Supported JAX
versions")."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
# what .ci/oldest installs besides mcjax's dependencies: these of the test extra, and the
# lineax extra whole
TESTED = ("pytest", "pytest-xdist", "hypothesis", "equinox", "flax")


def _lines(name: str) -> list[str]:
    text = (ROOT / ".ci" / name).read_text()
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def _floors(requirements: list[str]) -> dict[str, Version]:
    floors = {}
    for text in requirements:
        requirement = Requirement(text)
        lower = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        assert lower, f"pyproject.toml: {text!r} has no floor (>=)"
        floors[canonicalize_name(requirement.name)] = lower[0]
    return floors


def test_every_floor_is_pinned_in_the_oldest_versions_and_nothing_else_is():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors = _floors(project["dependencies"])
    extras = project["optional-dependencies"]
    tested = _floors([r for r in extras["test"] if canonicalize_name(Requirement(r).name) in TESTED])
    tested.update(_floors(extras["lineax"]))
    pins = {}
    for line in _lines("oldest.txt"):
        name, _, version = line.partition("==")
        assert version, f".ci/oldest.txt: {line!r}; expected name==version"
        pins[canonicalize_name(name)] = Version(version)
    assert len(tested) == len(TESTED) + 1 and pins == {**floors, **tested}


def test_the_oldest_versions_subset_names_test_files_that_exist():
    subset = _lines("oldest-subset.txt")  # paths, or pytest node ids (path::test)
    assert len(subset) == len(set(subset))
    paths = [entry.split("::")[0] for entry in subset]
    missing = [path for path in paths if not (ROOT / path).is_file()]
    assert not missing and all(p.startswith("tests/test_") for p in paths), missing
    tests = [e.split("::") for e in subset if "::" in e]
    absent = [t for t in tests if f"def {t[1]}(" not in (ROOT / t[0]).read_text()]
    assert not absent, f"no such tests: {absent}"
    assert "tests/test_primitives.py" in subset  # the primitive table runs on both JAX versions
