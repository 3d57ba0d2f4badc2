"""Models as researchers hold them: the trained part of ``init``'s output, the rest carried.

``init`` may return an Equinox module (``eqx.nn.MLP``, whose ``activation`` is a function), an
nnx Module, linen variables: any pytree.  Training follows Equinox's rule
(``optax`` on ``eqx.filter(model, eqx.is_inexact_array)``): the inexact array leaves are the
parameters that are differentiated, updated by the optimizer and checkpointed; everything else
(functions, strings, integer arrays) is the model's *static part*, carried along untouched.
:func:`split_model` turns a :class:`Model` into one over the parameters alone, whose functions
put the static part back before they call the model's own; the loop then never sees anything
but arrays, and what it hands back to the user (``TrainResult.params``, ``evaluate``'s and a
callback's ``params``) is the whole model again (:func:`whole`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax

from mcjax._core._pytrees import combine, floats_as_arrays, has_static, partition
from mcjax._train._models import Model


def static_part(init, seed: int, params=None):
    """The static part of ``params`` (given) or of ``init``'s output (traced; integer arrays
    in it, if any, computed from the run's init key), or None when every leaf is an inexact
    array."""
    if params is not None:
        params = floats_as_arrays(params)
        return partition(params)[1] if has_static(params) else None
    found = []

    def trained(k):
        dynamic, static = partition(floats_as_arrays(init(k)))
        found.append(static)
        return dynamic

    jax.eval_shape(trained, jax.eval_shape(lambda: jax.random.key(0)))
    static = found[-1]
    if not jax.tree.leaves(static):  # every leaf is trained
        return None
    if any(isinstance(a, jax.Array) for a in jax.tree.leaves(static)):
        # integer or key arrays made by init: computed (tracing gave only their shapes), from
        # the key _loop._start initialises with
        key = jax.random.split(jax.random.key(seed))[0]
        arrays = jax.jit(lambda k: jax.tree.map(
            lambda a: a if isinstance(a, jax.Array) else None,
            partition(floats_as_arrays(init(k)))[1]))(key)
        static = combine(arrays, static)
    return static


def split_model(model: Model, static) -> Model:
    """``model`` over the trained parameters alone: ``init`` returns them, ``loss``,
    ``backprop``, ``apply`` and ``check`` get the whole model (``static`` put back);
    ``backprop``'s gradient keeps the trained leaves (``None`` from ``eqx.filter_grad``, the
    model's own function from ``eqx.tree_at``: dropped).  The model itself when ``static`` is
    None."""
    if static is None:
        return model

    def rejoin(fn, trim=False):
        if fn is None:
            return None

        @functools.wraps(fn)  # its signature too: a loss that takes a key still declares it
        def call(params, *rest, **keywords):
            out = fn(combine(params, static), *rest, **keywords)
            return partition(out)[0] if trim else out

        return call

    @functools.wraps(model.init)
    def init(key):
        return partition(floats_as_arrays(model.init(key)))[0]

    check = model.check
    return model._replace(init=init, loss=rejoin(model.loss),
                          backprop=rejoin(model.backprop, trim=True),
                          apply=rejoin(model.apply), check=None if check is None else (
                              lambda function, params, data: check(
                                  function, combine(params, static), data)))


def whole(params, static) -> Any:
    """The model the user holds: the trained ``params`` with the static part put back."""
    return params if static is None else combine(params, static)
