"""mkdocs hook: every formula becomes MathML when the site is built, so nothing is fetched
when a page is read.

``pymdownx.arithmatex`` (generic mode) wraps the pages' and the docstrings' ``$...$`` in
``<span class="arithmatex">\\(...\\)</span>`` and ``$$...$$`` in ``<div class="arithmatex">
\\[...\\]</div>``; this hook replaces the TeX inside each by the MathML that ``latex2mathml``
writes for it.  Browsers render MathML themselves (MathML Core: Chromium 109+, Firefox,
Safari), with no script, stylesheet or font from elsewhere.

A formula that does not convert fails the build, naming the page and the formula: an unknown
command (latex2mathml keeps it as the text ``\\foo``) would otherwise reach the reader as raw
TeX.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET

from latex2mathml.converter import convert

ARITHMATEX = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*(?:\\\((?P<inline>.*?)\\\)|\\\[(?P<block>.*?)\\\])'
    r"\s*</(?P=tag)>", re.S)
NAMESPACE = ' xmlns="http://www.w3.org/1998/Math/MathML"'
# MathML Core (what Chromium implements) ignores mathvariant but for "normal"; latex2mathml
# writes letters as the Unicode mathematical alphanumerics already, and digits with a
# mathvariant: those become the alphanumerics too (bold 0 is U+1D7CE, double-struck U+1D7D8).
DIGIT_VARIANTS = {"bold": 0x1D7CE, "double-struck": 0x1D7D8, "sans-serif": 0x1D7E2,
                  "monospace": 0x1D7F6}
# TeX's \bigcirc (the paper's "any element-wise operator") is a binary operator: an <mo>,
# spaced as one, where latex2mathml writes an <mi>
OPERATORS = {"\u25ef"}
# TeX sets a thin space between \sin, \log ... (or \sin^2) and an argument without
# parentheses: sin x; latex2mathml writes none, and Chromium adds none
FUNCTIONS = {"sin", "cos", "tan", "sinh", "cosh", "tanh", "log", "ln", "exp", "det"}
ARGUMENTS = {"mi", "mn", "mrow", "msub", "msup", "msubsup", "mover", "mfrac", "msqrt"}
SCRIPTS = {"msub", "msup", "msubsup"}
# elements whose children have fixed roles (base, script, numerator ...): nothing goes between
FIXED_ARITY = SCRIPTS | {"mover", "munder", "munderover", "mfrac", "mroot"}


class MathError(ValueError):
    """A formula of a page that latex2mathml cannot write as MathML."""


def _is_function(node: ET.Element) -> bool:
    if node.tag in SCRIPTS and len(node):
        node = node[0]
    return node.tag == "mi" and node.text in FUNCTIONS


def _tidy(math: ET.Element) -> None:
    """Adjust latex2mathml's MathML, in place, to what MathML Core renders as TeX would."""
    for node in math.iter():
        if node.tag == "mn" and node.get("mathvariant") in DIGIT_VARIANTS and \
                (node.text or "").isdigit():
            start = DIGIT_VARIANTS[node.attrib.pop("mathvariant")]
            node.text = "".join(chr(start + int(d)) for d in node.text)
        if node.tag == "mi" and node.text in OPERATORS:
            node.tag = "mo"
    for parent in list(math.iter()):
        if parent.tag in FIXED_ARITY:
            continue
        children = list(parent)
        for i in reversed(range(len(children) - 1)):
            if _is_function(children[i]) and children[i + 1].tag in ARGUMENTS:
                parent.insert(i + 1, ET.Element("mspace", width="0.167em"))


def to_mathml(tex: str, *, display: bool = False) -> str:
    """The MathML of one formula (TeX without its delimiters); raises MathError."""
    try:
        mathml = convert(tex, display="block" if display else "inline")
    except Exception as error:  # latex2mathml raises its own types and plain ones
        raise MathError(f"{tex!r}: {type(error).__name__}: {error}") from error
    math = ET.fromstring(mathml.replace(NAMESPACE, "", 1))
    left_over = [t for node in math.iter() for t in (node.text,) if t and "\\" in t]
    if left_over:
        raise MathError(f"{tex!r}: {left_over[0]!r} is not a command latex2mathml knows")
    _tidy(math)
    return ET.tostring(math, encoding="unicode").replace("<math", "<math" + NAMESPACE, 1)


def render_math(page_html: str, where: str = "page") -> str:
    """``page_html`` with every arithmatex formula replaced by its MathML."""

    def replace(match: re.Match) -> str:
        display = match.group("block") is not None
        tex = html.unescape(match.group("block") if display else match.group("inline"))
        try:
            mathml = to_mathml(tex.strip(), display=display)
        except MathError as error:
            raise MathError(f"{where}: {error}") from None
        return f'<{match.group("tag")} class="arithmatex">{mathml}</{match.group("tag")}>'

    return ARITHMATEX.sub(replace, page_html)


def on_post_page(output, page, config):
    return render_math(output, page.file.src_uri)
