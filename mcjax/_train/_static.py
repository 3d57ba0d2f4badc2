"""Models as researchers hold them: what ``init`` returns, split into what is trained, what
is carried from step to step (the model's state) and what is constant (its static part).

``init`` may return an Equinox module (``eqx.nn.MLP``, whose ``activation`` is a function), an
nnx Module, linen variables: any pytree.  Each leaf has one of three roles, as the frameworks
themselves assign them (``mcjax._core._pytrees``, where every engine reads them):

- **trained**: the parameters, differentiated, updated by the optimizer and checkpointed: the
  inexact array leaves (Equinox's ``eqx.filter(model, eqx.is_inexact_array)``), except those
  of the two kinds below; in an nnx Module, those of ``nnx.Param`` variables
  (``nnx.Optimizer(model, tx, wrt=nnx.Param)``); in linen variables, the ``"params"``
  collection;
- **state**: what the loss updates and training carries from step to step, checkpointed with
  the parameters but never differentiated: the arrays of an ``eqx.nn.State``, of linen's
  other collections (``batch_stats``), of nnx's other variables (``nnx.BatchStat``, an
  ``nnx.Rngs``'s counts);
- **untouched** (the static part): everything else (functions, strings, integer arrays
  outside a state, the keys of an ``nnx.Rngs``, which nnx never changes: a stream draws
  ``fold_in(key, count)``), carried along as it is.

:func:`split_model` turns a :class:`Model` into one over the trained part alone, or over a
:class:`~mcjax._train._models.WithState` pair when there is state; its functions put the rest
back before they call the model's own, and its loss then returns ``(loss, new_state)``: the
state the model's loss returned (``Model(..., returns_state=True)``), or, for an nnx Module,
the state read back from the module after the call (nnx updates it in place).  The loop never
sees anything but arrays, and what it hands back to the user (``TrainResult.params``,
``evaluate``'s and a callback's ``params``) is the whole model again (:func:`whole`), with the
updated statistics.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mcjax._core._errors import ShapeError, shape_str
from mcjax._core._pytrees import (
    STATE,
    TRAINED,
    combine,
    floats_as_arrays,
    leaf_roles,
    split,
)
from mcjax._train._models import Model, WithState


def carried(tree):
    """What training carries of the model ``tree``: its trained part, or the trained part and
    its state (:class:`WithState`) when it has one."""
    trained, state, _ = split(floats_as_arrays(tree))
    return WithState(trained, state) if jax.tree.leaves(state) else trained


def _sources(roles) -> list[str]:
    return sorted({source for role, source in roles if role == STATE and source is not None})


def static_part(init, seed: int, params=None) -> tuple[Any, list[str]]:
    """The static part of ``params`` (given) or of ``init``'s output (traced; integer and key
    arrays in it, if any, computed from the run's init key), or None when every leaf is
    trained; and the kinds of state the model holds, in words, each once (empty: none)."""
    if params is not None:
        params = floats_as_arrays(params)
        roles = leaf_roles(params)
        return (None if all(role == TRAINED for role, _ in roles) else split(params)[2],
                _sources(roles))
    found = []

    def trained(k):
        model = floats_as_arrays(init(k))
        found.append((split(model)[2], leaf_roles(model)))
        return carried(model)

    jax.eval_shape(trained, jax.eval_shape(lambda: jax.random.key(0)))
    static, roles = found[-1]
    if all(role == TRAINED for role, _ in roles):
        return None, []
    if any(isinstance(a, jax.Array) for a in jax.tree.leaves(static)):
        # integer or key arrays made by init: computed (tracing gave only their shapes), from
        # the key _loop._start initialises with
        key = jax.random.split(jax.random.key(seed))[0]
        arrays = jax.jit(lambda k: jax.tree.map(
            lambda a: a if isinstance(a, jax.Array) else None,
            split(floats_as_arrays(init(k)))[2]))(key)
        static = combine(arrays, static)
    return static, _sources(roles)


def _leaves_in_words(tree) -> str:
    return ", ".join(f"{jnp.result_type(a)}{shape_str(np.shape(a))}"
                     for a in jax.tree.leaves(tree)) or "none"


def fit_state(new, old, name: str, *, returned: bool = True):
    """The state ``new`` (as the loss ``returned`` it, or read back from an nnx Module) in the
    structure of the carried ``old``: the same arrays, shapes and dtypes, in the same order."""
    got, (want, treedef) = jax.tree.leaves(new), jax.tree.flatten(old)
    if len(got) != len(want) or any(
            (np.shape(a), jnp.result_type(a)) != (np.shape(b), jnp.result_type(b))
            for a, b in zip(got, want)):
        said = ("returns a new state of" if returned
                else "leaves the module's state (its variables other than nnx.Param) as")
        raise ShapeError(
            f"mcjax.train: the loss of model {name!r} {said} {_leaves_in_words(new)} but the "
            f"model's state holds {_leaves_in_words(old)}; expected the same arrays, shapes and "
            "dtypes (the eqx.nn.State that model(x, state) returns, linen's "
            "apply(..., mutable=[...]) updates, an nnx Module's variables as init made them)")
    return treedef.unflatten(got)


def check_state(model: Model, sources: list[str]) -> None:
    """Refuse a model whose state its loss cannot update: one sentence naming what was found."""
    if model.returns_state and not sources:
        raise ValueError(
            f"mcjax.train: model {model.name!r} declares returns_state=True but its init "
            "returns no state (no eqx.nn.State, no linen collection besides 'params', no nnx "
            "variable other than nnx.Param); expected returns_state=False")
    frozen = [s for s in sources if not s.startswith("nnx.")]
    if frozen and not model.returns_state:
        raise ValueError(
            f"mcjax.train: model {model.name!r} holds state ({', '.join(frozen)}) that its loss "
            "cannot update in place; expected a loss that returns (loss, new_state), declared "
            "with mcjax.Model(init, loss, returns_state=True)")


def split_model(model: Model, static) -> Model:
    """``model`` over what training carries: ``init`` returns the trained parameters (or a
    :class:`WithState` pair), ``loss``, ``backprop``, ``apply`` and ``check`` get the whole
    model (the rest put back); with state, ``loss`` returns ``(loss, new_state)``.
    ``backprop``'s gradient keeps the trained leaves (``None`` from ``eqx.filter_grad``, the
    model's own function from ``eqx.tree_at``: dropped).  The model itself when ``static`` is
    None (every leaf is trained)."""
    if static is None:
        return model

    def rejoin(fn, trim=False):
        if fn is None:
            return None

        @functools.wraps(fn)  # its signature too: a loss that takes a key still declares it
        def call(params, *rest, **keywords):
            out = fn(whole(params, static), *rest, **keywords)
            return split(out)[0] if trim else out

        return call

    @functools.wraps(model.loss)
    def loss(params, *rest, **keywords):
        if not isinstance(params, WithState):
            return model.loss(whole(params, static), *rest, **keywords)
        held = whole(params, static)
        out = model.loss(held, *rest, **keywords)
        if not model.returns_state:  # an nnx Module: its state was updated in place
            return out, fit_state(split(held)[1], params.state, model.name, returned=False)
        if not (isinstance(out, tuple) and len(out) == 2):
            what = (f"a {type(out).__name__} of {len(out)}" if isinstance(out, (tuple, list))
                    else _leaves_in_words(out))
            raise TypeError(
                f"mcjax.train: the loss of model {model.name!r} returns {what}; expected "
                "(loss, new_state), as it declares returns_state=True")
        return out[0], fit_state(out[1], params.state, model.name)

    @functools.wraps(model.init)
    def init(key):
        return carried(model.init(key))

    check = model.check
    return model._replace(init=init, loss=loss,
                          backprop=rejoin(model.backprop, trim=True),
                          apply=rejoin(model.apply), check=None if check is None else (
                              lambda function, params, data: check(
                                  function, whole(params, static), data)))


def whole(params, static) -> Any:
    """The model the user holds: the trained ``params`` (and the state of a
    :class:`WithState`) with the static part put back."""
    if isinstance(params, WithState):
        params = combine(params.params, params.state)
    return params if static is None else combine(params, static)
