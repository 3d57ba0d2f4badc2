r"""Everything else JAX can differentiate: identities (sharding, layout, names), effects and
callbacks, mutable state, random keys, collectives.

- **identities** (``device_put``, ``sharding_constraint``, ``name``, ...): the Jacobian is $I$;
- **callbacks and foreign calls** (``pure_callback``, ``ffi_call``): JAX's linear map of them
  (what JAX can differentiate of a foreign function is its own rule);
- **state** (references, boxes) and **random keys**: no derivative that a function of arrays
  has (``none``);
- **collectives** (``psum``, ``all_gather``, ...) only have meaning inside ``shard_map``'s
  named axes: JAX's linear map.
"""

from __future__ import annotations

from mcjax._jacobian import _build as B
from mcjax._jacobian import _expr as E
from mcjax._primitives._elementwise import jax_partial, local
from mcjax._primitives._table import Eqn, register


def _identity(e: Eqn):
    """$I$ on each operand that is an output (one output per operand)."""
    parts = [{k: B.identity(out.shape, out.dtype)} if k in e.active else {}
             for k, out in enumerate(e.outs)]
    return parts if len(e.outs) > 1 else parts[0]


def _same(name: str):
    """The output written as its operand: a placement or a name changes no value (JAX 0.7 puts
    ``device_put`` around every ``jnp.asarray`` of a NumPy constant); several operands at once
    are written as the call."""
    return lambda a, s, p: a[0] if len(a) == 1 else E.opaque(name, a, s)


for _name in ("device_put", "sharding_constraint", "reshard", "layout_constraint", "name",
              "stage", "pvary", "mesh_cast", "reduced_vary_cast_p", "vary_unreduced_cast_p"):
    register(_name, "sharding and effects", jacobian=_identity, expr=_same(_name),
             behaviour="identity", rounding="exact")
register("tie", "sharding and effects",
         jacobian=lambda e: {1: B.identity(e.out.shape, e.out.dtype)} if 1 in e.active else {},
         behaviour="identity", rounding="exact")
for _name in ("debug_callback", "debug_print", "inspect_sharding", "io_callback",
              "pure_callback", "ffi_call", "dce_sink", "from_edtype", "to_edtype", "check"):
    register(_name, "sharding and effects",
             fallback="a callback, a foreign call or an effect: JAX's linear map of it")
for _name in ("get", "swap", "addupdate", "new_ref", "empty_ref", "free_ref", "freeze",
              "accum_grad_in_ref", "box_get", "box_set", "new_box", "run_state", "new_log",
              "log_extend", "log_read",
              "mutable_array", "array_ref"):  # JAX 0.7.0's and 0.7.1's names of new_ref
    register(_name, "state", behaviour="none", fallback="mutable state: JAX's linear map")
for _name in ("random_bits", "random_fold_in", "random_seed", "random_split", "random_unwrap",
              "random_wrap", "bitcast_convert_type"):
    register(_name, "random", behaviour="integer", rounding="exact")
register("iota", "shape", behaviour="integer", rounding="exact",
         expr=lambda a, s, p: E.iota(s[p["dimension"]], p["dimension"], s))
register("random_gamma", "random",
         jacobian=lambda e: {1: local(e, 1, jax_partial(e, 1, E.call("∂gamma/∂a", e.ins[1].expr)))}
         if 1 in e.active else {})
for _name in ("all_gather", "all_gather_invariant", "all_gather_reduced", "all_to_all",
              "pbroadcast", "ppermute", "preduced", "psum", "psum_invariant",
              "ragged_all_to_all", "reduce_scatter", "unreduced_psum",
              "unreduced_reduce_scatter", "axis_index", "pmax", "pmin", "psum_scatter"):
    register(_name, "collectives",
             fallback="a collective: JAX's linear map, inside shard_map's named axes")
for _name in ("bcoo_dot_general", "bcoo_dot_general_sampled", "bcoo_extract", "bcoo_fromdense",
              "bcoo_sort_indices", "bcoo_spdot_general", "bcoo_sum_duplicates", "bcoo_todense",
              "bcoo_transpose", "bcsr_dot_general", "bcsr_extract", "bcsr_fromdense",
              "bcsr_todense", "coo_fromdense", "coo_matmat", "coo_matvec", "coo_todense",
              "csr_fromdense", "csr_matmat", "csr_matvec", "csr_todense", "todense", "spsolve"):
    register(_name, "sparse", fallback="a sparse format (jax.experimental.sparse): JAX's linear "
             "map of it")
for _name in ("shard_alike", "host_local_array_to_global_array",
              "global_array_to_host_local_array"):
    register(_name, "sharding and effects", jacobian=_identity, behaviour="identity",
             rounding="exact")
for _name in ("compute_on", "xla_metadata_call", "fused_call", "mpmd_map"):
    register(_name, "control flow", fallback="a call with placement or metadata of its own: "
             "JAX's linear map of it")
for _name in ("pallas_call", "masked_load", "masked_swap", "buffer_callback",
              "xla_metadata_value"):
    register(_name, "sharding and effects", fallback="a kernel, a callback or metadata "
             "(Pallas, buffer callbacks): JAX's linear map of it")
