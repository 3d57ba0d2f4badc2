"""Every example in a docstring of mcjax runs, and prints what it says (doctest)."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax


def _globals_of(obj):
    """The namespace of the module that defines ``obj``: its code's globals, which stay put
    when ``__module__`` is set to the public module (``mcjax.derive`` says ``mcjax``)."""
    if inspect.isfunction(obj):
        return obj.__globals__
    if inspect.isclass(obj):
        for member in vars(obj).values():
            member = getattr(getattr(member, "__func__", member), "fget", None) or \
                getattr(member, "__func__", member)
            if inspect.isfunction(member) and member.__qualname__.startswith(
                    obj.__qualname__ + ".") and member.__globals__["__name__"].startswith("mcjax"):
                return member.__globals__  # (a NamedTuple's _replace has a namespace of its own)
        for module in list(sys.modules.values()):  # no method of its own (a NamedTuple)
            if getattr(module, "__name__", "").startswith("mcjax") and \
                    vars(module).get(obj.__name__) is obj and \
                    re.search(rf"^class {obj.__name__}\b", inspect.getsource(module), re.M):
                return vars(module)
    return None


class ByDefinition(doctest.DocTestFinder):
    """Examples of the objects a module defines, whatever their ``__module__`` says."""

    def _from_module(self, module, object):
        defined_in = _globals_of(object)
        if defined_in is not None:
            return defined_in is module.__dict__
        return super()._from_module(module, object)


def _modules_with_examples():
    for info in pkgutil.walk_packages(mcjax.__path__, "mcjax."):
        module = importlib.import_module(info.name)
        tests = ByDefinition().find(module, globs={})
        if any(t.examples for t in tests):
            yield info.name


MODULES = sorted(_modules_with_examples())


def test_the_examples_are_found():
    assert len(MODULES) >= 6
    # defined in private modules, they report __module__ == "mcjax": still found where defined
    assert {"mcjax._derive._api", "mcjax._registry", "mcjax._jacobian._operations"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    globs = {"jax": jax, "jnp": jnp, "np": np, "mcjax": mcjax, **vars(module)}
    with jax.enable_x64(False):  # the examples show what a user sees: float32 by default
        runner = doctest.DocTestRunner(
            verbose=False, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        for test in ByDefinition().find(module, globs=globs):
            runner.run(test)
        failed, attempted = runner.summarize(verbose=False)
    assert attempted and not failed, f"{name}: {failed} of {attempted} examples failed"
