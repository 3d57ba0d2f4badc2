"""What a run computes: the fingerprints of its traced programs, recorded and compared on resume.

A run's settings are described by value (``_describe``), but a model or an optimizer is also
what its code does, and code is objects: an activation in an Equinox module's static part, a
linen module's class, a global function, a literal inside a hand-written optax update, a
hyper-parameter read from ``self`` in a bound method.  None of these has a value to compare;
all of them are in the programs JAX traces.  So a run records two fingerprints
(:class:`~mcjax._program._fingerprint.Fingerprint`, keyed as the compiled-program cache keys
a program):

- ``loss``: the loss and its gradient, as the step computes them (``jax.value_and_grad`` of
  the loss, with the constants it closes over and its custom rules: a hand-derived
  ``backprop`` too), at the shapes of the parameters, one minibatch and a key;
- ``optimizer``: the optimizer's ``init`` and ``update``, at the shapes of the parameters and
  of its state.

A resumed run whose fingerprints differ is refused, with a sentence that says what changed
(``the traced loss differs: tanh where relu was (model.py:12)``); the same code, in any
process, traces to the same programs and resumes.  A run recorded before fingerprints were
(no ``programs`` in ``run.json``) is resumed, and its record gains them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax

from mcjax._core._conventions import standard_promotion
from mcjax._program._compile import NUMERICS
from mcjax._program._fingerprint import Fingerprint, change
from mcjax._program._trace import function_key
from mcjax._program._walk import equations
from mcjax._train._models import WithState, takes_key, trained_part
from mcjax._train._optim import update
from mcjax._train._step import loss_and_grad, value_only

WHAT = {"loss": "the traced loss (and its gradient)",
        "optimizer": "the traced optimizer (its init and update)"}


def fingerprints(loss: Callable, optimizer, params, batch, key, opt_state
                 ) -> dict[str, Fingerprint]:
    """The fingerprints of what a run computes; the arguments are shapes
    (``jax.ShapeDtypeStruct``s): nothing is computed."""

    wants_key = takes_key(loss)
    # the optimizer's programs see the trained parameters; a model's state (WithState) is an
    # input of the loss an optimizer may read (value_only), so it is an argument of the trace
    stateful, trained = isinstance(params, WithState), trained_part(params)

    def step_update(grads, state, params, batch, key):
        read = value_only(loss, params)
        bound = functools.partial(read, key=key) if wants_key else read
        params = trained_part(params)
        with standard_promotion():  # as the step runs it (optax is written for it)
            return optimizer.init(params), update(optimizer, grads, state, params, loss=bound,
                                                  batch=batch)

    def plain_update(grads, state, params):
        with standard_promotion():
            return optimizer.init(params), optimizer.update(grads, state, params)

    # the optimizer's program takes the batch and key only where its update reads them
    # (mcjax.kfac): optax's own trace as they always did, and their runs resume
    optimizer_key = function_key(step_update, trained, opt_state, params, batch, key,
                                 differentiated=False)
    if not _reads_inputs(optimizer_key.closed.jaxpr,
                         len(jax.tree.leaves((trained, opt_state, params)))):
        optimizer_key = function_key(plain_update, trained, opt_state, trained,
                                     differentiated=False)
    value_and_grad = jax.value_and_grad(loss) if not stateful else (
        lambda p, b, k: loss_and_grad(loss, p, b, **({"key": k} if wants_key else {})))
    return {"loss": Fingerprint.of(function_key(value_and_grad, params, batch, key,
                                                differentiated=False)),
            "optimizer": Fingerprint.of(optimizer_key)}


def _reads_inputs(jaxpr, after: int) -> bool:
    """Whether ``jaxpr`` reads any of its inputs from position ``after`` on."""
    tail = {id(v) for v in jaxpr.invars[after:]}
    return any(id(v) in tail for eqn in equations(jaxpr) for v in eqn.invars) or \
        any(id(v) in tail for v in jaxpr.outvars)


def _numerics() -> dict:
    return {name: getattr(jax.config, name) for name in NUMERICS}


def as_record(programs: Mapping[str, Fingerprint]) -> dict:
    """The fingerprints as ``run.json`` holds them, with the JAX that traced them and its
    numerics settings (float64 on or off, ...), which change what it traces."""
    return {"jax": jax.__version__, "numerics": _numerics(),
            **{name: fp.to_json() for name, fp in programs.items()}}


def program_differences(stored, programs: Mapping[str, Fingerprint]) -> list[str]:
    """What a resumed run computes otherwise than the run recorded (``stored``: the record's
    ``programs``), one sentence per program; empty when nothing differs or nothing was
    recorded."""
    if not isinstance(stored, dict):
        return []
    found = []
    for name, now in programs.items():
        there = Fingerprint.from_json(stored.get(name))
        said = change(there, now) if there is not None else ""
        if said:
            found.append(f"{WHAT.get(name, name)} differs: {said}")
    if not found:
        return found
    if stored.get("jax") != jax.__version__:
        found.append(f"(the run was traced by jax {stored.get('jax')}, this is jax "
                     f"{jax.__version__}: another JAX may trace the same code otherwise)")
    there, now = stored.get("numerics"), _numerics()
    there = there if isinstance(there, dict) else {}
    changed = [k for k, v in now.items() if k in there and there[k] != v]
    if changed:
        found.append(f"(the run was traced with {', '.join(f'{k}={there[k]}' for k in changed)}"
                     f", this process has {', '.join(f'{k}={now[k]}' for k in changed)}: these "
                     "settings change what JAX traces)")
    return found
