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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core

from mcjax._program._walk import custom_rules


def digest(array) -> str:
    """A short hex digest of an array's bytes (blake2b, 16 bytes)."""
    return hashlib.blake2b(np.asarray(array).tobytes(), digest_size=16).hexdigest()


def _digest(value) -> tuple:
    array = np.asarray(value)
    return (array.shape, array.dtype.name, digest(array))


def program_key(closed: core.ClosedJaxpr) -> tuple:
    """A hashable key that is equal for two traces exactly when they are the same program:
    the jaxpr's text and a digest of every constant it closes over."""
    return (str(closed.jaxpr), tuple(_digest(c) for c in closed.consts))


def fresh_jaxpr(fn: Callable, *structs, return_shape: bool = False) -> Any:
    """``jax.make_jaxpr`` of ``fn`` traced now: through a new wrapper, so that JAX's trace
    cache (keyed on the function object) cannot serve a trace made before an edit.  A
    ``ClosedJaxpr``, or ``(ClosedJaxpr, output shapes)`` with ``return_shape``."""
    return jax.make_jaxpr(lambda *a: fn(*a), return_shape=return_shape)(*structs)


def _floating(struct) -> bool:
    return jnp.issubdtype(struct.dtype, jnp.floating)


def function_key(fn: Callable, *structs, differentiated: bool = True
                 ) -> tuple[tuple, object, core.ClosedJaxpr]:
    """Trace ``fn`` at ``structs`` (pytrees of ``jax.ShapeDtypeStruct``s or arrays) and key it.

    Returns ``(key, out_shape, closed)``: the key (see :func:`program_key`, with the output's
    tree structure), ``fn``'s output shapes (a pytree of ``ShapeDtypeStruct``) and the traced
    program, all from this one trace.  When ``fn`` will be ``differentiated`` and its program
    has custom derivative rules, the key also holds the traced JVP (or VJP) along its
    floating arguments: the rules themselves.
    """
    closed, out_shape = fresh_jaxpr(fn, *structs, return_shape=True)
    key = (program_key(closed), jax.tree_util.tree_structure(out_shape))
    rules = custom_rules(closed.jaxpr) if differentiated else set()
    flat, tree = jax.tree_util.tree_flatten(structs)
    floating = [i for i, s in enumerate(flat) if _floating(s)]
    if not rules or not floating or not all(
            _floating(o) for o in jax.tree_util.tree_leaves(out_shape)):
        return key, out_shape, closed
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

    return (key, program_key(fresh_jaxpr(derivative, *flat))), out_shape, closed


@dataclass(frozen=True, eq=False)
class Keyed:
    """``fn``, compared and hashed by ``key`` (its traced program) instead of its identity.

    As a static argument of ``jax.jit`` it makes jit's compiled-program cache answer for any
    function that traces to the same program, and never for an edited one.  ``programs``
    holds the traces the key was made from (``signature -> (ClosedJaxpr, output tree)``, by
    the shapes and dtypes of the traced arguments): :meth:`program` evaluates them without
    running ``fn``'s Python again.
    """

    fn: Callable
    key: Hashable
    programs: tuple = ()

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __eq__(self, other) -> bool:
        return isinstance(other, Keyed) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def with_program(self, key: Hashable, signature: tuple, closed, out_tree) -> "Keyed":
        """This function with one more trace, and ``key`` added to its key."""
        return Keyed(self.fn, key, self.programs + ((signature, closed, out_tree),))

    def program(self, signature: tuple):
        """``leaves -> output`` evaluating the trace made at ``signature``, or None."""
        for sig, closed, out_tree in self.programs:
            if sig == signature:
                run = core.jaxpr_as_fun(closed)
                return lambda *leaves: jax.tree_util.tree_unflatten(out_tree, run(*leaves))
        return None


def signature(leaves) -> tuple:
    """The shapes and dtypes of ``leaves``: which trace of a :class:`Keyed` applies."""
    return tuple((tuple(jnp.shape(a)), jnp.result_type(a).name) for a in leaves)

