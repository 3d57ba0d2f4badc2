"""Compiling programs, and reusing a compiled program only when the traced program is the same.

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
  as a static argument it makes jit's own cache a cache on the traced program.

- :func:`compile_keyed` compiles ``fn`` for given arguments through one jitted caller that
  takes the :class:`Keyed` function as a static argument: a later call whose ``fn`` traces to
  the same program (at the same argument shapes, dtypes and shardings, with the same options)
  gets the compiled program from jit's cache and compiles nothing; an edited one compiles anew.
  No cache of mcjax's own holds the programs.

Also here: the XLA options of programs that run once (:func:`quick_jit`).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core

CUSTOM_RULES = ("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr", "custom_lin")


@functools.cache
def compiler_options() -> dict:
    """XLA options for programs that run once on small arrays: compile time is what counts.

    ``xla_backend_optimization_level=0`` skips LLVM's optimisations; on a CPU the classic
    elemental emitters (``xla_cpu_use_fusion_emitters=False``) compile a full-mode check 2-3x
    faster than the fusion emitters, and one LLVM module per program
    (``xla_cpu_parallel_codegen_split_count=1``) another 25-35%; the values are bitwise the
    same (measured with jax 0.10 on the registry's rules).  An option a jaxlib does not know
    is left out.
    """
    options = {"xla_backend_optimization_level": 0}
    for name, value in (("xla_cpu_use_fusion_emitters", False),
                        ("xla_cpu_parallel_codegen_split_count", 1)):
        trial = {**options, name: value}
        try:
            jax.jit(lambda x: x + 1).lower(np.float32(0)).compile(trial)
        except Exception as e:  # noqa: BLE001 - jaxlib raises its own runtime error type
            if "option" not in str(e):
                raise
            continue
        options = trial
    return options


def quick_jit(fn, **kwargs):
    """``jax.jit`` with :func:`compiler_options`, for a program that runs once."""
    return jax.jit(fn, compiler_options=compiler_options(), **kwargs)


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


def sub_jaxprs(eqn) -> Iterator[core.Jaxpr]:
    """The jaxprs an equation calls (pjit, cond branches, scan bodies, custom rules)."""
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, core.Jaxpr):
                yield item


def custom_rules(jaxpr: core.Jaxpr) -> set[str]:
    """The custom-derivative primitives (``custom_jvp_call``, ``custom_vjp_call``) that
    ``jaxpr`` or its sub-jaxprs call."""
    found = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in CUSTOM_RULES:
            found.add(eqn.primitive.name)
        for inner in sub_jaxprs(eqn):
            found |= custom_rules(inner)
    return found


def fresh_jaxpr(fn: Callable, *structs, return_shape: bool = False):
    """``jax.make_jaxpr`` of ``fn`` traced now: through a new wrapper, so that JAX's trace
    cache (keyed on the function object) cannot serve a trace made before an edit."""
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


def _call(fn, *args):
    """``fn(*args)``: the one function that :func:`compile_keyed` jits, with ``fn`` static."""
    return fn(*args)


def compile_keyed(fn: Callable, *args, donate_argnums: tuple[int, ...] = (),
                  compiler_options: dict | None = None, out_shardings=None):
    """``fn`` compiled for ``args``, reusing a compiled program only for the same traced program.

    ``fn`` is traced afresh (:func:`fresh_jaxpr`, never a trace cached on its identity) and
    keyed by :func:`function_key` (the program and its output's tree structure); jit's own cache, keyed on that and on the arguments' shapes,
    dtypes and shardings, the donated arguments, ``compiler_options`` and ``out_shardings``,
    answers a repeat call without compiling.

    Args:
      fn: a function of ``args`` (arrays, pytrees of arrays).
      *args: example arguments (arrays or ``jax.ShapeDtypeStruct``s, with their shardings).
      donate_argnums: which of ``args`` the program may update in place.
      compiler_options: XLA options (e.g. ``{"xla_cpu_copy_insertion_use_region_analysis":
        True}``).
      out_shardings: the outputs' shardings (default: what XLA chooses).

    Returns:
      A ``jax.stages.Compiled``, called as ``compiled(*args)``.
    """
    key, _, _ = function_key(fn, *args, differentiated=False)  # the program and its output tree
    keyed = Keyed(fn, key)
    placement = {} if out_shardings is None else {"out_shardings": out_shardings}
    jitted = jax.jit(_call, static_argnums=0, donate_argnums=tuple(1 + i for i in donate_argnums),
                     compiler_options=compiler_options, **placement)
    return jitted.lower(keyed, *args).compile()
