r"""``mcjax.check_hessian``: a hand-derived second derivative, checked as the Jacobian of the gradient.

The Hessian of a scalar $f$ with respect to $\mathbf{x}$ is the Jacobian of $\nabla f$, in
numerator layout ``x.shape + x.shape``, exactly what ``jax.hessian`` returns.  So a user's
Hessian is checked by ``mcjax.check`` of ``jax.grad(f)`` against it, with every discipline of
the first-order checker (the forms ``H`` may take: ``_hessian_forms``): in full mode ``jax.jacfwd`` of the gradient (forward-over-reverse,
``jax.hessian`` itself) and ``jax.jacrev`` of it, float64 finite differences of the gradient
(an independent reference), the Taylor test, the tolerance policy that keeps float32 from
false alarms, and JAX's value where the gradient jumps (a ReLU's gate: the second derivative
is undefined there).  Above 256 coordinates (fast mode: $n^2$ over
``FULL_MODE_MAX_ENTRIES``) it compares $\mathbf{u}^\top H$ and its projections
$\mathbf{u}^\top H \mathbf{v}$ with JAX's exact product of the gradient's VJP at random
$\mathbf{u}$, $\mathbf{v}$ (no $n \times n$ array is made), and $H\mathbf{w}$ with float64
finite differences of the gradient along random $\mathbf{w}$ (``_hessian_fd``).  The
diagnosis applies the matrices to probes by forward-over-reverse HVPs.

The Gauss-Newton matrix $G = J^\top H_L J$ of $f = L \circ m$ is the Jacobian of the gradient
of $L(m(\boldsymbol\theta_0) + J(\boldsymbol\theta - \boldsymbol\theta_0))$ at
$\boldsymbol\theta_0$, the loss of the model linearised there: the same check again.

On failure, the first-order diagnosis (a factor, a sign, a missing term or one of low rank)
is preceded by the slips of second derivatives: an asymmetric $H$, the Gauss-Newton part
where the full Hessian was due (and the reverse), the Kronecker factors of a matrix
parameter in the wrong order.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from mcjax._check._api import check
from mcjax._check._hessian_diagnose import diagnose_hessian
from mcjax._check._hessian_fd import fd_comparison
from mcjax._check._hessian_forms import KINDS, derivative_of, gradient_of, is_operator, split
from mcjax._check._kinks import crosses, has_switches, switch_sides
from mcjax._check._problem import argument_spec
from mcjax._check._problem import name_of as _name_of
from mcjax._check._report import Report
from mcjax._check._report_parts import Later
from mcjax._core._arguments import describe
from mcjax._core._conventions import standard_promotion
from mcjax._core._errors import DerivativeError, ShapeError, shape_str
from mcjax._core._pytrees import STATE, OnTrained, leaf_roles, on_trained
from mcjax._core._tolerance import FAST_DIRECTIONS, FULL_MODE_MAX_INPUTS, HESSIAN_NEAR_KINK


def near_kinks(scalar_f, args: tuple, argnums: int) -> list[str]:
    """The coordinates of ``args[argnums]`` along which a step of ``HESSIAN_NEAR_KINK`` of
    the coordinate's scale (either way) switches a branch of ``f``'s gradient: at or near a
    kink of the gradient, where the second derivative is undefined (a ReLU's gate at
    ``z = 0``).  Empty when the gradient has no switch; names as the report's entries."""
    leaves = jax.tree_util.tree_leaves(args[argnums])
    if not all(hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)
               for leaf in leaves):
        return []  # a model with other leaves: its branches are not read
    x_flat, unravel = ravel_pytree(args[argnums])
    n = int(x_flat.shape[0])
    if n == 0 or n > FULL_MODE_MAX_INPUTS:
        return []

    def grad_flat(t):
        a = (*args[:argnums], unravel(t), *args[argnums + 1:])
        return ravel_pytree(jax.grad(scalar_f, argnums=argnums)(*a))[0]

    if not has_switches(jax.make_jaxpr(grad_flat)(x_flat).jaxpr):
        return []

    def crossing(x):
        _, here = switch_sides(grad_flat, x)
        scale = jnp.maximum(jnp.abs(x), jnp.sqrt(jnp.mean(x * x)))
        scale = jnp.where(scale > 0, scale, 1.0) * HESSIAN_NEAR_KINK
        steps = jnp.concatenate([jnp.diag(scale), -jnp.diag(scale)])

        def crossed(step):
            return crosses(here, switch_sides(grad_flat, x + step)[1])

        both = jax.vmap(crossed)(steps)
        return both[:n] | both[n:]

    with standard_promotion():
        hit = np.asarray(jax.jit(crossing)(x_flat))
    spec = argument_spec(scalar_f, args[argnums], argnums)
    return [spec.entry_name(int(j)) for j in np.nonzero(hit)[0]]


