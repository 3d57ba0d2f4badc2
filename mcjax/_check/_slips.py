r"""Slips of hand derivations, as variants of ``f`` whose Jacobian the slip would give.

Each variant evaluates ``f``'s jaxpr with one place rewritten so that its *derivative* is what
a slip produces (and, for most slips, its value unchanged).  When the derivative under test
matches a variant's Jacobian (and the true one does not), the diagnosis names the slip and
the line of ``f`` it is about.  The sites come from the primitive table's ``Slips``:

- **ungated** (all gates at once, or one): ``max(z, 0)``, ``where(mask, z, 0)`` straight
  through: the ``1[z > 0]`` of a ReLU forgotten, a missing clip;
- **a term dropped / negated**: one operand of a sum, product, quotient or matrix product
  that depends on the argument behind ``stop_gradient`` (or with its sign flipped): one term
  of a product rule, the mean's dependence in a layer norm, the :math:`-s s^\top` of softmax;
- **a factor of the chain left out**: in a product or quotient with one operand depending on
  the argument, the other (``gamma`` of a batch norm, a mask, a ``1/N``) left out;
- **one branch everywhere**: a piecewise function (``max``, ``where``, ``clip``) with one
  branch's derivative at every element; **a sign dropped**: ``|z|``'s ``sign(z)``;
- **value for derivative** and **a neighbouring derivative**: :math:`\sigma` for
  :math:`\sigma(1 - \sigma)`, ``1 - tanh`` for :math:`1 - \tanh^2`;
- **an intermediate before its transform**: in a product, the other factor's value taken
  before its last shift or scaling (``x`` for ``x_hat``);
- **a count off by one**: a quotient by a scalar ``N`` (a mean) taken by ``N - 1`` or ``N + 1``;
- **not transposed**: in a matrix product, the term through one operand with the other
  operand transposed (``dS`` for ``dS^T``), or its result transposed (square ones only);
- **a convolution's slips**: the kernel not flipped, the padding off by one, a tap missing.

Places are numbered in the order the jaxpr is walked (nested ``jit`` calls included, the
insides of ``custom_jvp``/``custom_vjp`` functions not: their derivative is their rule, and a
slip is planted at the custom call itself or around it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import lax
from jax.extend import core

from mcjax._primitives import Slips, lookup
from mcjax._program._walk import CALLS, Interpreter, bind, callee_name, from_jax, user_place

MAX_SITES = 160
"""At most this many rewritten variants are tried (the first places of ``f``; the diagnosis
says when there were more)."""

KINDS = {"drop": "missing-term", "negate": "sign-in-term", "value": "value-for-derivative",
         "neighbour": "neighbour-derivative", "factor": "missing-factor",
         "branch": "other-branch", "ungate": "missing-gate", "sign": "sign-dropped",
         "before": "before-transform", "count": "count-off-by-one",
         "transpose": "not-transposed", "flip": "kernel-not-flipped", "pad": "padding-off",
         "tap": "tap-missing"}
"""The kind (``Slip.kind``) each way of planting names."""


class Site(NamedTuple):
    """One place of ``f`` where a slip can be planted."""

    index: int  # the equation's number in the walk
    how: str  # a key of KINDS
    operand: int
    primitive: str
    where: str  # the user's code and line, for the sentence
    extra: Any = None  # what the planting needs besides: a branch, a sign, an origin

    @property
    def kind(self) -> str:
        if self.how == "before" and self._scaled():
            return "missing-factor"
        return KINDS[self.how]

    def _scaled(self) -> bool:
        """A "before" slip whose value was only multiplied or divided since (``x6 * mask``
        read as ``x6``): a factor left out, not a transform skipped."""
        return all(link in ("mul", "div") for link in self.extra[1])

    def describe(self) -> str:
        """The slip in words."""
        entry = lookup(self.primitive)
        slips = entry.slips if entry is not None else Slips()
        at = (f" ({self.primitive})" if not self.where else f" {self.where}"
              if self.where.startswith("at ") else f" in {self.where}")
        how = self.how
        if how == "value":
            name = slips.value or str(self.extra)  # a custom rule's function: softplus
            return (f"{name}'s derivative replaced by {name} itself{at}: the "
                    "function's value where its derivative was due (sigma for sigma (1 - sigma), "
                    "tanh for 1 - tanh^2?)")
        if how == "neighbour":
            assert slips.neighbour is not None
            return (f"the derivative of a neighbouring function{at}: {slips.neighbour[0]}")
        if how == "branch":
            return (f"one branch's derivative everywhere{at}: matches the derivative with "
                    f"{_branch_words(self.primitive, self.operand)} at every element (the other "
                    "branch, or the condition, forgotten)")
        if how == "ungate":
            return (f"a missing gate or clip{at}: matches the derivative with this "
                    f"{'clip' if self.primitive == 'clamp' else 'gate'} passed straight through "
                    "(multiply by its indicator, e.g. 1[z > 0] for a ReLU, 1[lo < z < hi] for a "
                    "clip)")
        if how == "sign":
            return f"the sign of |z| dropped{at}: matches the derivative with sign(z) read as 1"
        if how == "count":
            n = "N - 1 for N" if self.extra < 0 else "N + 1 for N"
            return (f"a count off by one{at}: matches the derivative with the divisor taken as "
                    f"{n} in the derivative (an unbiased variance's N - 1 where the mean's N was "
                    "due, or the reverse?)")
        if how == "flip":
            return (f"the kernel not flipped{at}: matches the derivative of a correlation where "
                    "a convolution was due (or the reverse): reverse the kernel's spatial axes")
        if how == "pad":
            return (f"the padding off by one{at}: matches the derivative with the window "
                    f"shifted by {self.extra:+d} (padding (lo{self.extra:+d}, "
                    f"hi{-self.extra:+d}))")
        if how == "tap":
            return (f"a tap missing{at}: matches the derivative with the kernel's "
                    f"{'first' if self.extra == 0 else 'last'} tap left out (a window one short)")
        assert slips.terms is not None
        what, operands = slips.terms
        term = f"the term through {operands[self.operand]} of the {what}" + (
            f" {self.where}" if self.where else f" ({self.primitive})")
        other = operands[1 - self.operand]
        if how == "drop":
            return f"a missing term: matches the derivative with {term} left out"
        if how == "negate":
            return f"a sign error in one term: matches the derivative with {term} negated"
        if how == "factor":
            return (f"a factor left out of the chain: matches the derivative with {other} of "
                    f"the {what}{at} left out of it (a gamma, a mask, a 1/N, a constant?)")
        if how == "before":
            links = self.extra[1]
            steps = "step" if len(links) == 1 else f"{len(links)} steps"
            if self._scaled():
                return (f"a factor left out of the chain: matches the derivative with {term} "
                        f"using {other}'s value before its last {steps} ({', '.join(links)}): "
                        "a mask, a gamma, a 1/N left out?")
            return (f"an intermediate used before its transform: matches the derivative with "
                    f"{term} using {other}'s value before its last {steps} "
                    f"({', '.join(links)}): x for x_hat, z for relu(z)?")
        assert how == "transpose"
        if self.extra == "out":
            return (f"an intermediate not transposed: matches the derivative with {term} "
                    "transposed (dS where dS^T was due?)")
        return (f"a transpose missing: matches the derivative with {term} using {other} "
                "transposed (W where W^T was due?)")


def _branch_words(primitive: str, operand: int) -> str:
    if primitive == "select_n":  # jnp.where(c, a, b) is select_n(c, b, a)
        return (f"case {operand - 1} (jnp.where's {'second (else)' if operand == 1 else 'first'}"
                " branch)'s derivative")
    if primitive == "clamp":
        return "the clipped value's derivative (no clip)"
    return f"operand {operand} of the {primitive}'s derivative"


def _where(eqn, calls=()) -> str:
    """The user's code of ``eqn`` and its line: ``e / jnp.sum(e)`` (model.py:5), or of the
    innermost call around it that has one (``jnp.where``'s own jit, traced once elsewhere);
    "" when ``f`` has no line of the user's (a library's function checked as it is)."""
    for e in (eqn, *reversed(calls)):
        place = user_place(e)
        if place is not None:
            return str(place)
    return ""


class _Numbered(Interpreter):
    """A walk that numbers the equations it meets, calls and their bodies alike, in order:
    a site's number is the same in ``sites`` and in ``variant``."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def equation(self, eqn, ins):
        self.index = self.count
        self.count += 1
        return super().equation(eqn, ins)

    def custom(self, eqn, ins):  # a custom rule's derivative is its rule: no sites inside
        return self.primitive(eqn, ins)


