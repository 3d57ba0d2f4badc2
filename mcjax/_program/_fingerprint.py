"""A traced program's fingerprint: the same in every process for the same program, and a short
account of its operations that says what changed when two fingerprints differ.

A checkpoint folder records what its run computes (``mcjax._train._programs``), so that a
resumed run that computes anything else is refused, however the change was made: an
activation held in a module's static part, a global function, a literal in a hand-written
optimizer, a hyper-parameter read from ``self``.  What a program computes is its key
(:func:`~mcjax._program._trace.function_key`, the key of the compiled-program cache): its
jaxpr's text, with every literal, and a digest of every constant it closes over.  That key
is hashable but not stable across processes as it is (a tree structure's ``repr`` may name a
function by its address), so :func:`stable_digest` hashes its ``repr`` with every memory
address (``0x7f...``) blanked out.

To name the change, a :class:`Fingerprint` also keeps the program's operations, one word per
equation (``mul -0.1``, ``relu/max 0.0``: the primitive, its numeric parameters and literals,
under the names of the functions that call it) and its constants' digests; :func:`change`
aligns two such lists (``difflib``) and says the first difference in words:
``tanh where relu was``.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import os
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jax.extend import core

from mcjax._program._trace import Trace, digest, host_array
from mcjax._program._walk import called_constants, callee_name, sub_jaxprs, user_place

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{4,}")
MAX_STORED = 1 << 16  # bytes of compressed operations kept in a record; more: the digest alone


def stable_digest(key) -> str:
    """A hex digest of a program key that is the same in every process for the same program
    (blake2b of its ``repr``, memory addresses blanked out)."""
    text = _ADDRESS.sub("0x?", repr(key))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _scalar(value) -> str:
    array = np.asarray(value)
    return str(array[()]) if array.ndim == 0 else f"{array.dtype.name}{list(array.shape)}"


def _word(eqn) -> str:
    numbers = [f"{k}={v}" for k, v in sorted(eqn.params.items())
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    literals = [_scalar(v.val) for v in eqn.invars if isinstance(v, core.Literal)]
    return " ".join([eqn.primitive.name, *numbers, *literals])


def _operations(jaxpr: core.Jaxpr, path: tuple[str, ...], out: list, outer=None) -> list:
    """``[(word, (eqn, outer))]``: every primitive equation of ``jaxpr``, depth first, its word
    prefixed by the names of the calls it sits in (``relu/max 0.0``), with the outermost
    call it sits in (traced on the user's line when the equation itself was not)."""
    for eqn in jaxpr.eqns:
        inner = list(sub_jaxprs(eqn))
        if not inner:
            out.append(("/".join((*path, _word(eqn))), (eqn, outer or eqn)))
            continue
        name = callee_name(eqn)
        here = path if path and path[-1] == name else (*path, name)
        for jaxpr_inside in inner:
            _operations(jaxpr_inside, here, out, outer or eqn)
    return out


def _constants(closed: core.ClosedJaxpr) -> list[list[str]]:
    """``[[dtype[shape], digest]]`` of the constants ``closed`` and the jaxprs it calls hold."""
    arrays = [host_array(c) for c in (*closed.consts, *called_constants(closed.jaxpr))]
    return [[f"{a.dtype.name}{list(a.shape)}", digest(a)] for a in arrays]


@dataclass(frozen=True)
class Fingerprint:
    """What a traced program computes: ``digest`` decides, the rest says what changed.

    Attributes:
      digest: :func:`stable_digest` of the program's key.
      operations: one word per primitive equation (see the module's docstring), or None when
        they were too many to keep.
      constants: ``[dtype[shape], digest]`` of each constant it closes over.
      places: (this process's only) the equation of each operation and the outermost call it
        sits in, to name the user's line.
    """

    digest: str
    operations: tuple[str, ...] | None
    constants: tuple[tuple[str, str], ...]
    places: tuple = field(default=(), compare=False, repr=False)

    @classmethod
    def of(cls, trace: Trace) -> "Fingerprint":
        ops = _operations(trace.closed.jaxpr, (), [])
        return cls(stable_digest(trace.key), tuple(w for w, _ in ops),
                   tuple((a, b) for a, b in _constants(trace.closed)), tuple(e for _, e in ops))

    def to_json(self) -> dict[str, Any]:
        """The fingerprint as stored in a run's record (operations compressed)."""
        ops = None
        if self.operations is not None:
            packed = zlib.compress("\n".join(self.operations).encode(), 9)
            ops = base64.b64encode(packed).decode() if len(packed) <= MAX_STORED else None
        return {"digest": self.digest, "operations": ops,
                "constants": [list(c) for c in self.constants]}

    @classmethod
    def from_json(cls, stored) -> "Fingerprint | None":
        """The fingerprint a record holds (None: the record holds none that can be read)."""
        if not isinstance(stored, dict) or not isinstance(stored.get("digest"), str):
            return None
        ops = None
        try:
            if isinstance(stored.get("operations"), str):
                text = zlib.decompress(base64.b64decode(stored["operations"])).decode()
                ops = tuple(text.split("\n")) if text else ()
        except (ValueError, zlib.error, UnicodeDecodeError):
            ops = None
        constants = stored.get("constants")
        return cls(stored["digest"], ops, tuple(tuple(c) for c in constants)
                   if isinstance(constants, list) else ())


def _name(word: str) -> str:
    """What a word is called in a sentence: the outermost function it sits in, else its
    primitive (``relu/max 0.0`` -> ``relu``; ``tanh`` -> ``tanh``)."""
    return word.split("/", 1)[0].split(" ", 1)[0]


def _names(words) -> list[str]:
    names: list[str] = []
    for word in words:
        name = _name(word)
        if not names or names[-1] != name:
            names.append(name)
    return names


def _listed(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _full(words, limit: int = 2) -> str:
    return ", ".join(f"`{w}`" for w in words[:limit]) + (", ..." if len(words) > limit else "")


_LIBRARIES = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}",
              os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep)


