"""Traced programs and their keys: a function is known by the program it traces to.

``jax.jit`` keys its caches on the identity of the Python function it wraps: after a user
edits a helper or a global that ``f`` reads, a jitted ``f`` (or anything jitted with ``f``
as a static argument) returns the old program's results.  Even ``jax.make_jaxpr(f)`` serves
the old trace.  mcjax never relies on that identity.  It traces the user's function afresh on
every call, through a new wrapper object (so JAX's trace cache cannot answer), and reuses a
compiled program only when the new trace is the same program:

- :func:`program_key` turns a traced program (a ``ClosedJaxpr``) into a key: the jaxpr's text
  (every equation, its parameters and literals, sub-jaxprs inline) and, for each constant it
  closes over, its shape, dtype and a digest of its bytes;
- :func:`function_key` traces a function at given argument shapes and keys it; when the
  program holds custom derivative rules (``custom_jvp``/``custom_vjp``: their rules are
  Python functions that the jaxpr names but does not show), the traced JVP and VJP join the
  key, so that an edited rule is a new program too;
- :class:`Keyed` is a function that compares and hashes by such a key: passed to ``jax.jit``
  as a static argument it makes jit's own cache a cache on the traced program
  (:mod:`mcjax._program._compile`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core

from mcjax._program._walk import called_constants, custom_rules


def digest(array) -> str:
    """A short hex digest of an array's bytes (blake2b, 16 bytes)."""
    return hashlib.blake2b(np.asarray(array).tobytes(), digest_size=16).hexdigest()


def host_array(value) -> np.ndarray:
    """A program's constant as a NumPy array; a key array (an nnx ``Rngs``' stream key,
    closed over) as its bits, which NumPy can hold."""
    if jnp.issubdtype(getattr(value, "dtype", np.float32), jax.dtypes.prng_key):
        value = jax.random.key_data(value)
    return np.asarray(value)


def _digest(value) -> tuple:
    array = host_array(value)
    return (array.shape, array.dtype.name, digest(array))


def program_key(closed: core.ClosedJaxpr) -> tuple:
    """A hashable key that is equal for two traces exactly when they are the same program:
    the jaxpr's text and a digest of every constant it closes over (its sub-jaxprs' too)."""
    return (str(closed.jaxpr), tuple(_digest(c) for c in closed.consts),
            _nested_constants(closed.jaxpr))


def _nested_constants(jaxpr: core.Jaxpr) -> tuple:
    """Digests of the constants the jaxprs called by ``jaxpr`` close over (a custom rule's
    primal, say): their text shows their shapes, not their values."""
    return tuple(_digest(c) for c in called_constants(jaxpr))


def _liftable(var) -> bool:
    return isinstance(var, core.Literal) and np.ndim(var.val) == 0 and jnp.issubdtype(
        getattr(var.aval, "dtype", np.int32), jnp.inexact)


def lift(closed: core.ClosedJaxpr) -> tuple[core.Jaxpr, tuple]:
    """``closed``'s program with its values taken out: ``(jaxpr, consts)``.

    The constants ``closed`` holds and every floating-point literal of its top level (a
    Python float or NumPy scalar that ``f`` closes over is written into the program as a
    literal) become constvars of ``jaxpr``, and their values ``consts``.  Two traces that
    differ only in those values lift to the same ``jaxpr`` (same text): one compiled program
    serves both, its constants passed in as arguments.  Integer literals (indices, counts)
    stay in the program.
    """
    jaxpr = closed.jaxpr
    constvars = list(jaxpr.constvars)
    # each value in its variable's dtype: JAX 0.7 keeps a closed-over NumPy float64 array as it
    # came, in a program that reads it as float32 (x64 off), where newer JAX converts it
    consts = [np.asarray(c, v.aval.dtype) if isinstance(c, np.ndarray) and c.dtype != v.aval.dtype
              else c for v, c in zip(constvars, closed.consts)]

    def taken(var):
        if not _liftable(var):
            return var
        new = core.Var(var.aval)
        constvars.append(new)
        consts.append(np.asarray(var.val, getattr(var.aval, "dtype")))
        return new

    eqns = [eqn.replace(invars=[taken(v) for v in eqn.invars]) for eqn in jaxpr.eqns]
    outvars = [taken(v) for v in jaxpr.outvars]
    return jaxpr.replace(constvars=constvars, eqns=eqns, outvars=outvars), tuple(consts)


