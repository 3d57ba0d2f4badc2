"""What the checker checks: ``f``, the derivative under test and the arguments.

``prepare`` validates a call of ``mcjax.check`` from static shapes and dtypes (before
any computation), splits the arguments into arrays, which are traced, and everything else
(integer flags, strings, ``None``), which is static, and traces ``f`` and the derivative
afresh.  The compiled checks are keyed on those traces (``mcjax._program._trace``), never on the
functions' identity: a check after an edit to a helper or a global that ``f`` or the
derivative reads runs the edited code, and a repeated check of unchanged code reuses the
compiled program.
"""

from __future__ import annotations

import inspect
import os
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._check._case import ByIdentity, Prepared, Static
from mcjax._check._flat import FlatSpec
from mcjax._check._kinks import has_switches
from mcjax._check._returned import as_derivative, as_vjp_result, is_pullback, pullback_of
from mcjax._check._under_test import validate
from mcjax._core._arguments import (
    argnums_spec,
    describe,
    numbers_as_array,
    positions,
    require_callable,
)
from mcjax._core._compat import enable_x64
from mcjax._core._conventions import is_floating, standard_promotion, wider
from mcjax._core._errors import DtypeError, ShapeError, TraceError, require_floating
from mcjax._core._ipython import code_location
from mcjax._core._pytrees import floats_as_arrays, held_state, partition
from mcjax._program._inspect import lowest_precision
from mcjax._program._trace import Keyed, function_key, signature
from mcjax._program._walk import custom_rules, equations

LAYOUTS = ("numerator", "denominator")


def _is_array(leaf) -> bool:
    """A leaf the checker traces; a PRNG key (an ``nnx.Rngs``'s) is held as a value of ``f``,
    as it is never differentiated and NumPy cannot hold it."""
    return (isinstance(leaf, (jax.Array, np.ndarray, np.generic))
            and not jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key))


def _hashable(leaf):
    try:
        hash(leaf)
        return leaf
    except TypeError:
        return ByIdentity(leaf)


def name_of(fn) -> str:
    fn = fn.fn if isinstance(fn, Keyed) else fn  # the function the user gave
    if isinstance(getattr(fn, "name", None), str):  # a registry Rule, a named function
        return fn.name
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _structs(leaves) -> tuple:
    return tuple(jax.ShapeDtypeStruct(jnp.shape(d), jnp.result_type(d)) for d in leaves)


_INTERNAL = (os.sep + "jax" + os.sep, os.sep + "jaxlib" + os.sep,
             os.path.join("mcjax", "_check"), os.path.join("mcjax", "_program"))
_CONTROL_FLOW = (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                 jax.errors.TracerIntegerConversionError, jax.errors.NonConcreteBooleanIndexError)


def _user_line(error: BaseException) -> str:
    """Where in the user's code ``error`` was raised: `` at my_model.py:12 (`if x > 0:`)``,
    `` at Cell In[11], line 2 (...)`` in a notebook."""
    frames = [fr for fr in traceback.extract_tb(error.__traceback__)
              if not any(part in fr.filename for part in _INTERNAL)]
    if not frames:
        return ""
    fr = frames[-1]
    code = f" (`{fr.line.strip()}`)" if fr.line else ""
    return f" at {code_location(fr.filename, fr.lineno)}{code}"


def _traced(what: str, fn, *structs, hint: str = "", **options):
    """``function_key``, with a user's mistake turned into one sentence (``hint``: what to
    add when the function raised a ``TypeError``)."""
    try:
        return function_key(fn, *structs, **options)
    except (ShapeError, DtypeError) as e:  # mcjax's own sentence, without JAX's trace note
        setattr(e, "__notes__", [n for n in getattr(e, "__notes__", [])
                                 if "JAX has removed" not in n])
        raise
    except _CONTROL_FLOW as e:
        raise TraceError(
            f"mcjax.check: {what} cannot be traced{_user_line(e)}: Python control flow or NumPy "
            "on a traced value. mcjax.check traces and compiles f and the derivative, as "
            "jax.jit does; use jnp.where or jax.lax.cond for branches on values, and jnp "
            f"instead of np ({type(e).__name__})") from None
    except Exception as e:  # noqa: BLE001 - the user's function raised: say so in one line
        message = str(e).split("\n", 1)[0]
        raise TraceError(f"mcjax.check: calling {what} raised {type(e).__name__}"
                         f"{_user_line(e)}: "
                         f"{message.rstrip('.') + hint if hint and isinstance(e, TypeError) else message}"
                         ) from None


