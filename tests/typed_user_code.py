# pyright: strict
"""A user's code, type-checked by pyright in strict mode (tests/test_public_api.py): the
public API of the checker, derive, the registry, the conventions and mcjax.testing is
annotated, so what a user gets back has a known type (mcjax ships py.typed).  Not a test
module: pytest never runs it."""

from typing import Any, Callable

import numpy as np

import mcjax
import mcjax.conventions
import mcjax.registry
import mcjax.testing


def loss(w: Any) -> Any:
    return (w**2).sum()


def grad(w: Any) -> Any:
    return 2 * w


def grads(w: Any) -> tuple[Any]:  # argnums a tuple: a tuple of derivatives
    return (grad(w),)


w = np.ones(3)
report: mcjax.Report = mcjax.check(loss, grads, w, argnums=(0,), rtol=1e-6, atol=0.0)
ok: bool = report.ok
words: str = str(report)
as_dict: dict[str, Any] = report.as_dict()
reports: list[mcjax.Report] = mcjax.check_points(loss, grad, [(w,)])
cases: list[mcjax.Report] = mcjax.check_cases([(loss, grad, (w,), 0)])
passed: mcjax.Report = mcjax.assert_derivative(loss, grad, w)
chain: mcjax.Report = mcjax.check_chain(mcjax.vector_chain_rule("sin", "tanh"), w)
derivative: Callable[..., Any] = mcjax.derive(loss, 0, strict=False)
by_hand: Callable[..., Any] = mcjax.derivative("relu", "x")
dense: Any = mcjax.densify(mcjax.Diagonal(w))
results: list[mcjax.registry.RuleResult] = mcjax.registry.verify(pattern="relu", dtypes=("float32",))
rtol: float = mcjax.conventions.check_rtol("float32", 4)
atol: float = mcjax.conventions.check_atol(np.float64)
moved: Any = mcjax.conventions.to_denominator(np.ones((2, 3)), 1)
tolerance: mcjax.conventions.Tolerance = mcjax.conventions.tolerance("float32")
sizes = mcjax.testing.dimensions(["m", "n"], max_size=3)
arrays = mcjax.testing.shaped_arrays("W: m n, x: n")