def _place(now: Fingerprint, index: int) -> str:
    """`` (`code` (file.py:12))``: the user's line of an operation, or of the call it sits in;
    a library's line (equinox's MLP calling its activation, mcjax's own) says little."""
    for eqn in now.places[index] if index < len(now.places) else ():
        place = user_place(eqn)
        if place is not None and not any(part in place.file for part in _LIBRARIES):
            return f" ({place})"
    return ""


def change(there: Fingerprint, now: Fingerprint) -> str:
    """The first difference between two fingerprints of a program, in words (``tanh where
    relu was``); empty when they are the same program."""
    if there.digest == now.digest:
        return ""
    if there.operations is not None and now.operations is not None \
            and there.operations != now.operations:
        matcher = difflib.SequenceMatcher(None, there.operations, now.operations,
                                          autojunk=False)
        tag, i1, i2, j1, j2 = next(op for op in matcher.get_opcodes() if op[0] != "equal")
        old, new = there.operations[i1:i2], now.operations[j1:j2]
        where = _place(now, j1)
        if tag == "insert":
            return f"{_listed(_names(new))} added{where}"
        if tag == "delete":
            return f"{_listed(_names(old))} gone"
        # what replaced what: the first of each side (the rest of a block is most often the
        # derivative of that one change)
        if _names(new)[0] != _names(old)[0]:
            return f"{_names(new)[0]} where {_names(old)[0]} was{where}"
        differing = [k for k, (a, b) in enumerate(zip(old, new)) if a != b]
        if not differing:  # the same words, more or fewer of them
            return f"{_full(new)} where {_full(old)} was{where}"
        pairs = list(dict.fromkeys((old[k], new[k]) for k in differing))  # once each
        return (f"{_full([b for _, b in pairs])} where {_full([a for a, _ in pairs])} was"
                f"{_place(now, j1 + differing[0])}")
    if there.constants != now.constants:
        if len(there.constants) != len(now.constants):
            return (f"it closes over {len(now.constants)} constant arrays where it closed over "
                    f"{len(there.constants)}")
        kind = next(n[0] for t, n in zip(there.constants, now.constants) if t != n)
        return f"a constant it closes over ({kind}) holds other values"
    if there.operations is None or now.operations is None:
        return "its program is another (the record keeps no account of its operations)"
    return "its program is another (the same operations, with other settings)"