# -- the check -----------------------------------------------------------------------------
def check_hessian(f: Callable[..., Any] | tuple[Callable[..., Any], Callable[..., Any]],
                  H: Any, *args: Any, argnums: int = 0, kind: str = "hessian",
                  mode: str = "auto", points: int | None = None,
                  directions: int = FAST_DIRECTIONS, seed: int = 0, rtol: float | None = None,
                  atol: float | None = None) -> Report:
    r"""Check a hand-derived second derivative of a scalar ``f`` with respect to ``args[argnums]``.

    The Hessian $H = \partial^2 f / \partial\mathbf{x}^2$ is judged as the Jacobian of
    $\nabla f$ by ``mcjax.check`` (same references, tolerance policy, kinks and report):
    full mode (up to 256 coordinates: $n^2 \le$ 65,536 entries) against ``jax.jacfwd`` of the
    gradient (forward-over-reverse: ``jax.hessian``), ``jax.jacrev`` of it and float64 finite
    differences of the gradient; fast mode against JAX's exact $\mathbf{u}^\top H$ (the VJP
    of the gradient) and its projections $\mathbf{u}^\top H\mathbf{v}$ at random directions,
    and $H\mathbf{w}$ against float64 finite differences of the gradient along two random
    $\mathbf{w}$, without an $n \times n$ array.  A
    failing report's diagnosis names the slips of second derivatives first (asymmetric, a
    factor, the Gauss-Newton part only, the Kronecker factors swapped, a missing term).

    Args:
      f: the scalar function ``f(*args)``; or a pair ``(model, loss)`` meaning
        ``loss(model(*args))`` (close over the targets: ``loss = lambda z:
        mcjax.softmax_cross_entropy(z, labels)``), required for ``kind="gauss_newton"`` and
        letting the diagnosis of ``kind="hessian"`` name a Gauss-Newton matrix given for it.
      H: the second derivative, any of:

        - an array of shape ``x.shape + x.shape`` (numerator layout, as ``jax.hessian``), a
          flat ``(n, n)`` matrix (pytree leaves in ``jax.tree_util`` order, each row-major),
          or ``jax.hessian``'s nested structure for a pytree ``x``: the value at ``args``;
        - a structured operator, by duck typing: an object with ``.hvp(v) -> H v`` or
          ``.dense()``; ``.hvp`` is used when it has both.  ``v`` is shaped like ``x``, or
          flat (``ravel_pytree`` order) when the operator's ``shape`` is ``(n, n)``, as
          ``mcjax.hessian``'s operators are; ``.dense()`` may be either form;
        - a structured ``mcjax.Jacobian`` of shape ``x.shape + x.shape`` (a registry rule's
          second derivative returns one);
        - a function ``H(*args)`` returning any of those (then also checked at ``points``
          extra points);
        - with ``kind="hvp"``: a Hessian-vector product function ``H(v, *args) -> H v``.
      *args: the point; ``args[argnums]`` may be a pytree of float arrays (an MLP's params),
        or a model: its trained leaves are differentiated (an nnx Module's ``nnx.Param``,
        linen's ``"params"``) and ``H`` is with respect to them (``mcjax.hessian``'s
        operator, a flat ``(n, n)`` matrix over them); its state is passed as it is.
      argnums: the one argument (an int).
      kind: ``"hessian"`` (the full Hessian), ``"hvp"`` (the full Hessian as an HVP
        function), ``"gauss_newton"`` ($J^\top H_L J$ of ``f = (model, loss)``, $J$ the
        model's Jacobian at ``args``, $H_L$ the loss's Hessian at the model's output) or
        ``"kfac"``: ``H`` is ``{weight path: (A, G)}``, each dense layer's Kronecker factors of
        ``f = loss(params, batch)`` at ``args = (params, batch)``, judged against
        ``mcjax.kfac_factors`` (exact Gauss-Newton estimator) by
        ``mcjax.kfac_factor_problems``, whose sentences are the diagnosis.
      mode: ``"auto"``, ``"full"`` or ``"fast"``, as ``mcjax.check``.
      points: as ``mcjax.check``; a fixed array or operator, and the Gauss-Newton matrix, are
        checked at ``args`` only.
      directions: fast mode's random directions per point, as ``mcjax.check``.
      seed: seeds the directions and points, as ``mcjax.check``.
      rtol: overrides the tolerance policy's relative threshold, as ``mcjax.check``.
      atol: overrides its absolute floor, as ``mcjax.check``.

    Returns:
      A ``mcjax.Report`` of ``d grad f / d args[argnums]``.

    Raises:
      ShapeError: ``f`` is not scalar; ``H`` has the wrong shape (a ``DerivativeShapeError``;
        the message names both).
      DtypeError: ``H`` is not floating point, or the argument is not.
      TypeError, ValueError: an option or ``f``, ``H`` of the wrong kind (one sentence);
        for ``kind="kfac"``, a model with state (an ``nnx.BatchStat``, ``batch_stats``).

    Example:

        >>> A = jnp.array([[1.0, 2.0], [0.0, 3.0]])
        >>> f = lambda x: x @ A @ x
        >>> mcjax.check_hessian(f, A + A.T, jnp.ones(2)).ok
        True
        >>> mcjax.check_hessian(f, 2 * A, jnp.ones(2)).diagnosis[0][:32]
        'asymmetric: H is not symmetric ('
    """
    if kind not in KINDS:
        raise ValueError(f"mcjax.check_hessian: kind={kind!r}; expected one of "
                         f"{', '.join(map(repr, KINDS))}")
    if not isinstance(argnums, int) or isinstance(argnums, bool):
        raise TypeError(f"mcjax.check_hessian: argnums={argnums!r}; expected one int (the "
                        "Hessian with respect to one argument, which may be a pytree)")
    if not -len(args) <= argnums < len(args):
        raise ValueError(f"mcjax.check_hessian: argnums={argnums} but f is given "
                         f"{len(args)} argument{'s' if len(args) != 1 else ''}")
    argnums %= len(args)
    if kind == "kfac":
        from mcjax._check._hessian_kfac import kfac_report

        if not callable(f):
            raise TypeError("mcjax.check_hessian: kind='kfac' takes f as loss(params, batch); "
                            f"got {type(f).__name__}")
        _refuse_state(args, argnums)
        return kfac_report(f, H, args, rtol=rtol, atol=atol, name=_name_of(f))
    scalar_f, pair, name = split(f, kind)
    # a model: its trained leaves are differentiated, its state and the rest passed as they
    # are (one more argument, last, that nothing differentiates)
    scalar_f, with_rest = on_trained(scalar_f, argnums, args)
    if with_rest is not args:
        args = with_rest
        if pair is not None:
            pair = (OnTrained(pair[0], argnums), pair[1])
        if kind == "hvp" and callable(H):
            H = _hvp_on_trained(H, argnums)
        elif callable(H) and not hasattr(H, "shape") and not is_operator(H):
            H = OnTrained(H, argnums)
    out = jax.eval_shape(scalar_f, *args)
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        got = (f"shape {shape_str(out.shape)}" if isinstance(out, jax.ShapeDtypeStruct)
               else describe(out))
        raise ShapeError(f"mcjax.check_hessian: f returns {got}; expected a scalar, shape (): "
                         "the Hessian is that of a scalar function (sum or average a vector "
                         "output first)")
    derivative, moves, h_name = derivative_of(H, kind, args, argnums)
    fixed = not moves or kind == "gauss_newton"
    if fixed and points not in (None, 1):
        raise ValueError(f"mcjax.check_hessian: points={points}, but "
                         + ("the Gauss-Newton matrix is checked where the model is linearised"
                            if kind == "gauss_newton" else "H is a value at args, not a "
                            "function of them")
                         + "; expected points=None or 1")
    derivative.name = h_name
    gradient = gradient_of(scalar_f, pair, kind, argnums, name)
    checked, at = derivative, args
    if kind == "gauss_newton":  # the gradient takes the linearisation point last
        def checked(*a):
            return derivative(*a[:-1])

        checked.name, at = h_name, (*args, args[argnums])
    report = check(gradient, checked, *at, argnums=argnums, mode=mode,
                   points=1 if fixed else points, directions=directions, seed=seed,
                   rtol=rtol, atol=atol)
    notes = report.notes + (("checked as the Jacobian of the gradient: "
                             + ("jax.jacfwd of it is jax.hessian (forward-over-reverse)"
                                if report.mode == "full" else
                                "u^T H and u^T H v by JAX's VJP of it, no n x n array")),)
    kinks = near_kinks(scalar_f, args, argnums)
    if kinks:
        shown = ", ".join(kinks[:6]) + (f" and {len(kinks) - 6} more" if len(kinks) > 6 else "")
        notes += (f"at or near a kink of f's gradient along {len(kinks)} coordinate"
                  f"{'s' if len(kinks) != 1 else ''} ({shown}): a step of "
                  f"{HESSIAN_NEAR_KINK:g} of the coordinate's scale switches a branch (a ReLU's "
                  "gate 1[z > 0] at z = 0); the second derivative is undefined at the kink and "
                  "jumps across it (0 on either side for a piecewise-linear gradient)",)
    raw = {f.name: object.__getattribute__(report, f.name) for f in dataclasses.fields(report)}
    if report.mode == "fast":  # finite differences: the reference JAX's products are not
        fd, why = fd_comparison(gradient, checked, at, argnums, report.threshold, seed)
        notes += (why,) if why else ()
        if fd is not None:
            raw.update(comparisons=report.comparisons + (fd,), ok=report.ok and fd.ok)
    if raw["ok"]:
        return Report(**{**raw, "notes": notes})

    def diagnosis():  # when read: the second-order slips, else the first-order diagnosis
        slips = tuple(diagnose_hessian(scalar_f, pair, kind, derivative, args, argnums, report))
        if not slips:
            slips = report.slips
        return {"slips": slips, "diagnosis": tuple(s.sentence for s in slips)}

    return Report(**{**raw, "notes": notes, **Later.fields(diagnosis, "slips", "diagnosis")})


