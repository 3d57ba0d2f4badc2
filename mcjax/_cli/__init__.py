"""The ``mcjax`` command.

Each subcommand is a pair of functions: ``_add_NAME(subparsers)`` declares its options and
``_run_NAME(args) -> exit status`` does the work (``train``'s pair is in ``_train``,
``derive``'s in ``_derive``, the rules table of ``verify`` in ``_summary``).  Exit status 0
means success, 1 a failed check, 2 a usage error, 130 Ctrl-C and 143 SIGTERM outside a
training loop (which stops at an epoch's end instead), each reported in one line; 141 (as
SIGPIPE) and no word when stdout's reader has gone (``mcjax verify --list | head``).  A warning
is one line too, without Python's source line, and said once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from mcjax._core._conventions import DTYPES, SHAPE_CASES
from mcjax._core._errors import DerivativeShapeError, UsageError
from mcjax._core._tolerance import FAST_DIRECTIONS
from mcjax._core._user_code import import_user_module, load_object


def _enable_x64_if(dtypes) -> None:
    import jax

    if "float64" in dtypes:
        jax.config.update("jax_enable_x64", True)


# -- option values: a bad one is argparse's one-line usage error naming the option (exit 2) --
def _int_at_least(minimum: int):
    """An argparse type: an int of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def _tolerance(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _argnums(text: str) -> int | tuple[int, ...]:
    """An argparse type: ``0`` (one argument) or ``0,2`` (several, a tuple as jax.grad takes)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts if p]
    except ValueError:
        values = []
    if not values or len(values) != len(parts) - (parts[-1] == ""):
        raise argparse.ArgumentTypeError(f"expected an argument number (0) or several "
                                         f"separated by commas (0,2), got {text!r}")
    return values[0] if len(parts) == 1 else tuple(values)


# -- verify ------------------------------------------------------------------------------
def _add_verify(subparsers) -> None:
    p = subparsers.add_parser(
        "verify",
        help="run the derivative checker over every registered rule",
        description=(
            "Check every registered matrix-calculus rule with mcjax.check's full mode at random "
            "points, over several shapes (size 1 and non-square) and dtypes, under jax.jit: "
            "against jax.jacfwd and jax.jacrev, with kinks read from the function and the "
            "checker's tolerance policy. Prints one row per rule and argument; exits 1 if any "
            "rule fails, 2 on a usage error (a -k matching no rule, say)."
        ),
    )
    p.add_argument("-k", "--select", default="*", metavar="PATTERN",
                   help="glob on rule names, e.g. 'neuron*' (default: all)")
    p.add_argument("--dtype", choices=(*DTYPES, "all"), default="all",
                   help="dtype to verify in (default: all = float32 and float64)")
    p.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="seed of the random points (default 0)")
    p.add_argument("--points", type=_int_at_least(1), default=1,
                   help="random points per rule, shape case and dtype (default 1)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: a list with one object per rule (name, ok, derivatives)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE (dotted name or .py path) first, so that the rules it "
                        "registers are verified too; may be repeated")
    p.add_argument("--list", action="store_true", help="list the selected rules and exit")
    p.add_argument("--jobs", type=_int_at_least(1), default=min(2, os.cpu_count() or 1),
                   metavar="N",
                   help="processes that check rules, this one included (default: 2, or 1 on a "
                        "one-core machine)")
    p.set_defaults(run=_run_verify)


def _run_verify(args) -> int:
    dtypes = DTYPES if args.dtype == "all" else (args.dtype,)
    _enable_x64_if(dtypes)
    from rich.console import Console
    from rich.markup import escape

    import mcjax
    from mcjax._cli import _summary

    for spec in args.imports:
        import_user_module(spec, "mcjax verify: --import")
    rules = mcjax.registry.REGISTRY.select(args.select)
    if not rules:
        raise UsageError(f"mcjax verify: -k {args.select!r}: no rule matches; expected a glob "
                         "on rule names, e.g. 'neuron*' (mcjax verify --list names them all)")
    if args.list:
        for r in rules:
            second = "".join(f"; second ({a}, {b})" for a, b in r.hessian)
            print(f"{r.name:32s} §{r.section:6s} wrt {', '.join(r.wrt)}{second}")
        return 0
    start = time.perf_counter()
    results = mcjax.registry.verify(pattern=args.select, dtypes=dtypes, cases=SHAPE_CASES,
                                    seed=args.seed, points=args.points, processes=args.jobs,
                                    imports=args.imports)
    elapsed = time.perf_counter() - start
    failed = _summary.failures(results)
    if args.json:
        print(json.dumps(_summary.as_json(results), indent=2))
        return 1 if failed else 0
    console = Console()
    console.print(_summary.table(results, title="mcjax verify: the checker over every rule"))
    n_derivatives = len(_summary.summarize(results))
    verdict = (
        f"[bold red]{len(failed)} of {_counted(len(results), 'check')} FAILED[/bold red]"
        if failed
        else f"[green]{'all ' * (len(results) > 1)}{_counted(len(results), 'check')} "
             f"passed[/green]"
    )
    console.print(
        f"{_counted(len(rules), 'rule')}, {_counted(n_derivatives, 'derivative')}, "
        f"{'dtypes' if len(dtypes) > 1 else 'dtype'} {', '.join(dtypes)}, "
        f"{_counted(len(SHAPE_CASES), 'shape case')}, seed {args.seed}: {verdict} in "
        f"{elapsed:.1f} s",
        soft_wrap=True,
    )
    for line in failed:
        console.print("[red]FAIL[/red] " + escape(line), highlight=False, soft_wrap=True)
    return 1 if failed else 0


def _counted(n: int, noun: str) -> str:
    """``1 rule``, ``2 rules``."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


# -- check -------------------------------------------------------------------------------
def _load(spec: str, what: str, command: str = "mcjax check"):
    """``MODULE:NAME`` -> the object; MODULE is a dotted name or a path to a .py file."""
    return load_object(spec, what, command)[1]


def _parse_shape(text: str, command: str = "mcjax check") -> tuple[int, ...]:
    """``3,4`` (or ``3x4``, ``(3, 4)``, ``3,``) -> (3, 4); ``()`` or nothing -> a scalar.
    Every item must be a positive integer: ``3,x`` is refused, not read as (3,)."""
    inner = text.strip().removeprefix("(").removesuffix(")").strip()
    items = [d.strip() for d in inner.replace("x", ",").split(",")] if inner else []
    if items and not items[-1] and len(items) > 1:
        items.pop()  # "3," is (3,), as Python writes it
    if not all(d.isdigit() and int(d) > 0 for d in items):
        raise UsageError(f"{command}: --shapes {text!r} is not a shape like 3,4 (or () for a "
                         "scalar); expected sizes that are positive integers")
    return tuple(int(d) for d in items)


DISTRIBUTIONS = "normal, normal:MU:SIGMA, uniform:LO:HI, positive, int:LO:HI or MODULE:SAMPLER"


def _distribution(spec: str):
    """``sample(rng, shape, dtype) -> NumPy array`` for one ``--dist`` entry."""
    kind, _, rest = spec.partition(":")
    try:
        numbers = [float(v) for v in rest.split(":")] if rest else []
    except ValueError:
        numbers = None
    if kind == "normal" and numbers in ([], None) and not rest:
        return lambda rng, shape, dtype: rng.standard_normal(shape).astype(dtype)
    if kind == "normal" and numbers is not None and len(numbers) == 2 and numbers[1] > 0:
        mu, sigma = numbers
        return lambda rng, shape, dtype: (mu + sigma * rng.standard_normal(shape)).astype(dtype)
    if kind == "uniform" and numbers is not None and len(numbers) == 2 and numbers[0] < numbers[1]:
        lo, hi = numbers
        return lambda rng, shape, dtype: rng.uniform(lo, hi, shape).astype(dtype)
    if kind == "positive" and not rest:
        return lambda rng, shape, dtype: np.exp(0.5 * rng.standard_normal(shape)).astype(dtype)
    if kind == "int" and numbers is not None and len(numbers) == 2 and numbers[0] < numbers[1]:
        lo, hi = (int(v) for v in numbers)
        return lambda rng, shape, dtype: rng.integers(lo, hi, shape).astype(np.int32)
    if kind not in ("normal", "uniform", "positive", "int") and rest:
        sampler = _load(spec, "--dist")
        if not callable(sampler):
            raise UsageError(f"mcjax check: --dist {spec!r} is not a function; expected "
                             "sampler(rng, shape, dtype) returning an array")
        return sampler
    raise UsageError(f"mcjax check: --dist {spec!r} is not a distribution; expected one of "
                     f"{DISTRIBUTIONS}")


def _arguments(args, command: str = "mcjax check") -> tuple:
    """The random arguments of ``mcjax check`` (or ``mcjax derive``, which has no ``--dist``):
    one per ``--shapes`` entry."""
    import jax.numpy as jnp

    shapes = [_parse_shape(s, command) for s in args.shapes]
    dists = list(getattr(args, "dist", None) or [])
    if len(dists) > len(shapes):
        raise UsageError(f"{command}: {len(dists)} --dist entries for {len(shapes)} --shapes; "
                         "expected at most one per argument")
    samplers = [_distribution(d) for d in dists] + [_distribution("normal")] * (
        len(shapes) - len(dists))
    rng = np.random.default_rng(args.seed)
    values = []
    for k, (shape, sample) in enumerate(zip(shapes, samplers)):
        try:
            value = np.asarray(sample(rng, shape, np.dtype(args.dtype)))
        except Exception as e:  # noqa: BLE001 - the user's sampler failed
            raise UsageError(f"{command}: the sampler of argument {k} raised "
                             f"{type(e).__name__}: {e}") from None
        if value.shape != shape:
            raise UsageError(f"{command}: the sampler of argument {k} returned shape "
                             f"{value.shape}; expected {shape} (from --shapes)")
        values.append(jnp.asarray(value))
    return tuple(values)


def _add_check(subparsers) -> None:
    p = subparsers.add_parser(
        "check",
        help="check a hand-derived derivative in your own file against autodiff and finite differences",
        description=(
            "Check DERIVATIVE, the derivative of FUNCTION with respect to one argument (numerator "
            "layout: out.shape + arg.shape, or a structured mcjax Jacobian, or a VJP function), "
            "at random arguments of the given shapes (standard normal unless --dist says "
            "otherwise). With --rule, check instead the jax.custom_jvp/custom_vjp rules that "
            "FUNCTION has or calls (mcjax.check_rule): no DERIVATIVE is given. With --second, "
            "DERIVATIVE is FUNCTION's second derivative (mcjax.check_hessian). Prints the "
            "report. Exit status: 0 right, 1 wrong (in value, or in a shape no derivative of "
            "FUNCTION has), 2 a usage, import or trace error."
        ),
    )
    p.add_argument("function", metavar="MODULE:FUNCTION", help="e.g. my_model.py:loss")
    p.add_argument("derivative", metavar="MODULE:DERIVATIVE", nargs="?",
                   help="e.g. my_model.py:loss_grad (none with --rule)")
    p.add_argument("--rule", action="store_true",
                   help="check FUNCTION's own custom rules (jax.custom_jvp, jax.custom_vjp) in "
                        "both directions against its computation without them")
    p.add_argument("--surrogate", metavar="MODULE:NAME",
                   help="with --rule: the function whose derivative the rule implements on "
                        "purpose (a straight-through estimator's identity)")
    p.add_argument("--second", choices=("hessian", "hvp"),
                   help="DERIVATIVE is a second derivative of the scalar FUNCTION "
                        "(mcjax.check_hessian): 'hessian', a function of the arguments returning "
                        "the Hessian (x.shape + x.shape) or an operator with .hvp(v)/.dense(); "
                        "'hvp', a Hessian-vector product hvp(v, *args)")
    p.add_argument("--shapes", nargs="+", required=True, metavar="SHAPE",
                   help="one shape per argument, e.g. --shapes 3,4 4 () ")
    p.add_argument("--dist", nargs="+", metavar="DIST",
                   help="each argument's distribution, in order (default normal): "
                        f"{DISTRIBUTIONS} (a function sampler(rng, shape, dtype) of yours; "
                        "rng is a NumPy Generator), e.g. --dist normal positive int:0:10")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="dtype of the floating arguments (default float32)")
    p.add_argument("--argnums", type=_argnums, default=0, metavar="I[,J...]",
                   help="which argument (default 0), or several: 0,2 (DERIVATIVE then returns "
                        "a tuple, one derivative per argument)")
    p.add_argument("--mode", choices=("auto", "full", "fast"), default="auto",
                   help="full: materialise the Jacobian; fast: random projections (default auto)")
    p.add_argument("--layout", choices=("numerator", "denominator"), default="numerator")
    p.add_argument("--kink-convention", choices=("jax", "left", "right", "average"),
                   default=None, help="require this value at kinks (default: any accepted one)")
    p.add_argument("--points", type=_int_at_least(1), metavar="N",
                   help="points: the arguments, then random points near them (default 1 in "
                        "full mode; 2 in fast mode, for a scalar f the second only when x "
                        "could hide a slip or fails)")
    p.add_argument("--directions", type=_int_at_least(1), default=FAST_DIRECTIONS, metavar="N",
                   help=f"fast mode's random directions per point (default {FAST_DIRECTIONS})")
    p.add_argument("--rtol", type=_tolerance, metavar="X",
                   help="override the tolerance policy's relative threshold (default: the policy)")
    p.add_argument("--atol", type=_tolerance, metavar="X",
                   help="override the tolerance policy's absolute floor (default: the policy)")
    p.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="seed of the random arguments (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--heatmap", metavar="PNG",
                   help="save expected, got and their difference as a PNG, pytree leaves named "
                        "(full mode)")
    p.set_defaults(run=_run_check)