class _Dep(NamedTuple):
    """What the site search knows of a value: whether it depends on the argument, where it
    was made (``(equation number, output)``), and the values it was made from by a shift,
    a scaling or an element-wise function (``x - mu``, then ``x``), latest first."""

    dep: bool
    origin: tuple | None = None
    before: tuple = ()  # ((origin, (primitive, ...) since), ...)


_TRANSFORMS = frozenset({"sub", "add", "div", "mul"})


def _transformed(eqn, name: str, deps: list[bool]) -> int | None:
    """The operand whose value ``eqn`` transforms into one of the same shape: a shift or
    scaling's first (``x - mu``, ``xc / s``), an element-wise function's one dependent operand
    (``tanh(z)``, ``relu(z)``); None otherwise."""
    if len(eqn.outvars) != 1 or not _floating_var(eqn.outvars[0]):
        return None
    shape = eqn.outvars[0].aval.shape
    same = [getattr(v.aval, "shape", None) == shape for v in eqn.invars]
    if name in _TRANSFORMS:
        return 0 if same[0] else None
    if sum(deps) == 1 and same[deps.index(True)] and _floating_var(eqn.invars[deps.index(True)]):
        return deps.index(True)
    return None


def _square(var) -> bool:
    shape = getattr(var.aval, "shape", ())
    return len(shape) >= 2 and shape[-1] == shape[-2] and shape[-1] > 1


