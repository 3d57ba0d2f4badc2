"""The public API: every name in ``mcjax.__all__`` and in the public submodules' ``__all__``
exists, is documented, and has its place in the API reference pages (``docs/api/*.md``, one
``::: mcjax.NAME`` or ``::: mcjax.SUBMODULE.NAME`` each); every registered forward function is
``mcjax.<its name>``.

Docstrings are read with griffe, the library mkdocstrings renders them with, so a module-level
constant counts as documented exactly when the docs show a docstring for it.
"""

from __future__ import annotations

import builtins
import importlib.util
import inspect
import os
import pkgutil
import pydoc
import re
import subprocess
import sys
import types
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import griffe
import pytest

import mcjax

ROOT = Path(__file__).resolve().parent.parent
API_PAGES = sorted((ROOT / "docs" / "api").glob("*.md"))


@pytest.fixture(scope="module")
def package():
    return griffe.load("mcjax", search_paths=[str(ROOT)], resolve_aliases=True)


SUBMODULES = ("registry", "conventions", "steps", "sharding", "checkpoints", "compilation",
              "datasets", "curvature", "testing")


def documented_names() -> list[str]:
    """The dotted names the API pages render (``data_mesh`` as ``sharding.data_mesh``)."""
    names = []
    for page in API_PAGES:
        names += re.findall(r"^::: mcjax\.([\w.]+)\s*$", page.read_text(), re.M)
    return names


KEPT_OUT_OF_STAR = [n for n in dir(mcjax) if n in dir(builtins) and not n.startswith("_")]
"""Public names left out of ``mcjax.__all__`` because ``import *`` would shadow Python's own:
``mcjax.abs``."""


def public_names() -> list[str]:
    """Every public name: the top level's, and each submodule's that the top level lacks."""
    names = list(mcjax.__all__) + KEPT_OUT_OF_STAR
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
               or r.forward.__name__ not in mcjax.__all__ + KEPT_OUT_OF_STAR]
    assert KEPT_OUT_OF_STAR == ["abs"]
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


# -- what `import mcjax` shows a user: dir(), help(), import *, types ------------------------
RULE_MODULES = tuple(f"mcjax.rules.{m.name}" for m in pkgutil.iter_modules(mcjax.rules.__path__)
                     if not m.name.startswith("_"))
REEXPORTS = ("mcjax", *(f"mcjax.{sub}" for sub in SUBMODULES))  # a public API, nothing else
PUBLIC_MODULES = (*REEXPORTS, "mcjax.rules", *RULE_MODULES)
SPHINX_ROLE = re.compile(r":(class|meth|func|data|mod|attr|obj|exc):`")


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_public_module_curates_its_all(name):
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported)), f"{name}.__all__ lists a name twice"
    assert all(hasattr(module, n) for n in exported), f"{name}.__all__ names what is not there"
    shadowed = set(exported) & set(dir(builtins))
    assert not shadowed, f"from {name} import * would shadow Python's {shadowed}"
    if name in REEXPORTS:  # dir() is the API: no leaked imports, helpers or __future__
        kept_out = {n for n in dir(builtins)}  # mcjax.abs: public, left out of import *
        leaked = [n for n in dir(module) if not n.startswith("_") and n not in exported
                  and not (isinstance(getattr(module, n), types.ModuleType)
                           and getattr(module, n).__name__ == f"{name}.{n}")
                  and not (n in kept_out and name == "mcjax")]
        assert not leaked, f"{name} leaks {leaked}; import them as private names or list them"
    else:  # a family of rules: it lists what it defines, and every rule mcjax exports
        foreign = [n for n in exported if not isinstance(getattr(module, n), types.ModuleType)
                   and getattr(getattr(module, n), "__module__", name) != name]
        assert not foreign, f"{name}.__all__ lists imports: {foreign}"


def test_import_star_gives_the_api_and_keeps_pythons_builtins():
    namespace: dict = {}
    exec("from mcjax import *", namespace)
    assert namespace.get("abs", abs) is abs and "version" not in namespace
    assert mcjax.abs is mcjax.rules.elementwise.abs  # still mcjax.abs, as documented
    assert not hasattr(mcjax, "version") and not hasattr(mcjax, "PackageNotFoundError")


def public_objects():
    """(where, object) for every class and function of every public module's __all__."""
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for n in module.__all__:
            value = getattr(module, n)
            if inspect.isclass(value) or inspect.isroutine(value):
                yield f"{name}.{n}", value