def lifted_key(jaxpr: core.Jaxpr) -> tuple:
    """The key of a lifted program (:func:`lift`): its text, in which its constants are typed
    variables, and the digests of its sub-jaxprs' constants (which stay in the program)."""
    return (str(jaxpr), _nested_constants(jaxpr))


def has_tracers(tree) -> bool:
    """Whether a leaf of ``tree`` is a tracer: the call runs inside a caller's ``jax.jit`` (or
    ``grad``, ``vmap``), where a program is traced in place rather than run compiled."""
    return any(isinstance(leaf, jax.core.Tracer)  # pyright: ignore[reportAttributeAccessIssue]
               for leaf in jax.tree_util.tree_leaves(tree))


def fresh_jaxpr(fn: Callable, *structs, return_shape: bool = False) -> Any:
    """``jax.make_jaxpr`` of ``fn`` traced now: through a new wrapper, so that JAX's trace
    cache (keyed on the function object) cannot serve a trace made before an edit.  A
    ``ClosedJaxpr``, or ``(ClosedJaxpr, output shapes)`` with ``return_shape``."""
    return jax.make_jaxpr(lambda *a: fn(*a), return_shape=return_shape)(*structs)


def _floating(struct) -> bool:
    """Whether a traced argument (an array, a ``ShapeDtypeStruct`` or a Python number, which
    has no ``dtype``) is floating point."""
    dtype = getattr(struct, "dtype", None)
    if dtype is None:
        return isinstance(struct, float)
    return jnp.issubdtype(dtype, jnp.floating)


class Trace(NamedTuple):
    """One trace of a function, keyed (:func:`function_key`)."""

    key: tuple
    out_shape: Any  # the output's shapes (a pytree of ShapeDtypeStruct)
    closed: core.ClosedJaxpr  # the program as traced
    lifted: core.Jaxpr | None = None  # with lifted=True: the program with its values taken out
    consts: tuple = ()  # ... and those values


def function_key(fn: Callable, *structs, differentiated: bool = True, lifted: bool = False
                 ) -> Trace:
    """Trace ``fn`` at ``structs`` (pytrees of ``jax.ShapeDtypeStruct``s or arrays) and key it.

    The key is the program (see :func:`program_key`) and the output's tree structure; with
    ``lifted``, the program with its constants and floating-point literals taken out
    (:func:`lift`), which a compiled program then receives as arguments: traces that differ
    only in those values have one key.  When ``fn`` will be ``differentiated`` and its program
    has custom derivative rules, the key also holds the traced JVP (or VJP) along its
    floating arguments: the rules themselves.  The rules run as Python when a program that
    differentiates ``fn`` is compiled, so their values stay in that key: every constant of
    the derivative's trace that is not one of ``fn``'s own lifted values.
    """
    closed, out_shape = fresh_jaxpr(fn, *structs, return_shape=True)
    out_tree = jax.tree_util.tree_structure(out_shape)
    jaxpr, consts = lift(closed) if lifted else (None, ())
    key = ((lifted_key(jaxpr) if jaxpr is not None else program_key(closed)), out_tree)
    trace = Trace(key, out_shape, closed, jaxpr, consts)
    rules = custom_rules(closed.jaxpr) if differentiated else set()
    flat, tree = jax.tree_util.tree_flatten(structs)
    floating = [i for i, s in enumerate(flat) if _floating(s)]
    if not rules or not floating or not all(
            _floating(o) for o in jax.tree_util.tree_leaves(out_shape)):
        return trace
    # a custom_jvp rule shows in the JVP's trace (and the VJP is its transpose); a
    # custom_vjp's backward pass only in the VJP's
    reverse = any(r != "custom_jvp_call" for r in rules)

    def derivative(*leaves):
        def of(*xs):
            new = list(leaves)
            for i, x in zip(floating, xs):
                new[i] = x
            return fn(*tree.unflatten(new))

        xs = [leaves[i] for i in floating]
        if reverse:
            out, pullback = jax.vjp(of, *xs)
            return pullback(out)
        return jax.jvp(of, xs, xs)

    rule = fresh_jaxpr(derivative, *flat)
    if jaxpr is None:
        return trace._replace(key=(key, program_key(rule)))
    own = {_digest(c) for c in consts}
    rule_jaxpr, rule_consts = lift(rule)
    return trace._replace(key=(key, lifted_key(rule_jaxpr),
                               tuple(d for c in rule_consts if (d := _digest(c)) not in own)))


