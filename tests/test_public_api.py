"""The public API: every name in ``mcjax.__all__`` exists, is documented, and has its place in
the API reference pages (``docs/api/*.md``, one ``::: mcjax.NAME`` each).

Docstrings are read with griffe, the library mkdocstrings renders them with, so a module-level
constant counts as documented exactly when the docs show a docstring for it.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path

import griffe
import pytest

import mcjax

ROOT = Path(__file__).resolve().parent.parent
API_PAGES = sorted((ROOT / "docs" / "api").glob("*.md"))


@pytest.fixture(scope="module")
def package():
    return griffe.load("mcjax", search_paths=[str(ROOT)], resolve_aliases=True)


def documented_names() -> list[str]:
    """The names the API pages render, in page order."""
    names = []
    for page in API_PAGES:
        names += re.findall(r"^::: mcjax\.(\w+)\s*$", page.read_text(), re.M)
    return names


def test_all_is_importable_and_unique():
    assert len(mcjax.__all__) == len(set(mcjax.__all__)), "a name is listed twice in __all__"
    missing = [name for name in mcjax.__all__ if not hasattr(mcjax, name)]
    assert not missing, f"in mcjax.__all__ but not importable: {missing}"
    namespace = {}
    exec("from mcjax import *", namespace)
    assert set(mcjax.__all__) <= set(namespace)


@pytest.mark.parametrize("name", mcjax.__all__)
def test_every_public_name_has_a_docstring(package, name):
    docstring = package[name].docstring
    assert docstring is not None and docstring.value.strip(), (
        f"mcjax.{name} has no docstring; the API reference would show nothing for it"
    )


@pytest.mark.parametrize("name", [n for n in mcjax.__all__ if inspect.isclass(getattr(mcjax, n))])
def test_public_methods_are_documented(name):
    """Methods of public classes are documented, here or on the base class they override."""
    cls = getattr(mcjax, name)
    undocumented = [
        attr for attr, value in vars(cls).items()
        if not attr.startswith("_") and callable(inspect.getattr_static(cls, attr))
        and not inspect.getdoc(getattr(cls, attr))
    ]
    assert not undocumented, f"mcjax.{name} has undocumented methods: {undocumented}"


def test_every_public_name_has_a_place_in_the_api_pages():
    names = documented_names()
    missing = [name for name in mcjax.__all__ if name not in names]
    assert not missing, f"add '::: mcjax.NAME' to a page under docs/api/ for: {missing}"
    twice = sorted({name for name in names if names.count(name) > 1})
    assert not twice, f"documented on two API pages: {twice}"
    # a public submodule (mcjax.testing) has its own page without being in __all__
    stale = [name for name in names if name not in mcjax.__all__
             and (name.startswith("_") or importlib.util.find_spec(f"mcjax.{name}") is None)]
    assert not stale, f"the API pages document names that are not public: {stale}"


def test_api_pages_are_in_the_nav():
    config = (ROOT / "mkdocs.yml").read_text()
    for page in API_PAGES:
        assert f"api/{page.name}" in config, f"docs/api/{page.name} is not in mkdocs.yml's nav"
