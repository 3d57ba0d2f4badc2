"""The primitive table against the installed JAX: every primitive JAX can differentiate has an
entry (a JAX upgrade shows what is new), and each entry says what derive, the checker and the
diagnosis do with it."""

from __future__ import annotations

import pytest

from mcjax._primitives import TABLE, coverage, differentiable_primitives
from mcjax._primitives._table import BEHAVIOURS, FAMILIES


def test_every_differentiable_primitive_has_an_entry():
    names = differentiable_primitives()
    assert len(names) > 150  # JAX's own table was read, not an empty one
    missing = [row.name for row in coverage() if row.entry is None]
    assert not missing, f"primitives JAX can differentiate without an entry: {missing}"


def test_a_librarys_own_primitives_are_not_the_installed_jaxs():
    """Equinox registers primitives of its own in JAX's table on import (noinline,
    nondifferentiable_backward, ...): the coverage is the same whether or not a test before
    this one imported it."""
    pytest.importorskip("equinox")
    import equinox.internal  # noqa: F401
    from jax._src.interpreters import ad
    assert "noinline" in {p.name for p in ad.primitive_jvps}  # registered ...
    assert "noinline" not in differentiable_primitives()  # ... and not counted as JAX's


def test_every_entry_says_what_each_client_does():
    for name, entry in TABLE.items():
        assert entry.family in FAMILIES and entry.behaviour in BEHAVIOURS, name
        # derive: a structured rule, its body walked, or the reason for JAX's linear map
        assert entry.structured or entry.fallback or entry.behaviour in (
            "integer", "none", "piecewise constant"), name
        # the checker: a kink or a jump is read by a switch rule (or walked control flow)
        if entry.behaviour in ("kink", "jump") and entry.switch is None:
            assert entry.name in KNOWN_UNREAD, f"{name} switches but no rule reads it"


# switches the checker does not read yet: JAX's derivative is taken there (a false alarm is
# possible only where a finite-difference step crosses their switch)
KNOWN_UNREAD = {"cond", "scatter-min", "scatter-max", "top_k", "approx_top_k", "cummax",
                "cummin", "reduce"}


def test_the_everyday_primitives_are_structured():
    everyday = ["conv_general_dilated", "reduce_window_max", "reduce_window_sum", "gather",
                "scatter-add", "dynamic_slice", "dynamic_update_slice", "pad", "cumsum",
                "cumprod", "cummax", "sort", "top_k", "split", "cond", "scan", "atan2", "clamp",
                "erfc", "erf_inv", "lgamma", "digamma", "rem", "reshape", "reduce",
                "triangular_solve", "cholesky", "jit:inv", "jit:solve", "jit:slogdet"]
    assert [n for n in everyday if not TABLE[n].structured] == []