def test_public_objects_name_the_module_users_import_them_from():
    """help(), reprs, pickles and tracebacks say mcjax.check, not mcjax._check._api.check."""
    wrong = [(where, value.__module__) for where, value in public_objects()
             if any(part.startswith("_") for part in value.__module__.split("."))
             or value.__module__ not in ("mcjax", where.rsplit(".", 1)[0], *RULE_MODULES)]
    assert not wrong, wrong
    assert mcjax.check.__module__ == mcjax.Report.__module__ == mcjax.Jacobian.__module__ == "mcjax"
    assert mcjax.registry.Rule.__module__ == "mcjax.registry"
    assert mcjax.Derivative.__module__ == "mcjax"  # exported by both: the top level's


OWNED_ELSEWHERE = ("_train", f"_program{os.sep}_compile.py", f"_program{os.sep}_trace.py")
"""Files whose docstrings still hold Sphinx roles: the training work and the compile cache
(issue 22's other parts) convert them."""


def defined_in(value) -> str:
    """The file that defines a function or class (a class's ``__module__`` is the public
    one, so its methods' code says where it was written)."""
    value = inspect.unwrap(value)
    if hasattr(value, "__code__"):
        return value.__code__.co_filename
    for member in vars(value).values() if inspect.isclass(value) else ():
        member = getattr(member, "__func__", member)
        code = getattr(getattr(member, "fget", member), "__code__", None)
        if code is not None and f"{os.sep}mcjax{os.sep}" in code.co_filename:
            return code.co_filename
    for module in list(sys.modules.values()):  # a NamedTuple or dataclass: its methods are
        if getattr(module, "__name__", "").startswith("mcjax") and \
                vars(module).get(value.__name__) is value and \
                re.search(rf"^class {value.__name__}\b", inspect.getsource(module), re.M):
            return inspect.getsourcefile(module) or ""  # generated: the class statement says
    return inspect.getsourcefile(value) or ""


def owned_elsewhere(value) -> bool:
    return any(f"{os.sep}mcjax{os.sep}{part}" in defined_in(value) for part in OWNED_ELSEWHERE)


def test_help_reads_without_sphinx_roles():
    """help() prints docstrings as written: they name other objects as ``mcjax.NAME`` code,
    which the docs turn into links (docs/griffe_sphinx_roles.py), never as :func:`...`."""
    text = pydoc.render_doc(mcjax.check, renderer=pydoc.plaintext)
    assert text.startswith("Python Library Documentation: function check in module mcjax\n")
    assert not SPHINX_ROLE.search(text) and "mcjax._" not in text
    from mcjax._core._tolerance import FULL_MODE_MAX_ENTRIES, FULL_MODE_MAX_INPUTS

    assert f"{FULL_MODE_MAX_ENTRIES:,} entries" in text and f"{FULL_MODE_MAX_INPUTS:,} coord" in text
    with_roles = []
    for name in PUBLIC_MODULES:
        if SPHINX_ROLE.search(importlib.import_module(name).__doc__ or ""):
            with_roles.append(name)
    for where, value in public_objects():
        if owned_elsewhere(value):
            continue
        members = [value] + ([m for n, m in vars(value).items() if not n.startswith("_")]
                             if inspect.isclass(value) else [])
        if any(SPHINX_ROLE.search(inspect.getdoc(m) or "") for m in members):
            with_roles.append(where)
    assert not with_roles, f"docstrings with Sphinx roles, raw in help(): {with_roles}"


def test_py_typed_ships_and_a_users_code_type_checks():
    """mcjax ships py.typed (PEP 561), so type checkers read its annotations; a user's code
    using the checker, derive, the registry, the conventions and mcjax.testing type-checks
    in pyright's strict mode with nothing unknown (tests/typed_user_code.py)."""
    assert (ROOT / "mcjax" / "py.typed").is_file()
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    assert "mcjax" in wheel["targets"]["wheel"]["only-include"]  # the whole folder, py.typed too
    ignored = subprocess.run(["git", "check-ignore", "-q", "mcjax/py.typed"], cwd=ROOT)
    assert ignored.returncode == 1, "py.typed is git-ignored: hatch would leave it out"
    if importlib.util.find_spec("pyright") is None:
        pytest.skip("pyright is not installed (the test extra has it)")
    run = subprocess.run([sys.executable, "-m", "pyright", "--pythonpath", sys.executable,
                          "tests/typed_user_code.py"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
