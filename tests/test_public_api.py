"""The public API: every name in ``mcjax.__all__`` and in the public submodules' ``__all__``
exists, is documented, and has its place in the API reference pages (``docs/api/*.md``, one
``::: mcjax.NAME`` or ``::: mcjax.SUBMODULE.NAME`` each); every registered forward function is
``mcjax.<its name>``.

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


SUBMODULES = ("registry", "conventions", "steps", "sharding", "checkpoints", "compilation",
              "datasets", "testing")


def documented_names() -> list[str]:
    """The dotted names the API pages render (``data_mesh`` as ``sharding.data_mesh``)."""
    names = []
    for page in API_PAGES:
        names += re.findall(r"^::: mcjax\.([\w.]+)\s*$", page.read_text(), re.M)
    return names


def public_names() -> list[str]:
    """Every public name: the top level's, and each submodule's that the top level lacks."""
    names = list(mcjax.__all__)
    for sub in SUBMODULES:
        module = importlib.import_module(f"mcjax.{sub}")
        names += [f"{sub}.{n}" for n in module.__all__
                  if not (n in mcjax.__all__ and getattr(mcjax, n) is getattr(module, n))]
    return names


def resolve(dotted: str):
    obj = mcjax
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def test_every_registered_function_is_exported_by_its_name():
    missing = [r.name for r in mcjax.registry.REGISTRY
               if getattr(mcjax, r.forward.__name__, None) is not r.forward
               or r.forward.__name__ not in mcjax.__all__]
    assert not missing, f"registered but not mcjax.<name>: {missing}"


def test_the_top_level_holds_no_infrastructure():
    """Meshes, checkpoints, the cache, data loaders and the step builders live in submodules."""
    for name in ("data_mesh", "shard_batch", "restore_checkpoint", "enable_compilation_cache",
                 "neuron_data", "make_train_step", "tolerance", "REGISTRY"):
        assert name not in mcjax.__all__ and not hasattr(mcjax, name), name


def test_a_differentiable_is_called_like_its_function():
    chain = mcjax.vector_chain_rule(mcjax.sin, mcjax.tanh)
    x = mcjax.sin.__globals__["jnp"].array([0.3, -1.0])
    assert (chain(x) == chain.forward(x)).all()


def test_all_is_importable_and_unique():
    assert len(mcjax.__all__) == len(set(mcjax.__all__)), "a name is listed twice in __all__"
    missing = [name for name in mcjax.__all__ if not hasattr(mcjax, name)]
    assert not missing, f"in mcjax.__all__ but not importable: {missing}"
    namespace = {}
    exec("from mcjax import *", namespace)
    assert set(mcjax.__all__) <= set(namespace)


@pytest.mark.parametrize("name", public_names())
def test_every_public_name_has_a_docstring(package, name):
    docstring = package[name].docstring
    assert docstring is not None and docstring.value.strip(), (
        f"mcjax.{name} has no docstring; the API reference would show nothing for it"
    )


@pytest.mark.parametrize("name", [n for n in public_names() if inspect.isclass(resolve(n))])
def test_public_methods_are_documented(name):
    """Methods of public classes are documented, here or on the base class they override."""
    cls = resolve(name)
    undocumented = [
        attr for attr, value in vars(cls).items()
        if not attr.startswith("_") and callable(inspect.getattr_static(cls, attr))
        and not inspect.getdoc(getattr(cls, attr))
    ]
    assert not undocumented, f"mcjax.{name} has undocumented methods: {undocumented}"


def test_every_public_name_has_a_place_in_the_api_pages():
    names = documented_names()
    missing = [name for name in public_names() if name not in names  # or its whole module
               and name.split(".")[0] not in names]
    assert not missing, f"add '::: mcjax.NAME' to a page under docs/api/ for: {missing}"
    twice = sorted({name for name in names if names.count(name) > 1})
    assert not twice, f"documented on two API pages: {twice}"
    # a module (mcjax.rules, mcjax.testing) may have a page of its own
    stale = [name for name in names if name not in public_names()
             and (name.startswith("_") or importlib.util.find_spec(f"mcjax.{name}") is None)]
    assert not stale, f"the API pages document names that are not public: {stale}"


def test_api_pages_are_in_the_nav():
    config = (ROOT / "mkdocs.yml").read_text()
    for page in API_PAGES:
        assert f"api/{page.name}" in config, f"docs/api/{page.name} is not in mkdocs.yml's nav"
