r"""Expressions printed in the paper's notation, as plain text or LaTeX.

``Printer`` writes one ``Expr`` with the fewest parentheses
precedence allows: ``W x + b``, ``1[z > 0]``, ``sigmoid(x) (1 - sigmoid(x))``, ``x ⊙ y`` for
the element-wise (Hadamard) product of two arrays, ``xᵀ`` for a transpose.  Values the
formula uses more than once, or that are long, are given a name (``choose_names``): a
pre-activation $W\mathbf{x} + \mathbf{b}$ is ``z`` as in the paper, an activation ``a``, anything
else ``u``, ``v``, ``s``, ...; the printer writes the name and the formula lists the definitions.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from fractions import Fraction

import numpy as np

from mcjax._jacobian._expr import Expr, core, nodes

ATOM, POSTFIX, UNARY, PRODUCT, SUM, COMPARE = 100, 90, 70, 60, 50, 40

_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
_SUBSCRIPT = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
_TEXT_CMP = {">": ">", "<": "<", ">=": "≥", "<=": "≤", "==": "=", "!=": "≠"}
_LATEX_CMP = {">": ">", "<": "<", ">=": r"\geq", "<=": r"\leq", "==": "=", "!=": r"\neq"}
_LATEX_CALL = {"exp": r"\exp", "log": r"\log", "sin": r"\sin", "cos": r"\cos", "tan": r"\tan",
               "tanh": r"\tanh", "sinh": r"\sinh", "cosh": r"\cosh", "sigmoid": r"\sigma",
               "max": r"\max", "min": r"\min"}
POOL = ("u", "v", "s", "t", "p", "q", "r", "g", "h", "k", "c", "d")


_TEX_SPECIALS = {"\\": r"\backslash ", "_": r"\_", "#": r"\#", "%": r"\%", "&": r"\&",
                 "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\sim ", "^": r"\wedge ",
                 "∂": r"\partial ", "·": r"\cdot ", "′": "'"}


# the Greek letters LaTeX has a command for (capital Alpha is A, and has none)
_GREEK_TEX = {*("alpha beta gamma delta epsilon zeta eta theta iota kappa lamda mu nu xi pi rho "
                "sigma tau upsilon phi chi psi omega").split(),
              *("Gamma Delta Theta Lamda Xi Pi Sigma Upsilon Phi Psi Omega").split()}


def _greek(char: str) -> str | None:
    """``\\Phi`` for ``Φ``; None for a character that is no Greek letter with a command."""
    words = unicodedata.name(char, "").split()  # GREEK CAPITAL LETTER PHI
    if len(words) != 4 or words[:1] != ["GREEK"] or words[2] != "LETTER":
        return None
    letter = words[3].lower() if words[1] == "SMALL" else words[3].capitalize()
    if letter not in _GREEK_TEX:
        return None
    return "\\" + letter.replace("amda", "ambda") + " "


def tex_text(name: str) -> str:
    """A name from code as the text of ``\\operatorname{}`` or ``\\mathrm{}``: every character
    LaTeX reads as a command escaped (``stop\\_gradient``, not a subscript ``g``), a Greek
    letter as its command (``Φ`` as ``\\Phi``), ``∂`` as ``\\partial``."""
    return "".join(_TEX_SPECIALS.get(char) or _greek(char) or char for char in name)


def operator(name: str) -> str:
    """``\\operatorname{stop\\_gradient}``: a function's name, upright, escaped."""
    return f"\\operatorname{{{tex_text(name)}}}"


def upright(name: str) -> str:
    """``\\mathrm{Dense\\_0.kernel}``: a name of several letters, upright, escaped."""
    return f"\\mathrm{{{tex_text(name)}}}"