def prepare(f, derivative, args: tuple, argnums: int | tuple[int, ...], layout: str,
            traces: dict | None = None, function: str = "check") -> Prepared:
    """Validate one call of ``mcjax.check``, split its arguments and trace both functions.

    ``traces``: a dict that one call checking many cases passes to every case, so that the
    same ``f`` and derivative at the same shapes are traced once per call (never across
    calls: an edit between two calls must be seen).  ``function``: the public function the
    argument errors name (``check_points``).

    Raises:
      TypeError: ``f`` or the derivative is not a function, ``argnums`` not an int or tuple.
      ValueError: ``argnums`` is out of range (``layout`` is validated by the callers).
      DtypeError: the differentiated argument or ``f``'s output is not floating point.
      ShapeError: either is empty.
    """
    require_callable(function, "f", f, "a function f(*args)")
    require_callable(function, "derivative", derivative, "a function of the same arguments as "
                     "f returning the derivative (for a fixed value J: lambda *args: J)")
    spec = argnums_spec(function, argnums)
    given = [numbers_as_array(a) for a in args]
    wrt = positions(function, spec, len(given))
    argnums = wrt[0] if isinstance(spec, int) else wrt
    for i in wrt:
        given[i] = floats_as_arrays(given[i])  # a Python float is differentiated, as in jax.grad
        _require_differentiable(function, f"args[{i}]", given[i])
    args = tuple(given)
    leaves, treedef = jax.tree_util.tree_flatten(args)
    dynamic_positions = tuple(i for i, leaf in enumerate(leaves) if _is_array(leaf))
    static_leaves = tuple(None if _is_array(leaf) else _hashable(leaf) for leaf in leaves)
    dynamic = tuple(leaves[i] for i in dynamic_positions)
    static = Static(f, derivative, argnums, layout, treedef, static_leaves, dynamic_positions)
    x_spec = argument_spec(f, static.x_of(args), argnums)
    structs = _structs(dynamic)
    seen = None
    if traces is not None:
        seen = (id(f), id(derivative), argnums, layout, treedef,  # 1 == 1.0 == True: types too
                tuple((type(v), v) for v in static_leaves), dynamic_positions, signature(structs))
        if seen in traces:
            return traces[seen]._replace(dynamic=dynamic)
    f_trace = _traced("f", lambda *d: f(*static.args(d)), *structs, lifted=True)
    out, f_jaxpr = f_trace.out_shape, f_trace.closed
    for leaf in jax.tree_util.tree_leaves(out):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            why = ("mcjax.check judges derivatives of real functions" if jnp.issubdtype(
                leaf.dtype, jnp.complexfloating) else "an integer output has no derivative")
            raise DtypeError(
                f"mcjax.check: f returns dtype {np.dtype(leaf.dtype).name}; expected a real "
                f"floating output ({why})"
            )
    out_spec = FlatSpec.of(out)
    if out_spec.size == 0:
        raise ShapeError(
            f"mcjax.check: f returns an empty output ({out_spec.describe()}); expected at "
            "least one entry"
        )
    held = held_state(args[argnums] if isinstance(argnums, int)
                      else tuple(args[i] for i in argnums))
    d_trace, pullback, dropped = _derivative_trace(derivative, static, structs, x_spec,
                                                   out_spec, held)
    static = static._replace(
        f=Keyed(f, ()).with_program((f_trace.key,), signature(structs), f_trace),
        derivative=Keyed(derivative, ()).with_program(d_trace.key, signature(structs), d_trace),
        switches=has_switches(f_jaxpr.jaxpr),
        reverse_only=bool(custom_rules(f_jaxpr.jaxpr) - {"custom_jvp_call"}),
        pullback=pullback)
    eps = [jnp.finfo(d).eps for d in x_spec.dtypes + out_spec.dtypes]
    dtype = (x_spec.dtypes + out_spec.dtypes)[int(np.argmax(eps))]
    prepared = Prepared(static, dynamic, x_spec, out_spec, dtype, f_jaxpr, d_trace.closed,
                        not_compared=tuple((p, held[p]) for p in dropped))
    if seen is not None and traces is not None:
        traces[seen] = prepared
    return prepared