class _Sites(_Numbered):
    """Which values depend on the argument, and the sites met on the way."""

    def __init__(self):
        super().__init__()
        self.found: list[Site] = []
        self.constants = 0

    def literal(self, value) -> _Dep:
        return _Dep(False)

    def constant(self, value) -> _Dep:  # numbered: a "before" slip may read one (x for x_hat)
        self.constants += 1
        return _Dep(False, ("const", self.constants))

    def custom(self, eqn, ins: list[_Dep]) -> list[_Dep]:
        """A custom rule's call (``jax.nn.softplus``): its derivative is the rule, so the
        slips are planted around it: its value for its derivative."""
        self._around(eqn, ins, self.index)
        deps = [d.dep for d in ins]
        return self._outputs(eqn, callee_name(eqn), ins, deps)  # relu(z): z before it

    def equation(self, eqn, ins):
        index = self.count
        outs = super().equation(eqn, ins)
        if eqn.primitive.name in CALLS and from_jax(eqn):  # jax.nn.gelu: its value for its
            self._around(eqn, ins, index)  # derivative, around its body
        return outs

    def _around(self, eqn, ins: list[_Dep], index: int):
        """A site around a call of one dependent array to one array of its shape."""
        deps = [d.dep for d in ins]
        if (sum(deps) == 1 and len(eqn.outvars) == 1 and _floating_var(eqn.outvars[0])
                and _floating_var(eqn.invars[deps.index(True)])
                and eqn.outvars[0].aval.shape == eqn.invars[deps.index(True)].aval.shape):
            self.found.append(Site(index, "value", deps.index(True), eqn.primitive.name,
                                   _where(eqn), callee_name(eqn)))

    def primitive(self, eqn, ins: list[_Dep]) -> list[_Dep]:
        name = eqn.primitive.name
        deps = [d.dep for d in ins]
        # real floating values in and out (|z| of a complex z is no site: its rule is JAX's)
        floating = all(_floating_var(v) for v in eqn.outvars) and not any(
            _complex_var(v) for v in eqn.invars)
        entry = lookup(name)
        slips = entry.slips if entry is not None else Slips()
        if floating and any(deps):
            self._sites(eqn, name, slips, ins, deps)
        return self._outputs(eqn, name, ins, deps)

    def _outputs(self, eqn, name: str, ins: list[_Dep], deps: list[bool]) -> list[_Dep]:
        """The outputs, numbered; a transform's output remembers what it was made from (its
        operand, and that operand's own origin), with the steps since."""
        outs = [_Dep(any(deps), (self.index, k)) for k in range(len(eqn.outvars))]
        source = _transformed(eqn, eqn.primitive.name, deps)
        if source is not None and ins[source].origin is not None:
            before = ((ins[source].origin, (name,)),) + tuple(
                (origin, (name, *links)) for origin, links in ins[source].before)
            outs[0] = outs[0]._replace(before=before[:2])
        return outs

    def _sites(self, eqn, name, slips: Slips, ins: list[_Dep], deps: list[bool]):
        where = _where(eqn, self.calls)

        def add(how, operand=0, extra=None):
            self.found.append(Site(self.index, how, operand, name, where, extra))

        if slips.terms is not None and len(deps) == 2:
            if all(deps):
                for operand in (0, 1):
                    add("drop", operand)
                    add("negate", operand)
            if slips.chain and sum(deps) == 1 and (name != "div" or deps[0]):
                add("factor", deps.index(True))
            if slips.terms[0] in ("product", "matrix product"):
                for operand in (0, 1):  # the term through `operand` reads the other's value
                    if deps[operand]:
                        for origin in ins[1 - operand].before:
                            add("before", operand, origin)
            if slips.count and deps == [True, False] and eqn.invars[1].aval.shape == ():
                add("count", 0, -1)
                add("count", 0, 1)
            if slips.transposes:
                for operand in (0, 1):
                    if deps[operand] and _square(eqn.invars[1 - operand]):
                        add("transpose", operand, "other")
                    if deps[operand] and _square(eqn.outvars[0]):
                        add("transpose", operand, "out")
        if slips.value and deps == [True]:
            add("value")
        if slips.neighbour and deps == [True]:
            add("neighbour")
        if slips.sign and deps == [True]:
            add("sign")
        if slips.gate is not None and sum(deps[1:] if name == "select_n" else deps) == 1:
            add("ungate")
        branches = [b for b in slips.branches if b < len(deps) and deps[b]]
        if len(branches) >= 2 or name == "clamp" and branches:
            for b in branches:
                add("branch", b)
        if slips.window:
            add("flip", 1)
            add("pad", 0, 1)
            add("pad", 0, -1)
            add("tap", 1, 0)
            add("tap", 1, -1)