# constants a formula names rather than spells: (value, text, LaTeX)
KNOWN_CONSTANTS = (
    (math.pi, "π", r"\pi"), (math.e, "e", "e"), (math.sqrt(2), "√2", r"\sqrt{2}"),
    (1 / math.sqrt(2), "1/√2", r"\frac{1}{\sqrt{2}}"),
    (math.sqrt(2 / math.pi), "√(2/π)", r"\sqrt{2/\pi}"),
    (1 / math.sqrt(2 * math.pi), "1/√(2π)", r"\frac{1}{\sqrt{2\pi}}"),
    (2 / math.sqrt(math.pi), "2/√π", r"\frac{2}{\sqrt{\pi}}"),
    (math.sqrt(math.pi), "√π", r"\sqrt{\pi}"), (math.log(2), "ln 2", r"\ln 2"),
    (1 / math.log(2), "1/ln 2", r"\frac{1}{\ln 2}"), (math.log(10), "ln 10", r"\ln 10"),
)


_FLOAT32 = np.finfo(np.float32)


def _in_float32_range(value: float) -> bool:
    """Whether float32 holds ``value`` as a normal number (its units are then no wider than a
    float64 number's own digits can tell)."""
    return float(_FLOAT32.tiny) <= abs(value) <= float(_FLOAT32.max)


def _same_number(value: float, exact: float) -> bool:
    """Whether ``value`` is ``exact`` as float64 holds it, or as float32 does, within one of
    its units (a constant of a float32 program, perhaps combined: ``1 / float32(√2)``)."""
    return value == exact or (_in_float32_range(exact) and
                              abs(value - exact) <= float(np.spacing(np.float32(exact))))


def _within_float32_ulp(value: float, short: str) -> bool:
    """Whether the short decimal ``short`` is within one float32 unit of ``value``."""
    return _in_float32_range(value) and \
        abs(float(short) - value) <= float(np.spacing(np.float32(value)))


def _shortest(magnitude: float) -> str:
    """The shortest decimal that reads back as ``magnitude`` (as float32 when float32 holds it
    exactly), positional from 10⁻⁴ to 10¹⁶ and scientific (``1e-05``) beyond, as Python
    writes floats."""
    if not _in_float32_range(magnitude) or float(np.float32(magnitude)) != magnitude:
        return repr(magnitude)
    single = np.float32(magnitude)
    if 1e-4 <= magnitude < 1e16:
        return np.format_float_positional(single, unique=True, trim="-")
    return np.format_float_scientific(single, unique=True, trim="-", exp_digits=2)


def number_text(value: float, latex: bool) -> str:
    """``2``, ``1/32``, ``√(2/π)``, ``0.044715``, ``1e-05``: a number as a person writes it.

    Integers and exact ratios with a small or power-of-two denominator are written exactly, a
    few constants by name, anything else at the precision it has: the shortest decimal that
    reads back as the same float32 (a float32 constant) or float64 number, never cut short.
    LaTeX writes a power of ten as one: $10^{-5}$, $1.5 \\times 10^{-7}$.
    """
    if not math.isfinite(value):
        if value != value:
            return r"\mathrm{NaN}" if latex else "nan"
        return ("-" if value < 0 else "") + ("\\infty" if latex else "∞")
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    if value == int(value) and magnitude < 1e15:
        return str(int(value))
    if 1e-4 <= magnitude < 1e15:
        fraction = Fraction(magnitude).limit_denominator(1024)
        p, q = fraction.numerator, fraction.denominator
        # a ratio with a small or a power-of-two denominator (1/3, 1/32); a decimal one
        # (1/100) reads better as the decimal
        if _same_number(magnitude, p / q) and (q <= 16 and q != 10 or q & (q - 1) == 0):
            return f"{sign}\\frac{{{p}}}{{{q}}}" if latex else f"{sign}{p}/{q}"
    for exact, text, tex in KNOWN_CONSTANTS:
        if _same_number(magnitude, exact):
            return sign + (tex if latex else text)
    digits = _shortest(magnitude)
    short = f"{magnitude:.7g}"
    if len(digits.split("e")[0].replace(".", "").lstrip("0")) > 12 and \
            _within_float32_ulp(magnitude, short):
        digits = short  # float32 constants combined in float64: the digits they had
    if "e" in digits and latex:
        mantissa, exponent = digits.split("e")
        power = f"10^{{{int(exponent)}}}"
        return sign + (power if mantissa == "1" else f"{mantissa} \\times {power}")
    return sign + digits


