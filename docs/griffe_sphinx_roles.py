"""A griffe extension: Sphinx roles in mcjax's docstrings become mkdocstrings links.

The docstrings cross-reference with Sphinx roles (``:class:`~mcjax.Jacobian```,
``:func:`vector_chain_rule```), which Python's own ``help()`` shows readably. For the site,
a role naming a public name (one in ``mcjax.__all__``, or a member of one, written
``Class.member``) becomes a link to its API entry; any other role becomes inline code.
A reST ``Example::`` literal block becomes a Google-style example with a code block.
"""

from __future__ import annotations

import re

import griffe

import mcjax

ROLE = re.compile(r":(?:class|meth|func|data|mod|attr|obj|exc):`~?([\w.]+)`")
# reST's "Example::" and the indented literal block after it: a Google-style "Example:"
# section holding a fenced code block
EXAMPLE = re.compile(r"^( *)(Examples?)::\n\n((?:\1 +\S.*\n?|\n)+)", re.M)


def example(match: re.Match) -> str:
    indent, title, block = match.groups()
    code = block.rstrip("\n")
    inner = re.match(r" *", code).group(0)
    return f"{indent}{title}:\n{inner}```python\n{code}\n{inner}```\n\n"


def link(match: re.Match) -> str:
    target = match.group(1).removeprefix("mcjax.")
    head = target.split(".")[0]
    if head in mcjax.__all__ and target.count(".") <= 1 and head != "rules":
        return f"[`{target}`][mcjax.{target}]"
    return f"`{match.group(1).split('.')[-1]}`" if "~" in match.group(0) else f"`{match.group(1)}`"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = EXAMPLE.sub(example, ROLE.sub(link, obj.docstring.value))