def _require_differentiable(function: str, name: str, arg) -> None:
    """The differentiated argument has floating leaves to differentiate (an array, a pytree,
    a model: its trained leaves; its state and the rest are not differentiated), none
    complex, and at least one entry."""
    dynamic = jax.tree_util.tree_leaves_with_path(partition(arg)[0])
    if not dynamic:
        leaves = jax.tree_util.tree_leaves_with_path(arg)
        if not leaves:
            raise ShapeError(f"mcjax.{function}: {name} is {describe(arg)} without arrays; "
                             "expected a floating array (or a pytree or model holding some) "
                             "to differentiate with respect to")
        path, leaf = leaves[0]
        if isinstance(leaf, (bool, int, np.generic, np.ndarray, jax.Array)):
            require_floating(function, name + jax.tree_util.keystr(path), jnp.asarray(leaf))
        raise TypeError(f"mcjax.{function}: {name} is {describe(arg)} without floating "
                        "arrays; expected a floating array (or a pytree or model holding "
                        "some) to differentiate with respect to")
    for path, leaf in dynamic:
        require_floating(function, name + jax.tree_util.keystr(path), leaf)
    if not sum(np.size(leaf) for _, leaf in dynamic):
        raise ShapeError(
            f"mcjax.{function}: {name} is empty ({FlatSpec.of(partition(arg)[0]).describe()}); "
            "expected at least one entry to differentiate with respect to")


def _derivative_trace(derivative, static: Static, structs: tuple, x_spec: FlatSpec,
                      out_spec: FlatSpec, held: dict[str, str]):
    """Trace the derivative (its value, or for a VJP function its value at a cotangent) and
    check its shapes against ``f``'s before any program runs.  Returns the (lifted) trace, a
    function of the traced leaves and the cotangent's, whether the derivative is a VJP
    function, and the plain paths of the entries it gave at the argument's state (``held``),
    which are dropped, not compared."""
    cotangent = tuple(jax.ShapeDtypeStruct(s, d) for s, d in zip(out_spec.shapes, out_spec.dtypes))
    pullback: list[bool] = []
    dropped: list[str] = []

    def traced(dynamic, u):
        value = derivative(*static.args(dynamic))
        if is_pullback(value):
            pullback.append(True)
            return as_vjp_result(pullback_of(value)(out_spec.treedef.unflatten(u)), x_spec,
                                 held, dropped)
        return as_derivative(value, x_spec, out_spec, held, dropped)

    args = static.args(structs)
    functions = any(callable(leaf) for i in static.positions
                    for leaf in jax.tree_util.tree_leaves(args[i]))
    hint = ("; the differentiated argument holds functions (a model's activation), which "
            "jax.grad cannot take: differentiate its arrays with eqx.filter_grad, or pass "
            "the arrays alone (eqx.partition)") if functions else ""
    integers = [what for what in held.values() if what.startswith("nnx.Rng")]
    if integers and not hint:
        hint = (f"; the differentiated argument holds integer state ({integers[0]}: an "
                "nnx.Rngs' count): differentiate its nnx.Param with nnx.grad")
    trace = _traced("the derivative", traced, structs, cotangent, differentiated=False,
                    lifted=True, hint=hint)
    validate(trace.out_shape, x_spec, out_spec, static.layout, bool(pullback))
    return trace, bool(pullback), tuple(dropped)


def not_compared_note(p: Prepared) -> tuple[str, ...]:
    """The report's note on the derivative's entries at the argument's state, which were not
    compared (empty: it gave none)."""
    if not p.not_compared:
        return ()
    kinds = ", ".join(dict.fromkeys(kind for _, kind in p.not_compared))
    paths = ", ".join(path for path, _ in p.not_compared[:6]) + (
        ", ..." if len(p.not_compared) > 6 else "")
    return (f"the derivative also gave entries at {len(p.not_compared)} leaves of the model's "
            f"state ({kinds}: {paths}), which were not compared: mcjax differentiates the "
            "trained leaves only (nnx.Param, linen's 'params'); the state is passed to f as "
            "it is",)