def _run_check(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    import mcjax

    if args.rule and args.derivative is not None:
        raise UsageError(f"mcjax check: --rule checks the custom rules of {args.function} "
                         f"itself; expected no DERIVATIVE, got {args.derivative}")
    if not args.rule and args.derivative is None:
        raise UsageError("mcjax check: expected MODULE:DERIVATIVE after MODULE:FUNCTION (or "
                         "--rule to check the function's own custom rules)")
    if args.surrogate is not None and not args.rule:
        raise UsageError("mcjax check: --surrogate goes with --rule")
    if args.second is not None:
        _second_options(args)
    if args.heatmap:
        _check_output(args.heatmap, "--heatmap")
        if args.mode == "fast":
            raise UsageError("mcjax check: --heatmap draws the Jacobian, which --mode fast never "
                             "builds; expected --mode full or auto (a small Jacobian)")
    f = _load(args.function, "FUNCTION")
    derivative = _load(args.derivative, "DERIVATIVE") if args.derivative is not None else None
    surrogate = _load(args.surrogate, "--surrogate") if args.surrogate is not None else None
    values = _arguments(args)
    try:
        if derivative is None:  # --rule
            if args.layout != "numerator":
                raise ValueError("mcjax.check_rule: --layout has no meaning with --rule "
                                 "(JAX's own derivatives are judged, in numerator layout)")
            report = mcjax.check_rule(f, *values, argnums=args.argnums, surrogate=surrogate,
                                      mode=args.mode, kink_convention=args.kink_convention,
                                      points=args.points, directions=args.directions,
                                      rtol=args.rtol, atol=args.atol, seed=args.seed)
        elif args.second is not None:
            report = mcjax.check_hessian(f, derivative, *values, argnums=args.argnums,
                                         kind=args.second, mode=args.mode, points=args.points,
                                         directions=args.directions, rtol=args.rtol,
                                         atol=args.atol, seed=args.seed)
        else:
            report = mcjax.check(f, derivative, *values, argnums=args.argnums, mode=args.mode,
                                 layout=args.layout, kink_convention=args.kink_convention,
                                 points=args.points, directions=args.directions,
                                 rtol=args.rtol, atol=args.atol, seed=args.seed)
    except DerivativeShapeError as e:  # the derivative under test is wrong: a verdict
        print(str(e).replace("mcjax.check:", "mcjax check: FAIL:", 1)
              .replace("mcjax.check_hessian:", "mcjax check --second: FAIL:", 1), file=sys.stderr)
        return 1
    except (mcjax.ShapeError, mcjax.DtypeError, mcjax.TraceError, TypeError, ValueError) as e:
        raise UsageError(str(e).replace("mcjax.check_rule:", "mcjax check --rule:", 1)
                         .replace("mcjax.check_hessian:", "mcjax check --second:", 1)
                         .replace("mcjax.check:", "mcjax check:", 1)) from None
    print(json.dumps(report.as_dict(), indent=2) if args.json else report)
    if args.heatmap:
        try:
            report.heatmap(args.heatmap)
        except (OSError, ValueError, ImportError) as error:  # fast mode, a full disk, ...
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise UsageError(f"mcjax check: --heatmap {args.heatmap}: "
                             f"{str(reason).replace('mcjax.Report.heatmap: ', '')}") from None
    return 0 if report.ok else 1


def _second_options(args) -> None:
    """``--second`` with the options it cannot take: one sentence naming the first."""
    if args.rule:
        raise UsageError("mcjax check: --second checks a DERIVATIVE of yours; expected no --rule")
    if isinstance(args.argnums, tuple):
        raise UsageError(f"mcjax check: --second --argnums {','.join(map(str, args.argnums))}: "
                         "expected one argument (the Hessian with respect to one argument)")
    if args.layout != "numerator" or args.kink_convention is not None:
        flag = "--layout" if args.layout != "numerator" else "--kink-convention"
        raise UsageError(f"mcjax check: --second takes no {flag} (a Hessian is symmetric, "
                         "and JAX's value is accepted where the gradient jumps)")


def _check_output(path: str, flag: str, command: str = "mcjax check") -> None:
    """Refuse, before any work, a file that cannot be written where the path says."""
    folder = Path(path).parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UsageError(f"{command}: {flag} {path}: {existing} is a file; expected a path in a "
                         "folder")
    if not folder.is_dir():
        raise UsageError(f"{command}: {flag} {path}: the folder {folder} does not exist; "
                         "expected a path in an existing folder")
    if Path(path).is_dir():
        raise UsageError(f"{command}: {flag} {path} is a folder; expected a file name such as "
                         f"{Path(path) / 'heatmap.png'}")


# -- the command ---------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (what went wrong and where to read more)
    instead of the usage summary; the exit status stays 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """``--version``: ``mcjax X.Y.Z (jax A.B.C)``, status 0; mcjax and JAX are imported only
    when it is asked for."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        import jax

        import mcjax

        print(f"mcjax {mcjax.__version__} (jax {jax.__version__})")
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    from mcjax._cli._derive import add_derive
    from mcjax._cli._train import add_train

    parser = _Parser(
        prog="mcjax",
        description="The matrix calculus of deep learning, executable: hand-derived "
                    "derivatives cross-checked against JAX autodiff.",
    )
    parser.add_argument("--version", action=_Version,
                        help="print mcjax's version and JAX's, and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _add_verify(subparsers)
    _add_check(subparsers)
    add_derive(subparsers)
    add_train(subparsers)
    return parser


class _Terminated(Exception):
    """SIGTERM outside a training loop (which stops at the end of its epoch instead)."""


@contextlib.contextmanager
def _sigterm_stops():
    """SIGTERM raises :class:`_Terminated` (one line, status 143) instead of ending the process
    without a word; the main thread only, where Python runs signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


SIGPIPE_STATUS = 128 + 13  # what a shell reports for a program that SIGPIPE ended (| head)


def _reader_gone() -> int:
    """stdout's reader closed the pipe (``mcjax verify --list | head``): say nothing more, as
    ``cat`` and ``git`` do, and end with status 141 (128 + SIGPIPE), so that a pipeline with
    ``set -o pipefail`` sees that the output was cut.  stdout then points at /dev/null, so that
    Python's last flush at exit does not print the error again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (a test's capture)
        pass
    return SIGPIPE_STATUS


def main(argv: list[str] | None = None) -> int:
    """Run the ``mcjax`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status:
    0 success, 1 a failed verdict or run, 2 a usage, import or trace error, 130 Ctrl-C, 143
    SIGTERM (one line on stderr, no traceback), 141 stdout's reader gone (no word)."""
    args = build_parser().parse_args(argv)
    command = f"mcjax {args.command}"
    said: set[str] = set()

    def one_line(message, category, filename, lineno, file=None, line=None):
        text = str(message).strip().splitlines()
        said_by = f"mcjax.{args.command}: "  # the library's own prefix, said once already
        warning = f"{command}: warning: " \
                  f"{text[0].removeprefix(said_by) if text else category.__name__}"
        if warning not in said:  # a library that warns at every call is heard once
            said.add(warning)
            print(warning, file=sys.stderr if file is None else file)

    try:
        with warnings.catch_warnings(), _sigterm_stops():
            warnings.showwarning = one_line
            status = args.run(args)
            sys.stdout.flush()  # a reader gone (| head) is found here, not at Python's exit
            return status
    except BrokenPipeError:
        return _reader_gone()
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted (Ctrl-C)", file=sys.stderr)
        return 128 + signal.SIGINT
    except _Terminated:
        print(f"{command}: stopped by SIGTERM", file=sys.stderr)
        return 128 + signal.SIGTERM

if __name__ == "__main__":
    raise SystemExit(main())
