"""``mcjax derive``: the structured Jacobian of a function in the user's file, its formula, and
its check against JAX.

Exit status: 0 derived (and, unless ``--no-verify``, agreeing with ``jax.jvp``/``jax.vjp`` on
random probes); 1 the derived Jacobian disagrees with JAX, or ``--strict`` met a primitive
without a structured rule; 2 a usage, import or trace error.  Every error is one line on
stderr.
"""

from __future__ import annotations

import sys

from mcjax._core._conventions import DTYPES
from mcjax._core._errors import UsageError


def add_derive(subparsers) -> None:
    from mcjax._cli import _argnums, _int_at_least

    p = subparsers.add_parser(
        "derive",
        help="derive the structured Jacobian of a function in your own file, and its formula",
        description=(
            "Trace FUNCTION at random standard-normal arguments of the given shapes and apply "
            "the paper's rules to it (mcjax.derive): print the tree of structured Jacobians "
            "and the formula in the paper's notation, then check the Jacobian against "
            "jax.jvp and jax.vjp with random probes (J v and uᵀ J, tolerance from the dtype) "
            "and print the verdict. Exits 2 if FUNCTION cannot be loaded or traced, 1 if the "
            "Jacobian disagrees with JAX or --strict finds a primitive without a structured "
            "rule."
        ),
    )
    p.add_argument("function", metavar="MODULE:FUNCTION", help="e.g. my_model.py:layer")
    p.add_argument("--shapes", nargs="+", required=True, metavar="SHAPE",
                   help="one shape per argument, e.g. --shapes 8,4 4 8 (() for a scalar)")
    p.add_argument("--wrt", type=_argnums, default=0, metavar="I[,J...]",
                   help="differentiate with respect to argument I (default 0), or several: 0,2")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="dtype of the arguments (default float32)")
    p.add_argument("--latex", action="store_true", help="print the formula in LaTeX")
    p.add_argument("--strict", action="store_true",
                   help="fail (exit 1) on a primitive without a structured rule instead of "
                        "making an opaque block")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the check of the Jacobian against jax.jvp/jax.vjp")
    p.add_argument("--probes", type=_int_at_least(1), default=4, metavar="N",
                   help="random tangents (and as many cotangents) of that check (default 4)")
    p.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="seed of the random arguments and probes (default 0)")
    p.set_defaults(run=run_derive)


def run_derive(args) -> int:
    from mcjax._cli import _arguments, _enable_x64_if, _load

    _enable_x64_if([args.dtype])
    import jax

    import mcjax
    from mcjax._jacobian._verify import verify

    command = "mcjax derive"
    f = _load(args.function, "FUNCTION", command)  # a UsageError: one line, status 2
    values = _arguments(args, command)
    shapes = " ".join(str(v.shape) for v in values)
    try:
        J = mcjax.derive(f, args.wrt, strict=args.strict)(*values)
    except NotImplementedError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - f is the user's: say what failed, no traceback
        wrt = (f"argument {args.wrt}" if isinstance(args.wrt, int) else
               f"arguments {', '.join(map(str, args.wrt))}")
        raise UsageError(f"{command}: cannot derive {args.function} with respect to {wrt} at "
                         f"shapes {shapes}: "
                         f"{_first_line(error).removeprefix('mcjax.derive: ')}") from None
    blocks = jax.tree_util.tree_flatten_with_path(
        J, is_leaf=lambda leaf: isinstance(leaf, mcjax.Jacobian))[0]
    for path, block in blocks:
        if isinstance(args.wrt, tuple):  # named by the argument (--wrt 0,2: J[0] and J[2])
            path = (jax.tree_util.SequenceKey(args.wrt[path[0].idx]), *path[1:])
        name = f"J{jax.tree_util.keystr(path)}"
        print(f"{name}: shape {block.out_shape} ← {block.in_shape}")
        print(block.structure())
        print(f"{name} = {block.latex() if args.latex else block.formula()}")
        print()
    if not args.verify:
        return 0
    try:
        verdict = verify(f, J, values, args.wrt, probes=args.probes, seed=args.seed,
                         caller=command)
    except Exception as error:  # noqa: BLE001 - JAX's own derivative of f failed
        raise UsageError(f"{command}: cannot check {args.function} against jax.jvp/jax.vjp "
                         f"at shapes {shapes}: {_first_line(error)}") from None
    print(verdict)
    return 0 if verdict.ok else 1


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
