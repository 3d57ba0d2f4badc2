r"""Names for ``f``'s arguments and constants, as a person writes them.

An argument keeps the name of its parameter (``def neuron(w, x, b)`` gives ``w``, ``x``,
``b``); a leaf of a pytree argument takes its dictionary key and the (1-based) list position
as a subscript (``params[0]["W"]`` is ``W₁``, LaTeX ``W_{1}``); an array ``f`` closes over
keeps the name it has there.  In LaTeX a lower-case vector is bold ($\mathbf{x}$), as in the
paper.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._jacobian import _expr as E
from mcjax._jacobian._print import tex_text, upright
from mcjax._primitives._linear import concrete

_SUBSCRIPT = str.maketrans("0123456789,", "₀₁₂₃₄₅₆₇₈₉,")
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "eta", "theta", "lambda", "mu", "nu",
          "sigma", "tau", "phi", "psi", "omega", "rho", "xi", "kappa"}


def latex_name(base: str, ndim: int) -> str:
    """``x`` -> ``\\mathbf{x}`` for a vector, ``W`` -> ``W``, ``gamma`` -> ``\\gamma``."""
    if base in _GREEK:
        core_name = "\\" + base
    elif len(base) == 1 or (len(base) == 2 and base[1].isdigit()):
        core_name = tex_text(base)
    else:
        core_name = upright(base)
    if ndim == 1 and base[:1].islower() and base not in _GREEK:
        return "\\mathbf{" + core_name + "}"
    return core_name


def parameter_names(f, count: int) -> list[str]:
    """The names of ``f``'s first ``count`` positional parameters (``x1, x2`` if unknown)."""
    try:
        parameters = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    names = []
    for p in parameters:
        if p.kind == p.VAR_POSITIONAL:
            names += [f"{p.name}{i + 1}" for i in range(count - len(names))]
            break
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
    if len(names) < count:
        default = ["x"] if count == 1 else [f"x{i + 1}" for i in range(count)]
        names += default[len(names):count]
    return names[:count]


_WRAPPERS = {"value", "raw_value"}
"""Attribute names of the containers frameworks wrap an array in (``nnx.Param``'s ``value``):
no part of a name."""


def _parts(arg_name: str, path) -> list[str | int]:
    """The path as names and (1-based) list positions, from the argument down."""
    parts: list[str | int] = [arg_name]
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(key.idx + 1)
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(key.key + 1)
    while len(parts) > 1 and parts[-1] in _WRAPPERS:
        parts.pop()
    return parts


def _name_from(parts: list[str | int], depth: int) -> tuple[str, str]:
    """The text and LaTeX of a leaf named by its last ``depth`` names (``W``, then
    ``layer2.W``) and every list position on its path as a subscript (``W₁``)."""
    names = [p for p in parts if isinstance(p, str)]
    indices = [p for p in parts if isinstance(p, int)]
    base = names[-1]
    head = ".".join(names[-depth:-1]) if depth > 1 else ""
    subscript = ",".join(map(str, indices))
    text = (f"{head}.{base}" if head else base) + subscript.translate(_SUBSCRIPT)
    latex = latex_name(base, 0)
    if head:
        latex = upright(head + "." + base)
    if subscript:
        latex += "_{" + subscript + "}"
    return text, latex


def unique_names(leaves: list[tuple[list[str | int], int]]) -> list[tuple[str, str]]:
    """One name per leaf: its own name (``W₁``) where that is unique, else as many enclosing
    names as tell it from the others (two linen kernels: ``Dense_0.kernel``,
    ``Dense_1.kernel``), else its whole path.  ``leaves`` holds each leaf's path parts and
    ``ndim``."""
    depths = [1] * len(leaves)
    while True:
        names = [_name_from(parts, d)[0] for (parts, _), d in zip(leaves, depths)]
        clash = {n for n in names if names.count(n) > 1}
        if not clash:
            break
        grown = False
        for i, n in enumerate(names):
            available = sum(isinstance(p, str) for p in leaves[i][0])
            if n in clash and depths[i] < available:
                depths[i] += 1
                grown = True
        if not grown:  # the same path twice (cannot happen in one pytree): number them
            seen: dict[str, int] = {}
            out = []
            for (parts, ndim), d in zip(leaves, depths):
                text, latex = _name_from(parts, d)
                seen[text] = seen.get(text, 0) + 1
                k = seen[text]
                out.append((text if k == 1 else f"{text}#{k}", latex if k == 1 else
                            f"{latex}^{{({k})}}"))
            return out
    out = []
    for (parts, ndim), d in zip(leaves, depths):
        text, latex = _name_from(parts, d)
        if d == 1:  # a bare name: bold for a lower-case vector, as in the paper
            names = [p for p in parts if isinstance(p, str)]
            indices = [p for p in parts if isinstance(p, int)]
            latex = latex_name(names[-1], ndim) + (
                "_{" + ",".join(map(str, indices)) + "}" if indices else "")
        out.append((text, latex))
    return out


