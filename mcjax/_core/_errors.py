"""Error types of mcjax and the helpers that build their messages.

Every message is a sentence that names the function, the argument, what was expected and
what arrived, e.g. ``mcjax.affine: W has shape (3, 4) but x has shape (5,); expected x of
shape (4,)``.  Checks run on static shapes and dtypes, so they fire at trace time, before any
computation, under ``jax.jit`` as well as eagerly.  In IPython, their tracebacks stop at
the user's call of mcjax (``_core._ipython``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mcjax._core._conventions import is_floating
from mcjax._core._ipython import ShownAtTheCall


class ShapeError(ShownAtTheCall, ValueError):
    """An argument has a shape that does not fit the others."""


class DerivativeShapeError(ShapeError):
    """The derivative under test returned a shape or structure no derivative of ``f`` has: a
    wrong derivative (``mcjax check`` exits 1 on it, as on a failed verdict), raised as a
    ``ShapeError`` because nothing can be compared."""


class DtypeError(ShownAtTheCall, TypeError):
    """An argument has a dtype that mcjax cannot differentiate or combine."""


def shape_str(shape: Sequence[int]) -> str:
    """``(3, 4)``, ``(5,)`` or ``()``, as Python prints a tuple."""
    return str(tuple(int(d) for d in shape))


class Problems:
    """Collects every problem with one call's arguments, then raises them all at once.

    Example:

        >>> problems = Problems("affine")
        >>> problems.expect_ndim("W", np.ones(3), 2)
        False
        >>> problems.raise_if_any()
        Traceback (most recent call last):
        ...
        mcjax.ShapeError: mcjax.affine: W has shape (3,) (1 dimensions); expected 2 dimensions
    """

    def __init__(self, function: str):
        self.function = function if function.startswith("mcjax.") else f"mcjax.{function}"
        self.shape_problems: list[str] = []
        self.dtype_problems: list[str] = []

    def shape(self, message: str) -> None:
        self.shape_problems.append(message)

    def dtype(self, message: str) -> None:
        self.dtype_problems.append(message)

    def expect_ndim(self, name: str, x, ndim: int | tuple[int, ...]) -> bool:
        """Record a problem unless ``x.ndim`` is ``ndim`` (or one of them). Returns whether it is."""
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        got = np.ndim(x)
        if got in allowed:
            return True
        want = " or ".join(str(a) for a in allowed)
        self.shape(
            f"{name} has shape {shape_str(np.shape(x))} ({got} dimensions); "
            f"expected {want} dimension{'s' if allowed != (1,) else ''}"
        )
        return False

    def expect_same_shape(self, names: Sequence[str], arrays: Sequence) -> bool:
        """Record a problem unless all ``arrays`` share one shape."""
        shapes = [np.shape(a) for a in arrays]
        if all(s == shapes[0] for s in shapes):
            return True
        listed = ", ".join(f"{n} {shape_str(s)}" for n, s in zip(names, shapes))
        self.shape(f"arguments must have the same shape; got {listed}")
        return False

    def expect_same_float_dtype(self, names: Sequence[str], arrays: Sequence) -> None:
        """Record a problem when two floating arrays of different dtypes meet.

        Python scalars and weakly-typed values are allowed to join any floating dtype, as in
        JAX's own promotion; two committed dtypes (float32 and float64) are not silently mixed.
        """
        seen = [
            (n, np.dtype(a.dtype))
            for n, a in zip(names, arrays)
            if hasattr(a, "dtype") and is_floating(a) and not getattr(a, "weak_type", False)
        ]
        if len({d for _, d in seen}) > 1:
            listed = " but ".join(f"{n} has dtype {d.name}" for n, d in seen)
            self.dtype(f"{listed}; expected one floating dtype (cast with .astype)")

    def raise_if_any(self) -> None:
        """Raise one error carrying every recorded problem (shape problems first)."""
        if self.shape_problems:
            raise ShapeError(self._message(self.shape_problems + self.dtype_problems))
        if self.dtype_problems:
            raise DtypeError(self._message(self.dtype_problems))

    def _message(self, problems: list[str]) -> str:
        return f"{self.function}: " + "; and ".join(problems)


def require_floating(function: str, name: str, x) -> None:
    """Raise ``mcjax.DtypeError`` unless ``x`` is floating point.

    A derivative with respect to an integer array would silently be zero (or an integer
    Jacobian); mcjax refuses instead.
    """
    if not is_floating(x):
        dtype = getattr(x, "dtype", type(x).__name__)
        raise DtypeError(
            f"mcjax.{function}: cannot differentiate with respect to {name}, which has "
            f"dtype {np.dtype(dtype).name if hasattr(x, 'dtype') else dtype}; expected a "
            f"floating dtype such as float32 (cast with {name}.astype(jnp.float32))"
        )


class TraceError(ShownAtTheCall, TypeError):
    """JAX could not trace a function mcjax must trace (``mcjax.check`` traces and compiles
    ``f`` and the derivative, as ``jax.jit`` does): Python control flow on a traced value,
    a NumPy call on one, or an error the function itself raised."""


class DerivativeError(ShownAtTheCall, AssertionError):
    """A derivative failed ``mcjax.assert_derivative`` (a custom rule ``mcjax.assert_rule``),
    or a model's hand-derived gradient failed the check of ``mcjax.train`` at its first
    batch; ``.report`` says why.

    The message's first line says what is wrong: the diagnosis and what failed (``the sign
    is flipped (d loss / d args[0])``), or ``mcjax.train``'s sentence, so that a one-line
    summary (pytest's, a log's) shows it; the whole report follows.
    """

    def __init__(self, report, message: str | None = None):
        # message: the report with a first line that says where it was found (mcjax.train)
        if message is not None or not hasattr(report, "function"):  # or a message alone
            super().__init__(str(report) if message is None else message)
        else:
            why = [*report.diagnosis, *report.problems, *report.where]
            headline = why[0] if why else "the derivative fails its check"
            super().__init__(f"{headline} (d {report.function} / d {report.wrt})\n{report}")
        self.report = report


class CheckpointError(ShownAtTheCall, ValueError):
    """A checkpoint folder cannot serve this run: it belongs to another run, another process
    writes to it, it holds no intact checkpoint to resume, or its checkpoint was written with
    other settings or arrays (the message lists every difference and the ways out)."""


class NonFiniteLossError(ShownAtTheCall, FloatingPointError):
    """Training produced a NaN or infinite loss, or parameters (or optimizer state) holding
    NaN or Inf after an update whose loss was finite.

    Attributes:
      step: the 1-based optimizer step whose loss or update was not finite.
      epoch: the 1-based epoch that step belongs to.
      checkpoint: the path of the last good checkpoint (kept on disk, all finite), or None.
      value: the step's loss (finite when the update was what broke the state).
    """

    def __init__(self, message: str, *, step: int, epoch: int, checkpoint, value: float):
        super().__init__(message)
        self.step = step
        self.epoch = epoch
        self.checkpoint = checkpoint
        self.value = value


class UsageError(ShownAtTheCall, Exception):
    """A user's mistake on the command line: printed as one line, exit status 2."""
