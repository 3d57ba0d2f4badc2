"""The registry: every rule of the paper as a record, and how to add your own.

A ``mcjax.registry.Rule`` holds a forward function, its hand-derived derivative with respect to each
argument (``mcjax.Derivative``: the code and the formula), the paper section and the symbolic
shapes its tests, ``mcjax verify`` row and docs row are generated from.  ``mcjax.rule`` (also
``mcjax.rule``) registers one beside its forward function; ``mcjax.derivative`` (also
``mcjax.derivative``) gives the derivative of a registered function as called.
"""

from mcjax._check._verify import RuleResult, verify
from mcjax._registry import (
    REGISTRY,
    SECTIONS,
    Derivative,
    Registry,
    Rule,
    away_from_zero,
    derivative,
    normal,
    rule,
)

__all__ = [
    "Rule",
    "Derivative",
    "Registry",
    "REGISTRY",
    "SECTIONS",
    "rule",
    "derivative",
    "verify",
    "RuleResult",
    "normal",
    "away_from_zero",
]
