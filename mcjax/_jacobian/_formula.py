r"""A structured Jacobian written as the formula a person derives.

Each structure has its notation, registered beside its class with ``write``:
$\operatorname{diag}(\mathbf{d})$, $I$, $\mathbf{1}^\top$, $I_m \otimes \mathbf{x}^\top$, $W$,
products by juxtaposition (the chain rule), sums (the total-derivative rule).  ``formula``
adds the definitions of the named sub-expressions after a comma:
``diag(1[z > 0]) (I_8 ⊗ xᵀ), z = W x + b``.  ``structure`` draws the tree of classes, for
the command line.

This module knows no class: it reads a Jacobian through its protocol (``symbols``, the names
of its arrays, its ``placeholder`` letter, ``mcjax.Jacobian.children``), so that the
classes, which print themselves through it, sit above it.
"""

from __future__ import annotations

import functools

from mcjax._jacobian import _expr as E
from mcjax._jacobian._print import (
    ATOM,
    PRODUCT,
    Printer,
    choose_names,
    definitions,
    legend,
    upright,
)


def symbols_of(J) -> tuple[E.Expr, ...]:
    """The expressions of ``J``'s arrays; placeholders (``d``, ``x``, ``W``) for a Jacobian
    built by hand, which has none."""
    if J.symbols is not None:
        return J.symbols
    arrays = [getattr(J, a) for a in J._arrays]
    return tuple(E.arg(J.placeholder, J.placeholder, getattr(a, "shape", ())) for a in arrays)


@functools.singledispatch
def roots(J) -> list[E.Expr]:
    """The expressions ``J``'s formula is written with (the candidates for a name)."""
    return list(symbols_of(J)) if J._arrays else []


@functools.singledispatch
def for_printing(J):
    """``J`` as it is printed: the same map with its expressions in their simplest written
    form (a product or a sum registers how; a single structure prints as it is)."""
    return J


@functools.singledispatch
def write(J, p: Printer) -> tuple[str, int]:
    """``(text, precedence)`` of ``J`` in the paper's notation; each class registers its own."""
    return (f"J_{{{upright(J.kind)}}}" if p.latex else f"J_{J.kind}"), ATOM


def formula(J, latex: bool = False) -> str:
    """``J`` in the paper's notation (text or LaTeX), with its named sub-expressions defined."""
    J = for_printing(J)
    names, order = choose_names(roots(J))
    printer = Printer(latex, names)
    text = write(J, printer)[0]
    where = definitions(names, order, latex, printer.used, printer.unnamed)
    joiner = r",\quad " if latex else ", "
    return joiner.join([text, *where, *legend(printer.unnamed, latex)])


# -- pieces of notation the classes share ---------------------------------------------------------
def identity(p: Printer, size_text: str = "") -> str:
    """$I$, or $I_n$."""
    return "I" if not size_text else (f"I_{{{size_text}}}" if p.latex else f"I_{size_text}")


def ones(p: Printer) -> str:
    """$\\mathbf{1}$."""
    return r"\mathbf{1}" if p.latex else "1"


def kron(p: Printer) -> str:
    """The Kronecker product's sign, with its spaces."""
    return r" \otimes " if p.latex else " ⊗ "


def scaled(c: E.Expr, body: str, p: Printer, prec: int) -> tuple[str, int]:
    """``c body``, leaving out a factor 1 and writing -1 as a sign."""
    if c.op == "num" and c.param == 1.0:
        return body, prec
    if c.op == "num" and c.param == -1.0:
        return "-" + body, PRODUCT
    return f"{p(c, PRODUCT)}{p._space()}{body}", PRODUCT


# -- the tree of structures, for the command line ------------------------------------------------
def structure(J) -> str:
    """``J``'s classes as a tree, each with its shapes ``out ← in``."""
    lines = [f"{J.label()}  {tuple(J.out_shape)} ← {tuple(J.in_shape)}"]
    children = list(J.children())
    for i, child in enumerate(children):
        last = i == len(children) - 1
        sub = structure(child).splitlines()
        lines.append(("└─ " if last else "├─ ") + sub[0])
        lines += [("   " if last else "│  ") + line for line in sub[1:]]
    return "\n".join(lines)


# -- a notebook's view ----------------------------------------------------------------------------
def _formula_or_none(J, latex: bool) -> str | None:
    """The formula, or None where it cannot be written (a Jacobian whose arrays a tree map
    replaced): a display must show what it can rather than raise."""
    try:
        return formula(J, latex=latex)
    except Exception:  # noqa: BLE001 - a view never raises: the structure is still shown
        return None


def _dtype_name(J) -> str:
    try:
        return J.dtype.name
    except Exception:  # noqa: BLE001 - leaves without a dtype: say nothing of it
        return ""


def markdown(J) -> str:
    """``J`` as a notebook shows it (Markdown with its formula in ``$$``, which JupyterLab,
    Notebook and VS Code typeset): the structure and shapes ``out ← in``, the formula, and the
    tree of structures when it has more than one."""
    try:
        tree = structure(J)
    except Exception:  # noqa: BLE001 - shapes unreadable (leaves replaced by a tree map)
        return f"`{J!r}`"
    first, *rest = tree.splitlines()
    dtype = _dtype_name(J)
    head = f"**{J.label()}** Jacobian `{first.split('  ', 1)[-1]}`" + (
        f", {dtype}" if dtype else "")
    parts = [head]
    tex = _formula_or_none(J, latex=True)
    if tex is not None:
        parts.append(f"$$\n{tex}\n$$")
    if rest:
        parts.append("```text\n" + tree + "\n```")
    return "\n\n".join(parts)


def display_latex(J) -> str | None:
    """The formula in display math, ``$$...$$`` (None when it cannot be written)."""
    tex = _formula_or_none(J, latex=True)
    return None if tex is None else f"$${tex}$$"
