"""The parts of a ``mcjax.Report``: the kinks, the slips the diagnosis names, fast mode's
projections, and the fields computed when first read (``Later``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class KinkEntry:
    """One entry at a kink: what JAX, the one-sided derivatives and the derivative give."""

    label: str
    jax: float
    left: float
    right: float
    got: float
    conventions: tuple[str, ...]  # the accepted values the derivative matches


@dataclass(frozen=True)
class Kinks:
    """Entries where ``f`` is not differentiable at the point, read from its jaxpr."""

    at: int  # entries whose one-sided derivatives differ
    jumps: int  # entries where f jumps (a discontinuity): only JAX's value is accepted
    followed: tuple[str, ...]  # conventions every kink entry agrees with
    asked: str | None
    entries: tuple[KinkEntry, ...]  # a few, for the report
    ok: bool
    note: str


@dataclass(frozen=True)
class Slip:
    """A slip the diagnosis named: its kind (for programs) and the sentence (for people).

    The kinds: ``"sign"``, ``"factor"`` (the whole derivative), ``"leaf-sign"``,
    ``"leaf-factor"`` (one leaf of a pytree), ``"transposed"``, ``"wrong-argument"``,
    ``"nonfinite"``; planted in ``f`` (``mcjax._check._slips``): ``"missing-term"``,
    ``"sign-in-term"``, ``"missing-factor"``, ``"other-branch"``, ``"missing-gate"``,
    ``"sign-dropped"``, ``"value-for-derivative"``, ``"neighbour-derivative"``,
    ``"before-transform"``, ``"count-off-by-one"``, ``"not-transposed"``,
    ``"kernel-not-flipped"``, ``"padding-off"``, ``"tap-missing"``; from the structure alone:
    ``"dense-for-diagonal"``, ``"diagonal-for-dense"``, ``"low-rank"``; and ``"incomplete"``
    (last) where the slips could not be planted in ``f``, with the reason."""

    kind: str
    sentence: str


@dataclass(frozen=True)
class Projection:
    """Fast mode: one projection ``u^T J v`` at one point."""

    point: int
    direction: int
    expected: float
    got: float
    allowed: float

    @property
    def ok(self) -> bool:
        return abs(self.got - self.expected) <= self.allowed


class Later:
    """A field of a ``mcjax.Report`` computed when first read: the diagnosis traces variants of
    ``f``, work worth doing only for a report somebody reads (``check_cases`` of many failing
    points, a test that asks ``.ok``).  ``compute`` returns every lazy field at once, as a
    dict, and runs once for all the fields made together."""

    def __init__(self, name: str, compute):
        self.name, self.compute = name, compute

    @staticmethod
    def fields(compute, *names: str) -> dict:
        once = functools.cache(compute)
        return {name: Later(name, once) for name in names}

    def resolve(self):
        return self.compute()[self.name]

    def __reduce__(self):  # a report sent to another process carries the value
        return (tuple, (tuple(self.resolve()),))
