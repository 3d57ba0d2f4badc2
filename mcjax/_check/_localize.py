"""The chain-rule localiser: when a composition's derivative is wrong, name the wrong link.

A composition built by :func:`mcjax.vector_chain_rule` keeps its links (innermost first).
:func:`check_chain` checks the whole; when that fails it walks the links in the order they are
applied, checking each at its own input, and names the first that fails.  When every link
passes, the composition itself is wrong (the Jacobians multiplied in the wrong order, say).
"""

from __future__ import annotations

import dataclasses

from mcjax._check._api import check
from mcjax._check._problem import name_of
from mcjax._check._report import Report


def check_chain(chain, x, **options) -> Report:
    """:func:`mcjax.check` of a composition, naming the first wrong link when it fails.

    Args:
      chain: a :class:`~mcjax.Differentiable` from :func:`~mcjax.vector_chain_rule` (or any
        ``Differentiable``; without links only the whole is checked).
      x: the point (one array).
      **options: passed to :func:`mcjax.check` (mode, dtype options, ...).

    Returns:
      The report of the whole, with ``links``: each link's own report, and a diagnosis line
      naming the first wrong link.
    """
    whole = check(chain.forward, chain.derivative, x, **options)
    links = getattr(chain, "links", ())
    if whole.ok or not links:
        return whole
    reports, first = [], None
    for k, link in enumerate(links):
        name = getattr(link, "name", "") or name_of(link.forward)
        inner = check_chain(link, x, **options) if getattr(link, "links", ()) else check(
            link.forward, link.derivative, x, **options)
        reports.append((f"{k + 1}/{len(links)} {name}", inner))
        if not inner.ok and first is None:
            first = (k, name)
        x = link.forward(x)
    if first is not None:
        line = (f"the first wrong link is {first[1]} (link {first[0] + 1} of {len(links)}, "
                "counted from the innermost)")
    else:
        line = ("every link is right on its own: the composition is wrong (the Jacobians "
                "multiplied in the wrong order, or a link evaluated at the wrong input?)")
    return dataclasses.replace(whole, links=tuple(reports), diagnosis=whole.diagnosis + (line,))
