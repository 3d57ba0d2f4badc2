r"""Control flow and calls: what the walker enters, and custom derivative rules.

- ``jit``, ``closed_call``, ``remat`` and the other calls are walked: their body is ``f``'s
  own program (``mcjax.derive`` knows some of JAX's jitted library functions by name: see
  ``_linalg``);
- ``cond`` walks the branch taken, ``scan`` and ``while`` (at a known trip count) are unrolled
  by the derivation (``mcjax._derive._interpret``); past that, JAX's linear map;
- a ``custom_jvp``/``custom_vjp`` function's derivative is its rule: the table knows some by
  name (``_known``), any other is JAX's linear map of the call, which runs the rule.

For the checker the calls' bodies are read for kinks; inside ``cond``, ``scan`` and ``while``
JAX's own derivative is taken.
"""

from __future__ import annotations

from mcjax._primitives._table import register

FAMILY = "control flow"
_WALKED = "a call: its body is walked"

for _name in ("jit", "pjit", "closed_call", "core_call", "remat", "remat2", "checkpoint",
              "custom_vmap_call", "linear_call", "composite", "eval_jaxpr"):
    register(_name, FAMILY, walked=True, fallback=_WALKED, behaviour="identity",
             rounding="exact")
register("cond", FAMILY, behaviour="jump", walked=True,
         fallback="the branch taken (every branch, by the indicator of its index, when the "
         "index is traced)")
register("scan", FAMILY, walked=True, fallback="unrolled (JAX's linear map past 256 steps)")
register("while", FAMILY, walked=True, fallback="unrolled at concrete values (JAX's forward "
         "map under jax.jit)")
register("for", FAMILY, fallback="a loop over mutable references (JAX 0.7's for_loop): JAX's "
         "linear map")
register("remat_opt", FAMILY, fallback="a rematerialization with its own rule (JAX's map)")
register("custom_jvp_call", FAMILY,
         fallback="a custom_jvp rule: its derivative is the rule (JAX's linear map of the call)")
register("custom_vjp_call", FAMILY,
         fallback="a custom_vjp rule: its derivative is the rule (dense, by reverse mode)")
register("call_hi_primitive", FAMILY, fallback="a higher-level primitive (JAX's linear map)")