def argument_names(f, positions: tuple[int, ...]) -> tuple[str, ...]:
    """The names ``f`` gives its arguments ``0 .. max(positions)`` (``params``; ``args[k]``
    where its signature does not say: ``*args``, a builtin), indexed by argument: the last is
    the differentiated one's when ``positions`` is one argument."""
    fn = f.fn if isinstance(f, Keyed) else f
    try:
        parameters = [q for q in inspect.signature(fn).parameters.values()
                      if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        parameters = []
    return tuple(parameters[k].name if k < len(parameters) else f"args[{k}]"
                 for k in range(max(positions) + 1))


def argument_spec(f, x, argnums: int | tuple[int, ...]) -> FlatSpec:
    """The spec of ``f``'s differentiated argument ``x`` (``args[argnums]``, or the tuple of
    arguments ``argnums``), its leaves named as ``f`` names them: ``params['W'][1, 2]``."""
    positions = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    return FlatSpec.of(x).named_by(argnums, argument_names(f, positions))


def named_like(wrapper, f):
    """``wrapper``, a function of ``*args`` that the checker builds around ``f`` (the
    gradient of ``f`` for ``check_hessian``), given ``f``'s signature: its report names the
    arguments as ``f`` does (``argument_names``).  Returns ``wrapper``."""
    try:
        wrapper.__signature__ = inspect.signature(f.fn if isinstance(f, Keyed) else f)
    except (TypeError, ValueError):  # a builtin without one: args[k]
        pass
    return wrapper


def reference_key(p: Prepared) -> tuple[Prepared, str]:
    """Full mode evaluates ``f`` on its arguments cast to float64 (finite differences, the
    Taylor test) and to float32 (``f``'s own rounding): key those traces too.  Returns the
    prepared check with the longer key, and the precision ``f`` really computes in at float64
    arguments (a function that rounds to float32 internally has float32 references)."""
    static = p.static

    def cast(dtype):  # shapes and dtypes only: casting the arrays would compile eager programs
        return [jax.ShapeDtypeStruct(s.shape, dtype if jnp.issubdtype(s.dtype, jnp.floating)
                                     else s.dtype) for s in _structs(p.dynamic)]

    f = static.f
    native = signature(_structs(p.dynamic))
    precision = "float64"
    if any(e.primitive.name == "random_bits" for e in equations(p.f_jaxpr.jaxpr)):
        # f draws in its arguments' dtype (jax.random.normal(key, shape, x.dtype)): in another
        # precision it draws other numbers, and their difference is no rounding of f's
        static = static._replace(draws=True)
    # the checker's casts, not the user's: traced under standard promotion (a float32 constant
    # of f meets the float64 arguments the references need)
    with enable_x64(True), standard_promotion():
        for dtype in (jnp.float64, jnp.float32):
            structs = cast(dtype)
            if signature(structs) == native:  # the native trace serves
                closed = p.f_jaxpr
            else:
                try:
                    trace = function_key(lambda *d: f.fn(*static.args(d)), *structs,
                                         lifted=True)
                except (TypeError, ValueError):
                    if dtype != jnp.float32:
                        raise
                    static = static._replace(no_float32=True)  # f is float64 only
                    continue
                closed = trace.closed
                f = f.with_program((*tuple(f.key), trace.key), signature(structs), trace)  # type: ignore[arg-type]
            if dtype == jnp.float64:
                precision = lowest_precision(closed.jaxpr) or "float64"
    return p._replace(static=static._replace(f=f)), precision


def cast_floating(tree, dtype):
    """Every floating array leaf of ``tree`` cast to ``dtype``; the rest untouched."""
    return jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if _is_array(a) and is_floating(a) else a, tree
    )


def flat_function(static: Static, args: tuple, x_spec: FlatSpec, out_spec: FlatSpec):
    """``f`` as a function of the flat argument vector, returning the flat output vector."""

    def f_flat(x_vec):
        new = static.with_x(args, x_spec.unflatten(x_vec))
        out = static.f_of(new)  # the keyed trace
        return out_spec.flatten(out, wider(*jax.tree_util.tree_leaves(out)))

    return f_flat


def flat_at(static: Static, x_spec: FlatSpec, out_spec: FlatSpec, dynamic, dtype=None):
    """``(f_flat, x)``: ``flat_function`` at the point ``dynamic`` and the flat point,
    with every floating argument cast to ``dtype`` (None: as they are)."""
    args = static.args(dynamic)
    if dtype is not None:
        args = cast_floating(args, dtype)
    return (flat_function(static, args, x_spec, out_spec),
            x_spec.flatten(static.x_of(args), dtype))


def jacobian_of(static: Static, f_flat):
    """JAX's Jacobian of ``f_flat``: ``jax.jacrev`` where ``f`` has a custom VJP (no forward
    mode), else ``jax.jacfwd``."""
    return jax.jacrev(f_flat) if static.reverse_only else jax.jacfwd(f_flat)
