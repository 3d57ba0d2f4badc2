"""Strict JAX settings for every test.

- float64 is on, so rules are verified in both float32 and float64;
- implicit rank promotion raises (``x + b`` with b of lower rank must be written explicitly),
  and so does implicit dtype promotion (``jax_numpy_dtype_promotion="strict"``: float32 meets
  float64 only where a cast says so), as in equinox's own tests;
- warnings are errors (pyproject's ``filterwarnings = error``);
- XLA compiles for compile time, not run time (below).
"""

import importlib.metadata
import os
import shutil
import signal
import tempfile

# The suite's time is mostly XLA compiling small programs that then run once or twice on tiny
# arrays, so compile them as the checker compiles its one-shot programs: without LLVM's
# optimisations and, where this jaxlib has them, with the classic CPU emitters (about a third
# less CPU time on the per-rule tests). The values are the same programs' values; nothing in
# the suite times a compiled program. Set before JAX starts its backend; flags already in
# XLA_FLAGS are kept.
_FAST_COMPILE = ["--xla_backend_optimization_level=0"]
if tuple(int(p) for p in importlib.metadata.version("jaxlib").split(".")[:2]) >= (0, 7):
    _FAST_COMPILE.append("--xla_cpu_use_fusion_emitters=false")  # unknown flags abort XLA
_flags = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join(
    [_flags] + [f for f in _FAST_COMPILE if f.split("=")[0] not in _flags]).strip()

# The ~60 commands the suite runs in their own processes (training runs killed and resumed,
# the multi-device suite) compile the same small programs again and again: they share a
# persistent compilation cache for the session, made here in the first process.  JAX writes
# a cache entry in place (no lock unless the cache is size-bounded, and bounding it rescans
# the folder at every write), so two processes compiling the same program at once can read
# a half-written entry, a warning and so an error here: each xdist worker gets a folder of
# its own, shared only with the commands it runs one after another.  A command given
# --cache-dir uses its own.
# Started as a background job of a script (no job control), the suite inherits SIGINT ignored,
# and so would every command it starts: the tests that press Ctrl-C on a run would see nothing
# happen. Python's own handler here makes the commands start with SIGINT's default, as from a
# terminal (a handler, unlike an ignored signal, does not pass to a new program).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Where the machine says PYTHONDONTWRITEBYTECODE, each of those processes would compile
# mcjax's ~130 modules from source again (about 0.3 s of CPU a process): they write and reuse
# bytecode in the checkout's __pycache__ folders (git ignores them) instead.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
_XLA_CACHE = None
if "MCJAX_TESTS_XLA_CACHE" not in os.environ and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="mcjax-tests-xla-")
    os.environ["MCJAX_TESTS_XLA_CACHE"] = _XLA_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
if "MCJAX_TESTS_XLA_CACHE" in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(
        os.environ["MCJAX_TESTS_XLA_CACHE"], os.environ.get("PYTEST_XDIST_WORKER", "main"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


def pytest_unconfigure(config):
    if _XLA_CACHE is not None:  # the process that made it
        shutil.rmtree(_XLA_CACHE, ignore_errors=True)


@pytest.fixture
def rng():
    """A seeded NumPy generator: every test draws the same points on every run."""
    return np.random.default_rng(0)