def _hvp_on_trained(H, position: int):
    """An HVP function ``H(v, *args)`` called with the arguments :class:`OnTrained` passes
    (the trained part, the rest last): ``v`` is shaped like the trained part."""

    @functools.wraps(H)
    def hvp(v, *args):
        return H(v, *OnTrained(lambda *a: a, position)(*args))

    return hvp


def _refuse_state(args: tuple, argnums: int) -> None:
    """kind='kfac' with a model with state (an ``nnx.BatchStat``, linen's ``batch_stats``):
    refused in one sentence, K-FAC's factors are of the parameters alone."""
    sources = sorted({source for role, source in leaf_roles(args[argnums])
                      if role == STATE and source is not None})
    if sources:
        raise TypeError(
            f"mcjax.check_hessian: args[{argnums}] is a model with state ({', '.join(sources)}); "
            "expected for kind='kfac' its parameters alone (nnx.split(model, nnx.Param, ...), "
            "variables['params']) with the state closed over in f")


def assert_hessian(f, H, *args: Any, **options: Any) -> Report:
    """``mcjax.check_hessian``, raising ``mcjax.DerivativeError`` (an ``AssertionError``) on
    failure; takes the same arguments and returns the passing report."""
    __tracebackhide__ = True
    report = check_hessian(f, H, *args, **options)
    if not report.ok:
        raise DerivativeError(report)
    return report