def sites(jaxpr: core.Jaxpr) -> list[Site]:
    """The places of ``jaxpr`` (a function of one array) where a slip can be planted."""
    walk = _Sites()
    walk.run(jaxpr, [_Dep(False)] * len(jaxpr.constvars),
             [_Dep(True, ("arg", k)) for k in range(len(jaxpr.invars))])
    return walk.found


def _complex_var(var) -> bool:
    dtype = getattr(var.aval, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.complexfloating)


def _floating_var(var) -> bool:
    dtype = getattr(var.aval, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.floating)


sg = lax.stop_gradient


def _tangent(v):
    """Zero, with ``v``'s derivative."""
    return v - sg(v)


def _rewrite(eqn, invals, deps, target, values):
    """The equation's outputs with ``target`` planted (a ``Site``, or ``"ungated"``)."""
    name = eqn.primitive.name
    entry = lookup(name)
    slips = entry.slips if entry is not None else Slips()
    apply = lambda vals: bind(eqn, vals)  # noqa: E731
    if target == "ungated" or target.how == "ungate":
        ungated = slips.gate(apply, invals, deps) if slips.gate else None
        return ungated if ungated is not None else apply(invals)
    how, k = target.how, target.operand
    out = apply(invals)
    if how in ("value", "neighbour", "sign"):
        a = invals[k]
        y = sg(out[0])
        if how == "value":
            slope = y
        elif how == "sign":
            slope = jnp.ones_like(y)
        else:
            assert slips.neighbour is not None
            slope = sg(slips.neighbour[1](a, y, eqn.params)).astype(y.dtype)
        return [y + slope * _tangent(a)]
    if how == "branch":
        branch = jnp.broadcast_to(invals[k], out[0].shape).astype(out[0].dtype)
        return [sg(out[0]) + _tangent(branch)]
    if how in ("drop", "negate"):
        args = list(invals)
        v = args[k]
        args[k] = sg(v) if how == "drop" else 2 * sg(v) - v
        return apply(args)
    if how == "factor":  # the dependent operand's derivative straight through
        through = jnp.broadcast_to(_tangent(invals[k]), out[0].shape)
        return [sg(out[0]) + through]
    if how == "count":  # the value kept, the derivative divided by N -/+ 1
        return [sg(out[0]) + _tangent(invals[0]) / (invals[1] + target.extra)]
    if how in ("before", "transpose"):
        i = 1 - k
        if how == "before" or target.extra == "other":
            other = values[target.extra[0]] if how == "before" else \
                jnp.swapaxes(invals[i], -1, -2)
            other = jnp.broadcast_to(other, jnp.shape(invals[i])).astype(invals[i].dtype)
            through_k = apply([sg(other), invals[k]] if k == 1 else [invals[k], sg(other)])[0]
        else:
            through_k = jnp.swapaxes(apply([sg(invals[i]), invals[k]] if k == 1 else
                                           [invals[k], sg(invals[i])])[0], -1, -2)
        through_i = apply([invals[0], sg(invals[1])] if i == 0 else [sg(invals[0]), invals[1]])[0]
        return [sg(out[0]) + _tangent(through_k) + (_tangent(through_i) if deps[i] else 0)]
    return _rewrite_window(eqn, invals, target)


