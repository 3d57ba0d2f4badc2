r"""A structured Jacobian written as the formula a person derives.

Each structure has its notation (one function per class): $\operatorname{diag}(\mathbf{d})$,
$I$, $\mathbf{1}^\top$, $I_m \otimes \mathbf{x}^\top$, $W$, products by juxtaposition (the
chain rule), sums (the total-derivative rule).  Identities and reshapes, which are identity
matrices, are left out of products.  :func:`formula` adds the definitions of the named
sub-expressions after a comma: ``diag(1[z > 0]) (I_8 ⊗ xᵀ), z = W x + b``.

:func:`structure` draws the tree of classes, for the command line.
"""

from __future__ import annotations

import functools

import jax

from mcjax._jacobian import (
    BlockDiagonal,
    Broadcast,
    Composed,
    Contraction,
    Dense,
    Diagonal,
    Embed,
    Expand,
    Fill,
    Jacobian,
    Kronecker,
    Opaque,
    Permutation,
    Reshape,
    ScaledIdentity,
    Slice,
    Sum,
    SumAlong,
    Zero,
)
from mcjax._jacobian import _expr as E
from mcjax._jacobian._print import (
    ATOM,
    POSTFIX,
    PRODUCT,
    SUM,
    Printer,
    choose_names,
    definitions,
    index_text,
)

_PLACEHOLDER = {Diagonal: "d", ScaledIdentity: "c", Fill: "c", Broadcast: "c", Kronecker: "x",
                BlockDiagonal: "W", Dense: "A", Contraction: "B"}


def symbols(J: Jacobian) -> tuple[E.Expr, ...]:
    """The expressions of ``J``'s arrays; placeholders for a Jacobian built by hand."""
    if J.symbols is not None:
        return J.symbols
    name = _PLACEHOLDER.get(type(J), "A")
    arrays = [getattr(J, a) for a in J._arrays]
    return tuple(E.arg(name, name, getattr(a, "shape", ())) for a in arrays)


def _roots(J: Jacobian) -> list[E.Expr]:
    if isinstance(J, Composed):
        return _roots(J.outer) + _roots(J.inner)
    if isinstance(J, Sum):
        return [e for t in J.terms for e in _roots(t)]
    return list(symbols(J)) if J._arrays and not isinstance(J, Opaque) else []


def formula(J: Jacobian, latex: bool = False) -> str:
    """``J`` in the paper's notation (text or LaTeX), with its named sub-expressions defined."""
    names, order = choose_names(_roots(J))
    text = write(J, Printer(latex, names))[0]
    where = definitions(names, order, latex)
    joiner = r",\quad " if latex else ", "
    return joiner.join([text, *where])


# -- one function per structure: (text, precedence) --------------------------------------------
@functools.singledispatch
def write(J: Jacobian, p: Printer) -> tuple[str, int]:
    return (f"J_{{\\mathrm{{{J.kind}}}}}" if p.latex else f"J_{J.kind}"), ATOM


def _identity(p: Printer, size_text: str = "") -> str:
    return "I" if not size_text else (f"I_{{{size_text}}}" if p.latex else f"I_{size_text}")


def _ones(p: Printer) -> str:
    return r"\mathbf{1}" if p.latex else "1"


def _scaled(c: E.Expr, body: str, p: Printer, prec: int) -> tuple[str, int]:
    if c.op == "num" and c.param == 1.0:
        return body, prec
    if c.op == "num" and c.param == -1.0:
        return "-" + body, PRODUCT
    return f"{p(c, PRODUCT)}{p._space()}{body}", PRODUCT


@write.register
def _(J: Diagonal, p):
    (d,) = symbols(J)
    if J.diagonal.ndim == 0:
        return p.write(d)
    head = r"\operatorname{diag}" if p.latex else "diag"
    return f"{head}({p(d)})", ATOM


@write.register
def _(J: ScaledIdentity, p):
    (c,) = symbols(J)
    if not J.in_shape:
        return p.write(c)
    return _scaled(c, _identity(p), p, ATOM)


