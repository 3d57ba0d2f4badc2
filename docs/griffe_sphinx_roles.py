"""A griffe extension: public names in mcjax's docstrings become mkdocstrings links.

The docstrings name other objects as code, by the dotted name a user types
(``mcjax.Jacobian``, ``mcjax.registry.Rule``), which reads the same in Python's ``help()``
and on the site. A code span holding a public name (one in ``mcjax.__all__``, or a member of
one, written ``mcjax.Class.member``) becomes a link to its API entry; any other stays inline
code. Sphinx roles (``:class:`~mcjax.Jacobian```), which ``help()`` shows raw and which a few
docstrings still hold, are read the same way. A reST ``Example::`` literal block becomes a
Google-style example with a code block.
"""

from __future__ import annotations

import re

import griffe

import mcjax

ROLE = re.compile(r":(?:class|meth|func|data|mod|attr|obj|exc):`~?([\w.]+)`")
# a code span that is a dotted name under mcjax: ``mcjax.check``, ``mcjax.Jacobian.dense``
CODE = re.compile(r"``(mcjax(?:\.\w+)+)``")
# reST's "Example::" and the indented literal block after it: a Google-style "Example:"
# section holding a fenced code block
EXAMPLE = re.compile(r"^( *)(Examples?)::\n\n((?:\1 +\S.*\n?|\n)+)", re.M)


def example(match: re.Match) -> str:
    indent, title, block = match.groups()
    code = block.rstrip("\n")
    inner = re.match(r" *", code).group(0)
    return f"{indent}{title}:\n{inner}```python\n{code}\n{inner}```\n\n"


def public(target: str) -> bool:
    """Whether ``target`` (without ``mcjax.``) has an API entry to link to."""
    head = target.split(".")[0]
    return head in mcjax.__all__ and target.count(".") <= 1 and head != "rules"


def link(match: re.Match) -> str:
    target = match.group(1).removeprefix("mcjax.")
    if public(target):
        return f"[`{target}`][mcjax.{target}]"
    return f"`{match.group(1).split('.')[-1]}`" if "~" in match.group(0) else f"`{match.group(1)}`"


def code_link(match: re.Match) -> str:
    target = match.group(1).removeprefix("mcjax.")
    return f"[`{match.group(1)}`][mcjax.{target}]" if public(target) else match.group(0)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            text = CODE.sub(code_link, ROLE.sub(link, obj.docstring.value))
            obj.docstring.value = EXAMPLE.sub(example, text)
