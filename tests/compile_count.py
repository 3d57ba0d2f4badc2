"""How many programs XLA compiles in a block of code, counted from JAX's own monitoring
events (not from times, which a busy machine stretches)."""

from __future__ import annotations

import contextlib

from jax import monitoring

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class Compiles:
    count = 0


@contextlib.contextmanager
def counting_compiles():
    """``with counting_compiles() as c: ...``; then ``c.count`` backend compilations ran."""
    counter = Compiles()

    def listen(event: str, duration: float, **_):
        if event == BACKEND_COMPILE_EVENT:
            counter.count += 1

    monitoring.register_event_duration_secs_listener(listen)
    try:
        yield counter
    finally:
        monitoring.unregister_event_duration_listener(listen)
