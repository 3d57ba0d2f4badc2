"""The documentation site: it builds with ``mkdocs build --strict``, the generated pages are
complete, and every ```python block of every page (and of the README) runs.

Each page's blocks run in order as one script, as a reader would run them: in JAX's default
float32 (with the suite's strict rank promotion); tracebacks point at the page's own lines.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import jax
import pytest

import mcjax

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(?:python|py)\b[^\n]*\n(.*?)^```", re.M | re.S)


def python_blocks(page: Path) -> str:
    """The page's python blocks as one script, each line at its line number in the page."""
    text = page.read_text()
    lines = [""] * (text.count("\n") + 1)
    for match in FENCE.finditer(text):
        first = text.count("\n", 0, match.start(1))
        for i, line in enumerate(match.group(1).splitlines()):
            lines[first + i] = line
    return "\n".join(lines)


def text_of(page: Path) -> str:
    """The text a reader sees on a built page: tags stripped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


PAGES = [page for page in sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]
         if FENCE.search(page.read_text())]


@pytest.fixture
def as_a_reader():
    """Run a page as a reader would: JAX's default float32 (the suite turns float64 on), and
    without the rules the page registers (the README's ``cube``) leaking into other tests."""
    rules, by_forward = dict(mcjax.registry.REGISTRY._rules), dict(mcjax.registry.REGISTRY._by_forward)
    jax.config.update("jax_enable_x64", False)
    yield
    jax.config.update("jax_enable_x64", True)
    mcjax.registry.REGISTRY._rules, mcjax.registry.REGISTRY._by_forward = rules, by_forward


# what a page's blocks must print, beyond what they assert: (at least this many blocks, text)
PRINTS = {"check.md": (5, "FAIL")}  # the failing report of a wrong gradient


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(page, as_a_reader, capsys):
    code = compile(python_blocks(page), str(page), "exec")
    with jax.numpy_dtype_promotion("standard"):  # a reader runs the pages with JAX's defaults
        exec(code, {"__name__": f"docs:{page.name}"})
    blocks, text = PRINTS.get(page.name, (1, ""))
    assert len(FENCE.findall(page.read_text())) >= blocks
    assert text in capsys.readouterr().out


def test_a_failing_block_fails_at_its_line_in_the_page(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n```python\nx = 1\n```\n\nText.\n\n"
                    "```python\nassert x == 2\n```\n")
    code = compile(python_blocks(page), str(page), "exec")
    with pytest.raises(AssertionError) as failure:
        exec(code, {})
    assert failure.traceback[-1].lineno + 1 == 10  # line 10 of the page (pytest counts from 0)


def test_no_python_escapes_the_runner():
    """Code fenced as ```pycon, ```python3 or ```ipython would silently go untested."""
    for page in [*DOCS.rglob("*.md"), ROOT / "README.md"]:
        assert not re.search(r"^```(pycon|python3|py3|ipython)", page.read_text(), re.M), page
    names = {page.name for page in PAGES}
    assert {"index.md", "paper.md", "jacobians.md", "conventions.md", "README.md"} <= names


def test_site_builds_strict_and_is_complete(tmp_path):
    """One build (it takes seconds), then what it must contain."""
    # this checkout's mcjax, whichever is installed; and no end-of-life banner from material
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "NO_MKDOCS_2_WARNING": "1"}
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site),
         "--config-file", str(ROOT / "mkdocs.yml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-5000:]

    # The rules page lists every registered rule, each with its own anchor and verdict.
    rules_html = (site / "rules" / "index.html").read_text()
    for rule in mcjax.registry.REGISTRY:
        anchor = "rule-" + re.sub(r"[^A-Za-z0-9_-]", "-", rule.name)
        assert f'id="{anchor}"' in rules_html, f"rule {rule.name} is missing from the rules page"
    assert "FAILED" not in rules_html
    assert f"{len(mcjax.registry.REGISTRY)} rules" in rules_html

    # Every marker was filled in, and the tables come from the code.
    for page in site.rglob("*.html"):
        assert "<!-- mcjax:" not in page.read_text(), f"{page}: a marker was not replaced"
    conventions = (site / "conventions" / "index.html").read_text()
    from mcjax.conventions import check_rtol

    assert f"<td>{check_rtol('float32', 1):.1e}</td>" in conventions  # the checker's policy
    home = text_of(site / "index.html")
    readme = (ROOT / "README.md").read_text().splitlines()
    commands = [line for line in readme[:8] if line.startswith("python3 -m venv")]
    assert len(commands) == 2, "the README no longer starts with its two commands"
    for command in commands:
        assert command in home, f"the home page lacks the README's command {command!r}"

    # The benchmark's figures and table are in the site.
    bench = (site / "benchmarks" / "index.html").read_text()
    for figure in ("time.png", "memory.png"):
        assert (site / "benchmarks" / "jacobians" / figure).stat().st_size > 10_000
        assert f'src="jacobians/{figure}"' in bench
    assert "jacfwd / structured" in bench

    # The API pages render every public name (mkdocstrings gives each an id).
    api = "".join(p.read_text() for p in (site / "api").rglob("*.html"))
    missing = [name for name in mcjax.__all__ if f'id="mcjax.{name}"' not in api]
    assert not missing, f"not rendered in the API pages: {missing}"

    # Maths is MathML, written at build time, on the pages and in the docstrings' API pages;
    # no TeX is left for a script to typeset, and nothing is fetched to read the site.
    for page in (rules_html, (site / "paper" / "index.html").read_text(),
                 (site / "api" / "functions" / "index.html").read_text()):
        assert '<span class="arithmatex"><math' in page
    for page in site.rglob("*.html"):
        assert not re.search(r'class="arithmatex">\s*\\[(\[]', page.read_text()), page
    assert not remote_references(site)


# -- the site reads offline ------------------------------------------------------------------
REMOTE = re.compile(r"^\s*(?:https?:)?//", re.I)
CSS_REMOTE = re.compile(r"""(?:@import\s+(?:url\()?|url\()\s*["']?\s*(?:https?:)?//""", re.I)


class _Fetches(HTMLParser):
    """What a page makes the browser fetch: the src of any element, a <link>'s href (but a
    canonical or alternate address, which nothing fetches), and <style> blocks' imports."""

    def __init__(self):
        super().__init__()
        self.found, self._in_style = [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "data", "poster"):
            if REMOTE.match(attrs.get(name) or ""):
                self.found.append(f"<{tag} {name}={attrs[name]}>")
        rel = (attrs.get("rel") or "").lower().split()
        if tag == "link" and REMOTE.match(attrs.get("href") or "") and \
                not {"canonical", "alternate"} & set(rel):
            self.found.append(f"<link rel={' '.join(rel)} href={attrs['href']}>")
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style and CSS_REMOTE.search(data):
            self.found.append(f"<style> {CSS_REMOTE.search(data).group(0)}")


def remote_references(site: Path) -> list[str]:
    """Every script, stylesheet, font or other resource a built page would fetch from
    elsewhere: from its HTML, and from the site's own CSS (imports, url()s)."""
    found = []
    for page in sorted(site.rglob("*.html")):
        parser = _Fetches()
        parser.feed(page.read_text())
        found += [f"{page.relative_to(site)}: {what}" for what in parser.found]
    for sheet in sorted(site.rglob("*.css")):
        found += [f"{sheet.relative_to(site)}: {m.group(0)}"
                  for m in CSS_REMOTE.finditer(sheet.read_text())]
    return found


def test_remote_references_finds_scripts_stylesheets_and_fonts(tmp_path):
    """The check the built site passes, shown to fail on what the site used to load."""
    (tmp_path / "index.html").write_text(
        '<link rel="canonical" href="https://example.org/">'
        '<a href="https://arxiv.org/abs/1802.01528">the paper</a>'
        '<link rel="stylesheet" href="assets/main.css"><script src="assets/app.js"></script>'
        '<math><mi>x</mi></math>')
    assert remote_references(tmp_path) == []
    (tmp_path / "paper.html").write_text(
        '<script src="https://unpkg.com/mathjax@3/es5/tex-mml-chtml.js"></script>'
        '<link rel="preconnect" href="https://fonts.gstatic.com" crossorigin>'
        '<link rel="stylesheet" href="//fonts.googleapis.com/css?family=Roboto">'
        '<style>@import url("https://fonts.googleapis.com/css2?family=Inter");</style>')
    (tmp_path / "extra.css").write_text(
        '@font-face { font-family: "x"; src: local("X"), url(https://cdn.example/x.woff2); }')
    found = remote_references(tmp_path)
    assert len(found) == 5, found
    assert all(line.startswith(("paper.html: ", "extra.css: ")) for line in found)


def _mathml_hook():
    spec = importlib.util.spec_from_file_location("docs_mathml", DOCS / "mathml.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_formulas_become_mathml_and_an_unknown_command_fails_the_build():
    mathml = _mathml_hook()
    page = ('<p>For <span class="arithmatex">\\(\\mathbb{1}[x &gt; 0] \\bigcirc \\sin \\mathbf{x}'
            '\\)</span>:</p><div class="arithmatex">\\[\\frac{\\partial y}{\\partial x}\\]</div>')
    out = mathml.render_math(page)
    assert out.count("<math") == 2 and "\\" not in out
    assert 'display="block"' in out and 'display="inline"' in out
    assert "\U0001D7D9" in out  # the double-struck 1, as a character (MathML Core)
    assert "<mo>\u25ef</mo>" in out  # \bigcirc is an operator
    assert "<mo>&gt;</mo>" in out  # the page's escaped > is the formula's >, escaped once
    # a thin space after sin (as TeX sets sin x), but not inside sin's own superscript
    assert '<mi>sin</mi><mspace width="0.167em" />' in out
    assert '<msup><mi>tanh</mi><mn>2</mn></msup><mspace' in mathml.to_mathml(r"\tanh^2 x")
    with pytest.raises(mathml.MathError, match=r"paper.md: .*\\notacommand"):
        mathml.render_math('<span class="arithmatex">\\(\\notacommand{g}\\)</span>', "paper.md")