@dataclass(frozen=True, eq=False)
class Keyed:
    """``fn``, compared and hashed by ``key`` (its traced program) instead of its identity.

    As a static argument of a compiled program (:func:`mcjax._program._compile.run_compiled`)
    it makes the compiled program answer for any function that traces to the same program,
    and never for an edited one.  ``programs`` holds the traces the key was made from
    (``(signature, jaxpr, output tree)``, by the shapes and dtypes of the traced arguments),
    lifted (:func:`lift`): :meth:`program` evaluates them without running ``fn``'s Python
    again, on ``consts`` (one tuple per trace), which a compiled program receives as
    arguments (:meth:`bind`).  The values are no part of the key, so a ``Keyed`` is not
    callable: running ``fn``'s Python inside a shared program would write the values of the
    call that compiled it into every later call.
    """

    fn: Callable
    key: Hashable
    programs: tuple = ()
    consts: tuple = ()

    def __eq__(self, other) -> bool:
        return isinstance(other, Keyed) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def cache_key(self) -> Hashable:
        """What a cache of compiled programs keeps of this function: its key alone (not the
        user's function, nor the values it closes over)."""
        return ("Keyed", self.key)

    def with_program(self, key: Hashable, signature: tuple, trace: Trace) -> "Keyed":
        """This function with one more (lifted) trace, and ``key`` as its key."""
        assert trace.lifted is not None, "Keyed programs are lifted traces"
        return Keyed(self.fn, key,
                     self.programs + ((signature, trace.lifted,
                                       jax.tree_util.tree_structure(trace.out_shape)),),
                     self.consts + (trace.consts,))

    def bind(self, consts: tuple) -> "Keyed":
        """This function evaluating its traces on ``consts`` (same structure as
        :attr:`consts`): the arguments a compiled program received for them."""
        return Keyed(self.fn, self.key, self.programs, tuple(consts))

    def program(self, signature: tuple):
        """``leaves -> output`` evaluating the trace made at ``signature``.

        Raises:
          LookupError: no trace at ``signature`` (running ``fn``'s Python instead would
            write the values it closes over into a compiled program shared by other values).
        """
        for (sig, jaxpr, out_tree), consts in zip(self.programs, self.consts):
            if sig == signature:
                def run(*leaves, jaxpr=jaxpr, consts=consts, out_tree=out_tree):
                    closed = core.ClosedJaxpr(jaxpr, list(consts))
                    return jax.tree_util.tree_unflatten(out_tree, core.jaxpr_as_fun(closed)(*leaves))
                return run
        raise LookupError(f"mcjax: no trace of {getattr(self.fn, '__name__', self.fn)!r} at "
                          f"{signature}; traced at {[p[0] for p in self.programs]}")


def signature(leaves) -> tuple:
    """The shapes and dtypes of ``leaves``: which trace of a :class:`Keyed` applies."""
    return tuple((tuple(jnp.shape(a)), jnp.result_type(a).name) for a in leaves)