@write.register
def _(J: Fill, p):
    (c,) = symbols(J)
    if J.out_shape == ():
        body = p._transposed(_ones(p))
    elif J.in_shape == () or len(J.in_shape) == sum(J.in_shape):
        body = _ones(p)
    else:
        body = _ones(p) + (r"\,\mathbf{1}^\top" if p.latex else " 1ᵀ")
    return _scaled(c, body, p, ATOM)


@write.register
def _(J: Broadcast, p):
    (c,) = symbols(J)
    body = r"(\mathbf{1} \otimes I)" if p.latex else "(1 ⊗ I)"
    return _scaled(c, body, p, ATOM)


@write.register
def _(J: Kronecker, p):
    (x,) = symbols(J)
    kron = r" \otimes " if p.latex else " ⊗ "
    return f"{_identity(p, str(J.m))}{kron}{p.row(x)}", SUM


@write.register
def _(J: BlockDiagonal, p):
    (W,) = symbols(J)
    if not J.batch_shape:
        return p.write(W)
    kron = r" \otimes " if p.latex else " ⊗ "
    size = "×".join(map(str, J.batch_shape)) if not p.latex else r"\times".join(
        map(str, J.batch_shape))
    return f"{_identity(p, size)}{kron}{p(W, PRODUCT)}", SUM


@write.register
def _(J: Dense, p):
    (a,) = symbols(J)
    if J.out_shape == () and J.in_ndim == 1:
        return p.row(a), PRODUCT
    return p.write(a)


def _in_product(J: Jacobian, p) -> tuple[str, int]:
    r"""A factor of a chain: a gradient of a matrix $G$ is the row $\operatorname{vec}(G)^\top$,
    a product written as a column is parenthesized."""
    if isinstance(J, Dense) and J.out_shape == () and J.in_ndim >= 2 and \
            E.core(symbols(J)[0]).op != "pull":
        (a,) = symbols(J)
        head = r"\operatorname{vec}" if p.latex else "vec"
        return p._transposed(f"{head}({p(a)})"), POSTFIX
    text, prec = write(J, p)
    if isinstance(J, Dense) and J.in_shape == () and prec <= PRODUCT:
        return f"({text})", ATOM
    return text, prec


@write.register
def _(J: Zero, p):
    return ("\\mathbf{0}" if p.latex else "0"), ATOM


@write.register
def _(J: Permutation, p):
    if J.perm == (1, 0):  # vec(X^T) = K vec(X): the commutation matrix
        return "K", ATOM
    perm = ",".join(map(str, J.perm))
    return (f"P_{{({perm})}}" if p.latex else f"P({perm})"), ATOM


@write.register
def _(J: Reshape, p):
    return _identity(p), ATOM


@write.register
def _(J: Slice, p):
    text, latex = index_text(J.start, J.limit, J.strides, J.in_shape)
    return ("S" + latex if p.latex else "S" + text), ATOM


@write.register
def _(J: Embed, p):
    body = write(J._slice(), p)[0]
    return p._transposed(body), POSTFIX


@write.register
def _(J: Expand, p):
    kron = r" \otimes " if p.latex else " ⊗ "
    n, k = len(J.out_shape), len(J.dims)
    if J.dims == tuple(range(n - k, n)):  # copies along leading axes
        return f"({_ones(p)}{kron}I)", ATOM
    if J.dims == tuple(range(k)):  # along trailing axes
        return f"(I{kron}{_ones(p)})", ATOM
    dims = ",".join(map(str, J.dims))
    return (f"E_{{({dims})}}" if p.latex else f"E[{dims}]"), ATOM


@write.register
def _(J: SumAlong, p):
    n = len(J.in_shape)
    ones = p._transposed(_ones(p))
    kron = r" \otimes " if p.latex else " ⊗ "
    if J.axes == tuple(range(n - len(J.axes), n)):
        return f"(I{kron}{ones})", ATOM
    if J.axes == tuple(range(len(J.axes))):
        return f"({ones}{kron}I)", ATOM
    axes = ",".join(map(str, J.axes))
    return (f"\\Sigma_{{{axes}}}" if p.latex else f"Σ[axes {axes}]"), ATOM


