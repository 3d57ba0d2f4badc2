r"""Names for ``f``'s arguments and constants, as a person writes them.

An argument keeps the name of its parameter (``def neuron(w, x, b)`` gives ``w``, ``x``,
``b``); a leaf of a pytree argument takes its dictionary key and the (1-based) list position
as a subscript (``params[0]["W"]`` is ``W₁``, LaTeX ``W_{1}``); an array ``f`` closes over
keeps the name it has there.  In LaTeX a lower-case vector is bold ($\mathbf{x}$), as in the
paper.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._jacobian import _expr as E
from mcjax._program.primitives._linear import concrete

_SUBSCRIPT = str.maketrans("0123456789,", "₀₁₂₃₄₅₆₇₈₉,")
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "eta", "theta", "lambda", "mu", "nu",
          "sigma", "tau", "phi", "psi", "omega", "rho", "xi", "kappa"}


def latex_name(base: str, ndim: int) -> str:
    """``x`` -> ``\\mathbf{x}`` for a vector, ``W`` -> ``W``, ``gamma`` -> ``\\gamma``."""
    if base in _GREEK:
        core_name = "\\" + base
    elif len(base) == 1 or (len(base) == 2 and base[1].isdigit()):
        core_name = base
    else:
        core_name = "\\mathrm{" + base.replace("_", "\\_") + "}"
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


def _leaf_name(arg_name: str, path) -> tuple[str, tuple[int, ...]]:
    base, indices = arg_name, []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            base = str(key.key)
        elif isinstance(key, jax.tree_util.GetAttrKey):
            base = key.name
        elif isinstance(key, jax.tree_util.SequenceKey):
            indices.append(key.idx + 1)
    return base, tuple(indices)


def argument_exprs(f, args: tuple) -> list[list[E.Expr]]:
    """One expression per leaf of each argument: ``[[W], [x], [b]]``."""
    names = parameter_names(f, len(args))
    out, seen = [], {}
    for name, a in zip(names, args):
        exprs = []
        for path, leaf in jax.tree_util.tree_flatten_with_path(a)[0]:
            base, indices = _leaf_name(name, path)
            text = base + "".join(str(i) for i in indices).translate(_SUBSCRIPT) \
                if len(indices) <= 1 else base + ",".join(map(str, indices)).translate(_SUBSCRIPT)
            if text in seen:  # two leaves would print alike: spell the whole path
                text = name + jax.tree_util.keystr(path)
            seen[text] = True
            ndim = np.ndim(leaf)
            latex = latex_name(base, ndim)
            if indices:
                latex += "_{" + ",".join(map(str, indices)) + "}"
            exprs.append(E.arg(text, latex, np.shape(leaf)))
        out.append(exprs)
    return out


def constant_exprs(f, consts: list) -> list[E.Expr]:
    """Names for the arrays ``f`` closes over (by identity in its closure and globals)."""
    known = {}
    try:
        closure = inspect.getclosurevars(f)
        for scope in (closure.globals, closure.nonlocals):
            for name, value in scope.items():
                known.setdefault(id(value), name)
    except (TypeError, ValueError):
        pass
    exprs = []
    for i, c in enumerate(consts):
        if id(c) not in known and jnp.size(c) <= 4:  # a label, a few weights: their entries
            exprs.append(written(c))
            continue
        name = known.get(id(c)) or ("C" if len(consts) == 1 else f"C{i + 1}")
        exprs.append(E.constant(name, latex_name(name, jnp.ndim(c)), jnp.shape(c)))
    return exprs


def written(value) -> E.Expr:
    """A constant written into the program as a formula writes it: a number, a few entries,
    or ``C``."""
    if jnp.ndim(value) == 0 and concrete(value):
        return E.num(float(value))
    if jnp.size(value) <= 4 and concrete(value):
        return E.Expr("const", (), tuple(float(v) for v in jnp.ravel(value)), jnp.shape(value))
    return E.constant("C", "C", jnp.shape(value))