class Printer:
    """Writes expressions; ``names`` maps the expressions that have a name to it."""

    def __init__(self, latex: bool, names: dict[Expr, tuple[str, str]] | None = None):
        self.latex = latex
        self.names = names or {}
        self.used: set[Expr] = set()  # the named expressions written by name
        self.unnamed: set[Expr] = set()  # the constants f reaches by no name (C, C₁, ...)

    # -- entry points ---------------------------------------------------------------------
    def __call__(self, e: Expr, context: int = 0) -> str:
        text, prec = self.write(e)
        return f"({text})" if prec < context else text

    def write(self, e: Expr) -> tuple[str, int]:
        """``(text, precedence)`` of ``e``, using the name of a named expression (reshaped or
        not: a name stands for the entries)."""
        for key in (e, core(e)):
            if key in self.names:
                self.used.add(key)
                return self.names[key][self.latex], ATOM
        return getattr(self, "_" + e.op, self._unknown)(e)

    def row(self, e: Expr) -> str:
        """``e`` written as a row, $\\mathbf{e}^\\top$ (the derivative of a scalar)."""
        if e not in self.names:
            if e.op == "mul" and e.args[0].shape == ():
                return f"{self(e.args[0], PRODUCT)}{self._space()}{self.row(e.args[1])}"
            if e.op == "neg":
                return "-" + self.row(e.args[0])
            if e.op == "vecmat":
                return f"{self.row(e.args[0])}{self._space()}{self(e.args[1], PRODUCT)}"
            if e.op == "reshape":
                return self.row(e.args[0])
            if e.op == "pull":
                return self._pull(e)[0]
        return self._transposed(self(e, POSTFIX))

    # -- leaves ------------------------------------------------------------------------------
    def _arg(self, e):
        if len(e.param) == 3 and e.param[0][:1] == "C":  # a constant known by no name
            self.unnamed.add(e)
        return e.param[self.latex], ATOM

    def _num(self, e):
        text = number_text(e.param, self.latex)
        if e.shape and e.param in (0.0, 1.0):
            text = f"\\mathbf{{{text}}}" if self.latex else text
        return text, ATOM if e.param >= 0 and "/" not in text and "frac" not in text else UNARY

    # -- arithmetic ----------------------------------------------------------------------------
    def _space(self) -> str:
        return r"\," if self.latex else " "

    def _add(self, e):
        return f"{self(e.args[0], SUM)} + {self(e.args[1], SUM + 1)}", SUM

    def _sub(self, e):
        return f"{self(e.args[0], SUM)} - {self(e.args[1], SUM + 1)}", SUM

    def _neg(self, e):
        if core(e.args[0]).op == "div" and not self.latex:  # -(x / y) is -x / y
            a, b = core(e.args[0]).args
            return f"-{self(a, UNARY + 1)} / {self(b, PRODUCT + 1)}", PRODUCT - 1
        return "-" + self(e.args[0], UNARY + 1), UNARY

    def _mul(self, e):
        a, b = e.args
        hadamard = all(core(x).shape != () and core(x).op != "num" for x in (a, b))
        if hadamard:
            op = r" \odot " if self.latex else " ⊙ "  # associative: x ⊙ a ⊙ (1 - a)
            right = PRODUCT if core(b).op == "mul" and self._is_hadamard(core(b)) else PRODUCT + 1
            return f"{self(a, PRODUCT)}{op}{self(b, right)}", PRODUCT
        # a product of scalars and one array reads left to right without parentheses
        right = PRODUCT if core(b).op == "mul" and not self._is_hadamard(core(b)) else PRODUCT + 1
        return f"{self(a, PRODUCT)}{self._space()}{self(b, right)}", PRODUCT

    @staticmethod
    def _is_hadamard(e: Expr) -> bool:
        return all(core(x).shape != () and core(x).op != "num" for x in e.args)

    def _div(self, e):
        a, b = e.args
        if self.latex:
            return f"\\frac{{{self(a)}}}{{{self(b)}}}", POSTFIX - 1  # (\frac{x}{u})^\top
        return f"{self(a, PRODUCT)} / {self(b, PRODUCT + 1)}", PRODUCT - 1

    def _pow(self, e):
        """``x²``, ``v^(-1/2)``; a matrix's entries each to a power is the Hadamard power
        ``W^∘2`` (``W⁻¹`` is the inverse, ``W²`` the product ``W W``)."""
        base, exponent = self(e.args[0], POSTFIX + 1), e.param
        entrywise = len(core(e.args[0]).shape) >= 2
        if self.latex:
            circ = r"\circ " if entrywise else ""
            return f"{base}^{{{circ}{number_text(exponent, True)}}}", POSTFIX
        if entrywise:
            return f"{base}^∘{number_text(exponent, False)}", POSTFIX
        if exponent == int(exponent):
            return base + str(int(exponent)).translate(_SUPERSCRIPT), POSTFIX
        return f"{base}^({number_text(exponent, False)})", POSTFIX

    def _inv(self, e):
        base = self(e.args[0], POSTFIX + 1)
        return (f"{base}^{{-1}}" if self.latex else base + "⁻¹"), POSTFIX

    def _powe(self, e):
        base, exponent = self(e.args[0], POSTFIX + 1), self(e.args[1])
        return (f"{base}^{{{exponent}}}" if self.latex else f"{base}^({exponent})"), POSTFIX

    # -- functions and logic ---------------------------------------------------------------------
    def _call(self, e):
        name = e.param
        if not e.args:
            return (upright(name) if self.latex else name), ATOM
        if self.latex and name == "sqrt":
            return f"\\sqrt{{{self(e.args[0])}}}", ATOM
        args = ", ".join(self(a) for a in e.args)
        if self.latex:
            head = _LATEX_CALL.get(name) or operator(name)
            return f"{head}({args})", ATOM
        return f"{name}({args})", ATOM

    def _cmp(self, e):
        table = _LATEX_CMP if self.latex else _TEXT_CMP
        a, b = (self(x, COMPARE + 1) for x in e.args)
        return f"{a} {table[e.param]} {b}", COMPARE

    def _not(self, e):
        return ("\\neg " if self.latex else "¬") + self(e.args[0], ATOM), UNARY

    def _ind(self, e):
        head = r"\mathbb{1}" if self.latex else "1"
        return f"{head}[{self(e.args[0])}]", ATOM

    def _iota(self, e):
        axis, size = e.param
        if self.latex:
            return rf"(0, 1, \ldots, {size - 1})", ATOM
        return f"(0, 1, …, {size - 1})", ATOM

    def _truth(self, e):
        return ("true" if e.param else "false"), ATOM

    def _onehot(self, e):
        label = core(e.args[0])
        k = number_text(label.param, self.latex) if label.op == "num" else self(label, ATOM)
        return (rf"\mathbf{{e}}_{{{k}}}" if self.latex else f"e_{k}"), ATOM

    def _const(self, e):  # a small array written into f: its entries
        entries = ", ".join(number_text(float(v), self.latex) for v in e.param)
        return f"[{entries}]", ATOM

    def _where(self, e):
        return self._call(Expr("call", e.args, "where", e.shape))

    # -- linear algebra --------------------------------------------------------------------------
    def _transposed(self, text: str) -> str:
        return text + ("^\\top" if self.latex else "ᵀ")

    def _T(self, e):  # noqa: N802 - the transpose
        if len(e.shape) == 2:
            return self._transposed(self(e.args[0], POSTFIX + 1)), POSTFIX
        return self._call(Expr("call", e.args, "transpose", e.shape))

    def _matmul(self, e):
        return f"{self(e.args[0], PRODUCT)}{self._space()}{self(e.args[1], PRODUCT + 1)}", PRODUCT

    def _dot(self, e):
        op = r" \cdot " if self.latex else "·"
        return f"{self(e.args[0], PRODUCT + 1)}{op}{self(e.args[1], PRODUCT + 1)}", PRODUCT

    def _outer(self, e):
        v, x = e.args
        return f"{self(v, PRODUCT)}{self._space()}{self.row(x)}", PRODUCT

    def _vecmat(self, e):  # M^T v as a value
        v, M = e.args
        return f"{self._transposed(self(M, POSTFIX + 1))}{self._space()}{self(v, PRODUCT + 1)}", \
            PRODUCT

    # -- shapes, parts and sums --------------------------------------------------------------------
    def _reshape(self, e):
        return self.write(e.args[0])

    def _index(self, e):
        text, latex = e.param
        return self(e.args[0], POSTFIX + 1) + (latex if self.latex else text), POSTFIX

    def _sum(self, e):
        inner = self(e.args[0])
        if len(e.args[0].shape) <= len(e.param):
            return (f"\\operatorname{{sum}}({inner})" if self.latex else f"sum({inner})"), ATOM
        axes = ", ".join(map(str, e.param))
        return (f"\\operatorname{{sum}}_{{{axes}}}({inner})" if self.latex
                else f"sum({inner}, axis={axes})"), ATOM

    def _reduce(self, e):
        name, axes = e.param
        inner = self(e.args[0])
        head = (_LATEX_CALL.get(name) or operator(name)) if self.latex else name
        if len(e.args[0].shape) <= len(axes):
            return f"{head}({inner})", ATOM
        return f"{head}({inner}, axis={', '.join(map(str, axes))})", ATOM

    def _concat(self, e):
        sep = r"; " if self.latex else "; "
        return "[" + sep.join(self(a) for a in e.args) + "]", ATOM

    def _pull(self, e):  # v^T J, J written by the formula printer (param: text, LaTeX)
        return f"{self.row(e.args[0])}{self._space()}{e.param[self.latex]}", PRODUCT

    def _push(self, e):
        return f"{e.param[self.latex]}{self._space()}{self(e.args[0], PRODUCT + 1)}", PRODUCT

    def _unknown(self, e):
        return self._call(Expr("call", e.args, e.op, e.shape))