def argument_exprs(f, args: tuple) -> list[list[E.Expr]]:
    """One expression per leaf of each argument: ``[[W], [x], [b]]``."""
    leaves, shapes, counts = [], [], []
    for name, a in zip(parameter_names(f, len(args)), args):
        flat = jax.tree_util.tree_flatten_with_path(a)[0]
        counts.append(len(flat))
        for path, leaf in flat:
            leaves.append((_parts(name, path), np.ndim(leaf)))
            shapes.append(np.shape(leaf))
    named = iter(zip(unique_names(leaves), shapes))
    return [[E.arg(text, latex, shape) for (text, latex), shape in
             (next(named) for _ in range(n))] for n in counts]


def _closure_arrays(f) -> dict[int, tuple[list[str | int], int]]:
    """The arrays ``f`` can reach by name — its globals and closure variables, the leaves of
    the pytrees among them (a ``params`` dict, a model), a ``functools.partial``'s arguments,
    a bound method's object — by identity, with their path parts."""
    scopes: list[tuple[str, object]] = []
    target = f
    while isinstance(target, functools.partial):
        scopes += [(f"arg{i + 1}", v) for i, v in enumerate(target.args)]
        scopes += list(target.keywords.items())
        target = target.func
    if inspect.ismethod(target):
        scopes.append(("self", target.__self__))
        target = target.__func__
    try:
        closure = inspect.getclosurevars(target)
        scopes += list(closure.nonlocals.items()) + list(closure.globals.items())
    except (TypeError, ValueError):
        pass
    found: dict[int, tuple[list[str | int], int]] = {}
    for name, value in scopes:
        if isinstance(value, (jax.Array, np.ndarray)):
            found.setdefault(id(value), ([name], jnp.ndim(value)))
            continue
        if inspect.ismodule(value) or callable(value) and not hasattr(value, "__dict__"):
            continue
        try:
            flat = jax.tree_util.tree_flatten_with_path(value)[0]
        except Exception:  # noqa: BLE001 - not a pytree JAX can flatten: nothing to name
            continue
        for path, leaf in flat:
            if isinstance(leaf, (jax.Array, np.ndarray)) and path:
                found.setdefault(id(leaf), (_parts(name, path), jnp.ndim(leaf)))
    return found


def constant_exprs(f, consts: list) -> list[E.Expr]:
    """Names for the arrays ``f`` closes over: the name (or pytree path) by which ``f``
    reaches each; ``C₁, C₂, ...`` for one it reaches by none (its formula lists them with
    their shapes); a few entries written out for a small unnamed one (a label)."""
    known = _closure_arrays(f)
    named = [known[id(c)] for c in consts if id(c) in known]
    names = dict(zip([id(c) for c in consts if id(c) in known], unique_names(named)))
    unnamed = [c for c in consts if id(c) not in known and jnp.size(c) > 4]
    exprs = []
    for c in consts:
        if id(c) in names:
            text, latex = names[id(c)]
            exprs.append(E.constant(text, latex, jnp.shape(c)))
        elif jnp.size(c) <= 4:  # a label, a few weights: their entries
            exprs.append(written(c))
        else:
            k = next(i for i, u in enumerate(unnamed) if u is c)
            text = "C" if len(unnamed) == 1 else "C" + str(k + 1).translate(_SUBSCRIPT)
            latex = "C" if len(unnamed) == 1 else f"C_{{{k + 1}}}"
            exprs.append(E.constant(text, latex, jnp.shape(c)))
    return exprs


def written(value) -> E.Expr:
    """A constant written into the program as a formula writes it: a number, a few entries,
    or ``C``."""
    if jnp.issubdtype(jnp.result_type(value), jnp.complexfloating):
        return E.constant("C", "C", jnp.shape(value))  # the formulas' numbers are real
    if jnp.ndim(value) == 0 and concrete(value):
        return E.num(float(value))
    if jnp.size(value) <= 4 and concrete(value):
        # NumPy, not jnp: under jax.jit a jnp operation on a concrete array is traced
        return E.Expr("const", (), tuple(float(v) for v in np.ravel(np.asarray(value))),
                      jnp.shape(value))
    return E.constant("C", "C", jnp.shape(value))