@write.register
def _(J: Contraction, p):
    (other,) = symbols(J)
    dot = r"\,\cdot\," if p.latex else "·"
    if J.side == 0:
        return f"({dot}{p._space()}{p(other, PRODUCT + 1)})", ATOM
    return f"({p(other, PRODUCT)}{p._space()}{dot})", ATOM


@write.register
def _(J: Opaque, p):
    return (f"J_{{\\mathrm{{{J.name}}}}}" if p.latex else f"J[{J.name}]"), ATOM


@write.register
def _(J: Composed, p):
    """The chain rule's product, with its numbers first: ``-1/8 u vᵀ``, ``2 S[4:]ᵀ``."""
    coefficient, parts = 1.0, []
    for f in _factors(J):
        if isinstance(f, Reshape):
            continue  # an identity matrix
        if isinstance(f, ScaledIdentity) and f.in_shape:
            (c,) = symbols(f)
            if E.core(c).op == "num":
                coefficient *= E.core(c).param
                continue
            text, prec = p.write(c)
        else:
            c, f = _number_out(f)
            coefficient *= c
            text, prec = _in_product(f, p)
        while text.startswith("-"):
            coefficient, text = -coefficient, text[1:]
        parts.append(f"({text})" if prec < PRODUCT else text)
    if not parts:
        parts = ["I"]
    if coefficient == 1.0 and len(parts) == 1 and parts[0].startswith("("):
        return write([f for f in _factors(J) if not isinstance(f, Reshape)][0], p)
    if coefficient != 1.0:
        head = "-" if coefficient == -1.0 else p(E.num(coefficient), PRODUCT)
        if head.startswith("-") and head != "-":
            head = "-" + head[1:]
        parts.insert(0, head)
    out = p._space().join(parts)
    return out.replace("-" + p._space(), "-", 1) if out.startswith("-" + p._space()) else out, \
        PRODUCT


def _number_out(J: Jacobian) -> tuple[float, Jacobian]:
    """``(c, J / c)`` for a dense factor or a fill written ``c A`` with a number ``c`` (else
    ``(1, J)``)."""
    if not isinstance(J, (Dense, Fill)) or J.symbols is None:
        return 1.0, J
    c, rest = E.coefficient(J.symbols[0])
    if c == 1.0:
        return 1.0, J
    leaves, treedef = jax.tree_util.tree_flatten(J)
    plain = jax.tree_util.tree_unflatten(treedef, leaves)
    plain.symbols = (E.reshaped(rest, J.symbols[0].shape),)
    return c, plain


def _factors(J: Jacobian) -> list[Jacobian]:
    if isinstance(J, Composed):
        return _factors(J.outer) + _factors(J.inner)
    return [J]


@write.register
def _(J: Sum, p):
    out = ""
    for i, term in enumerate(J.terms):
        text, prec = write(term, p)
        text = f"({text})" if prec < SUM else text
        if i == 0:
            out = text
        elif text.startswith("-"):
            out += " - " + text[1:]
        else:
            out += " + " + text
    return out, SUM


# -- the tree of structures, for the command line ------------------------------------------------
def structure(J: Jacobian, indent: str = "") -> str:
    """``J``'s classes as a tree, each with its shapes ``out ← in``."""
    def shapes(K):
        return f"{tuple(K.out_shape)} ← {tuple(K.in_shape)}"

    label = type(J).__name__ + (f"[{J.name}]" if isinstance(J, Opaque) else "")
    lines = [f"{label}  {shapes(J)}"]
    children = _factors(J) if isinstance(J, Composed) else list(J.terms) \
        if isinstance(J, Sum) else []
    for i, child in enumerate(children):
        last = i == len(children) - 1
        sub = structure(child, indent).splitlines()
        lines.append(("└─ " if last else "├─ ") + sub[0])
        lines += [("   " if last else "│  ") + line for line in sub[1:]]
    return "\n".join(lines)