# -- naming ------------------------------------------------------------------------------------
def _uses(roots: list[Expr]) -> tuple[Counter, dict]:
    """How many distinct places refer to each node (a DAG count: each parent once), and the
    hints of the parents that do."""
    uses: Counter = Counter(roots)
    parents: dict = {}
    seen = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for child in set(node.args):
            uses[child] += 1
            parents.setdefault(child, set()).add(node)
            stack.append(child)
    return uses, parents


def _worth_a_name(e: Expr, hint: str | None, uses: int, parent_hints: set, length: int) -> bool:
    """``hint`` is None for an expression that is no variable of the program."""
    if hint is None or e.op in ("arg", "num", "reshape") or not e.args:
        return False
    if hint == "z":  # W x + b is z, but W x inside it is not
        return not (uses == 1 and parent_hints == {"z"})
    # a short call, sigmoid(x), is named where it recurs three times: diag(s) - s sᵀ
    return (uses >= 2 and length > 12) or (uses >= 3 and length > 8) or length > 32


def choose_names(roots: list[Expr]) -> tuple[dict[Expr, tuple[str, str]], list[Expr]]:
    """Names for the sub-expressions of ``roots`` worth one, and their definition order."""
    uses, parents = _uses(roots)
    hints = {}  # the program's variables (one value may also be rebuilt by a derivative rule)
    for r in roots:
        for n in nodes(r):
            if n.var:
                hints[n] = hints.get(n) or n.hint
    parents = {e: {hints.get(p, "") for p in ps} for e, ps in parents.items()}
    chosen: list[Expr] = []
    placeholders: dict = {}
    for e in _postorder(roots):  # children first: a long child, once named, is one letter
        length = len(Printer(False, placeholders)(e))
        if _worth_a_name(e, hints.get(e), uses[e], parents.get(e, set()), length):
            chosen.append(e)
            placeholders[e] = ("u", "u")
    taken = {n.param[0] for r in roots for n in nodes(r) if n.op == "arg"}
    letters = {}
    for e in chosen:
        letter = hints.get(e) or ""
        if not letter or letter in taken:
            letter = next((p for p in POOL if p not in taken and p not in letters.values()), "w")
        letters[e] = letter
    counts = Counter(letters.values())
    seen: Counter = Counter()
    names = {}
    for e in chosen:
        letter = letters[e]
        if counts[letter] == 1:
            names[e] = (letter, letter if len(e.shape) != 1 else f"\\mathbf{{{letter}}}")
        else:
            seen[letter] += 1
            i = seen[letter]
            latex = letter if len(e.shape) != 1 else f"\\mathbf{{{letter}}}"
            names[e] = (letter + str(i).translate(_SUBSCRIPT), f"{latex}_{{{i}}}")
    return names, chosen