def _rewrite_window(eqn, invals, target):
    """A convolution with its kernel flipped, its padding shifted or a tap left out."""
    lhs, rhs = invals
    params = dict(eqn.params)
    spatial = tuple(params["dimension_numbers"].rhs_spec[2:])
    if target.how == "flip":
        rhs = lax.rev(rhs, spatial)
    elif target.how == "pad":
        s = target.extra
        params["padding"] = tuple((lo + s, hi - s) for lo, hi in params["padding"])
    else:  # one tap of the first spatial axis left out
        axis = spatial[0]
        keep = jnp.ones(rhs.shape[axis], rhs.dtype).at[target.extra].set(0)
        rhs = rhs * keep.reshape([-1 if a == axis else 1 for a in range(rhs.ndim)])
    return [lax.conv_general_dilated_p.bind(lhs, rhs, **params)]


class _Planted(_Numbered):
    """``f`` evaluated with every target planted, each behind its switch (``choice``, a
    one-hot vector: the variant picked); a value is ``(array, depends on the argument)``.

    One walk plants them all, so a single program (vmapped over ``choice``) gives every
    variant's Jacobian: one trace of ``f`` instead of one per slip."""

    def __init__(self, targets, choice):
        super().__init__()
        self.choice = choice
        self.ungated = [j for j, t in enumerate(targets) if t == "ungated"]
        self.at: dict[int, list[tuple[int, Site]]] = {}
        for j, t in enumerate(targets):
            if isinstance(t, Site):
                self.at.setdefault(t.index, []).append((j, t))
        self.values: dict = {}  # by origin: the intermediate a "before" slip reads
        self.constants = 0
        self.inside = False  # walking a custom rule's body (its gate, for "ungated")

    def literal(self, value):
        return value, False

    def constant(self, value):
        if self.inside:
            return value, False
        self.constants += 1
        self.values[("const", self.constants)] = value
        return value, False

    def custom(self, eqn, ins):
        outs = self.primitive(eqn, ins)  # the call, its derivative its rule: slips around it
        if self.ungated and eqn.primitive.name == "custom_jvp_call":
            count, self.inside = self.count, True  # its body is no site: numbered as one
            try:
                inlined = self.inline(eqn, ins)  # jax.nn.relu's own max(x, 0): its gate
            finally:
                self.count, self.inside = count, False
            outs = [(self._pick(self.ungated, o, i), d) for (o, d), (i, _) in zip(outs, inlined)]
        return outs

    def equation(self, eqn, ins):
        index = self.count
        outs = super().equation(eqn, ins)
        if eqn.primitive.name in CALLS and not self.inside:
            for j, target in self.at.get(index, ()):  # a library call's value for derivative
                (y, dep), a = outs[0], ins[target.operand][0]
                y0 = sg(y)
                outs = [(self._pick([j], y, y0 + y0 * _tangent(a)), dep)]
        return outs

    def _pick(self, switches: list[int], normal, planted):
        on = jnp.any(jnp.stack([self.choice[j] for j in switches]))
        return lax.select(jnp.broadcast_to(on, jnp.shape(normal)), planted, normal)

    def primitive(self, eqn, ins):
        invals, deps = [v for v, _ in ins], [d for _, d in ins]
        out = bind(eqn, invals)
        entry = lookup(eqn.primitive.name)
        if self.ungated and entry is not None and entry.slips.gate is not None:
            planted = _rewrite(eqn, invals, deps, "ungated", self.values)
            out = [self._pick(self.ungated, o, p) for o, p in zip(out, planted)]
        if self.inside:
            return [(o, any(deps)) for o in out]
        for j, target in self.at.get(self.index, ()):
            planted = _rewrite(eqn, invals, deps, target, self.values)
            out = [self._pick([j], o, p) for o, p in zip(out, planted)]
        for k, o in enumerate(out):
            self.values[(self.index, k)] = o
        return [(o, any(deps)) for o in out]


def planted(closed: core.ClosedJaxpr, targets: list) -> Callable:
    """``f`` (its traced program, of one array) with every target planted: a function of
    ``(x, choice)``, ``choice`` a one-hot vector over ``targets`` (``Site``s or
    ``"ungated"``) that picks the variant.  Same values (but for a kernel or a padding
    changed), the picked slip's derivative."""

    def run(x, choice):
        walk = _Planted(targets, choice)
        walk.values[("arg", 0)] = x
        (out,) = walk.run(closed.jaxpr, closed.consts, [(x, True)])
        return out[0]

    return run