def _postorder(roots: list[Expr]) -> list[Expr]:
    """Distinct nodes, children before parents, in first-seen order."""
    out, seen = [], set()

    def visit(e: Expr):
        if e in seen:
            return
        seen.add(e)
        for child in e.args:
            visit(child)
        out.append(e)

    for r in roots:
        visit(r)
    return out


def legend(constants: set[Expr], latex: bool) -> list[str]:
    """``C ∈ ℝ^(4×3)`` for each constant that has no name in ``f``'s code: what it is, since
    the formula cannot say where it came from."""
    out = []
    for e in sorted(constants, key=lambda c: c.param[0]):
        dims = ("\\times " if latex else "×").join(map(str, e.shape)) or "1"
        out.append(f"{e.param[1]} \\in \\mathbb{{R}}^{{{dims}}}" if latex else
                   f"{e.param[0]} ∈ ℝ^({dims})" if len(e.shape) > 1 else
                   f"{e.param[0]} ∈ ℝ{str(dims).translate(_SUPERSCRIPT)}")
    return out


def definitions(names: dict, order: list[Expr], latex: bool, used: set | None = None,
                unnamed: set | None = None) -> list[str]:
    """``z = W x + b`` for each named expression, innermost first (with ``used``: only the
    names the formula uses, directly or through another definition; the unnamed constants
    they write are added to ``unnamed``)."""
    bodies, needs, constants = {}, {}, {}
    for e in order:
        printer = Printer(latex, {k: v for k, v in names.items() if k != e})
        bodies[e] = printer.write(e)[0]
        needs[e], constants[e] = printer.used, printer.unnamed
    wanted = set(order) if used is None else set(used)
    for e in reversed(order):  # a definition's own names come before it
        if e in wanted:
            wanted |= needs[e]
            if unnamed is not None:
                unnamed |= constants[e]
    return [f"{names[e][latex]} = {bodies[e]}" for e in order if e in wanted]


def index_text(start, limit, strides, shape) -> tuple[str, str]:
    """``[1:3]``, ``[:, 0]``: how a person indexes the part a slice keeps."""
    strides = strides or (1,) * len(start)
    parts = []
    for lo, hi, st, n in zip(start, limit, strides, shape):
        if (lo, hi, st) == (0, n, 1):
            parts.append(":")
        elif hi - lo == 1 and st == 1:
            parts.append(str(lo))
        else:
            parts.append(f"{lo or ''}:{'' if hi == n else hi}" + (f":{st}" if st != 1 else ""))
    while len(parts) > 1 and parts[-1] == ":":
        parts.pop()
    text = ", ".join(parts)
    return f"[{text}]", "_{" + text.replace(":", "{:}") + "}"
