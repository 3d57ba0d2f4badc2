"""The ``mcjax`` command.

Each subcommand is a pair of functions: ``_add_NAME(subparsers)`` declares its options and
``_run_NAME(args) -> exit status`` does the work.  Exit status 0 means success, 1 a failed
check, 2 a usage error (argparse's own).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

from mcjax._conventions import DTYPES, SHAPE_CASES


def _enable_x64_if(dtypes) -> None:
    import jax

    if "float64" in dtypes:
        jax.config.update("jax_enable_x64", True)


class UsageError(Exception):
    """A user's mistake on the command line: printed as one line, exit status 2."""


def _import_user_module(spec: str, command: str = "mcjax"):
    """Import ``spec``, a dotted module name or a path to a .py file, and return the module.

    A file's own folder goes first on ``sys.path``, so that it can import its sibling files.
    """
    path = Path(spec)
    try:
        if spec.endswith(".py") or path.exists():
            if not path.exists():
                raise UsageError(f"{command}: {spec}: no such file")
            folder = str(path.resolve().parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[path.stem] = module
            module_spec.loader.exec_module(module)
            return module
        return importlib.import_module(spec)
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's module failed to import: one line
        raise UsageError(f"{command}: cannot import {spec}: {type(e).__name__}: {e}"
                         f"{_where_raised(e, spec)}") from None


def _where_raised(error: BaseException, spec: str) -> str:
    """`` (my_model.py:3)``: the last line of the user's file in ``error``'s traceback."""
    import traceback

    name = Path(spec).name
    frames = [fr for fr in traceback.extract_tb(error.__traceback__) if fr.filename.endswith(name)]
    if isinstance(error, SyntaxError) or not frames:
        return ""
    return f" ({name}:{frames[-1].lineno})"


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
            "rule fails."
        ),
    )
    p.add_argument("-k", "--select", default="*", metavar="PATTERN",
                   help="glob on rule names, e.g. 'neuron*' (default: all)")
    p.add_argument("--dtype", choices=(*DTYPES, "all"), default="all",
                   help="dtype to verify in (default: all = float32 and float64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random points (default 0)")
    p.add_argument("--points", type=int, default=1,
                   help="random points per rule, shape case and dtype (default 1)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: a list with one object per rule (name, ok, derivatives)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE (dotted name or .py path) first, so that the rules it "
                        "registers are verified too; may be repeated")
    p.add_argument("--list", action="store_true", help="list the selected rules and exit")
    p.set_defaults(run=_run_verify)


def _run_verify(args) -> int:
    dtypes = DTYPES if args.dtype == "all" else (args.dtype,)
    _enable_x64_if(dtypes)
    from rich.console import Console
    from rich.markup import escape

    import mcjax
    from mcjax._check import _summary

    for spec in args.imports:
        _import_user_module(spec, "mcjax verify: --import")
    rules = mcjax.REGISTRY.select(args.select)
    if not rules:
        print(f"mcjax verify: no rule matches {args.select!r}", file=sys.stderr)
        return 1
    if args.list:
        for r in rules:
            print(f"{r.name:32s} §{r.section:6s} wrt {', '.join(r.wrt)}")
        return 0
    start = time.perf_counter()
    results = mcjax.verify(pattern=args.select, dtypes=dtypes, cases=SHAPE_CASES,
                           seed=args.seed, points=args.points)
    elapsed = time.perf_counter() - start
    failed = _summary.failures(results)
    if args.json:
        print(json.dumps(_summary.as_json(results), indent=2))
        return 1 if failed else 0
    console = Console()
    console.print(_summary.table(results, title="mcjax verify: the checker over every rule"))
    n_derivatives = len(_summary.summarize(results))
    verdict = (
        f"[bold red]{len(failed)} of {len(results)} checks FAILED[/bold red]"
        if failed
        else f"[green]all {len(results)} checks passed[/green]"
    )
    console.print(
        f"{len(rules)} rules, {n_derivatives} derivatives, dtypes {', '.join(dtypes)}, "
        f"{len(SHAPE_CASES)} shape cases, seed {args.seed}: {verdict} in {elapsed:.1f} s",
        soft_wrap=True,
    )
    for line in failed:
        console.print("[red]FAIL[/red] " + escape(line), highlight=False, soft_wrap=True)
    return 1 if failed else 0


# -- check -------------------------------------------------------------------------------
def _load(spec: str, what: str):
    """``MODULE:NAME`` -> the object; MODULE is a dotted name or a path to a .py file."""
    module_name, sep, name = spec.rpartition(":")
    if not sep or not module_name or not name:
        raise UsageError(f"mcjax check: {what} {spec!r} is not MODULE:NAME (e.g. my_file.py:loss)")
    module = _import_user_module(module_name, f"mcjax check: {what} {spec!r}")
    try:
        return getattr(module, name)
    except AttributeError:
        raise UsageError(f"mcjax check: {what} {spec!r}: module {module_name} has no "
                         f"{name!r}") from None


def _parse_shape(text: str) -> tuple[int, ...]:
    text = text.strip().strip("()")
    try:
        shape = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        shape = (-1,)
    if any(d < 0 for d in shape):
        raise UsageError(f"mcjax check: --shapes {text!r} is not a shape like 3,4 (or () for a "
                         "scalar)")
    return shape


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


def _arguments(args) -> tuple:
    """The random arguments of ``mcjax check``: one per ``--shapes`` entry."""
    import jax.numpy as jnp

    shapes = [_parse_shape(s) for s in args.shapes]
    dists = list(args.dist or [])
    if len(dists) > len(shapes):
        raise UsageError(f"mcjax check: {len(dists)} --dist entries for {len(shapes)} --shapes; "
                         "expected at most one per argument")
    samplers = [_distribution(d) for d in dists] + [_distribution("normal")] * (
        len(shapes) - len(dists))
    rng = np.random.default_rng(args.seed)
    values = []
    for k, (shape, sample) in enumerate(zip(shapes, samplers)):
        try:
            value = np.asarray(sample(rng, shape, np.dtype(args.dtype)))
        except Exception as e:  # noqa: BLE001 - the user's sampler failed
            raise UsageError(f"mcjax check: the sampler of argument {k} raised "
                             f"{type(e).__name__}: {e}") from None
        if value.shape != shape:
            raise UsageError(f"mcjax check: the sampler of argument {k} returned shape "
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
            "otherwise). Prints the report. Exit status: 0 right, 1 wrong, 2 a usage, import "
            "or trace error."
        ),
    )
    p.add_argument("function", metavar="MODULE:FUNCTION", help="e.g. my_model.py:loss")
    p.add_argument("derivative", metavar="MODULE:DERIVATIVE", help="e.g. my_model.py:loss_grad")
    p.add_argument("--shapes", nargs="+", required=True, metavar="SHAPE",
                   help="one shape per argument, e.g. --shapes 3,4 4 () ")
    p.add_argument("--dist", nargs="+", metavar="DIST",
                   help="each argument's distribution, in order (default normal): "
                        f"{DISTRIBUTIONS} (a function sampler(rng, shape, dtype) of yours; "
                        "rng is a NumPy Generator), e.g. --dist normal positive int:0:10")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="dtype of the floating arguments (default float32)")
    p.add_argument("--argnums", type=int, default=0, help="which argument (default 0)")
    p.add_argument("--mode", choices=("auto", "full", "fast"), default="auto",
                   help="full: materialise the Jacobian; fast: random projections (default auto)")
    p.add_argument("--layout", choices=("numerator", "denominator"), default="numerator")
    p.add_argument("--kink-convention", choices=("jax", "left", "right", "average"),
                   default=None, help="require this value at kinks (default: any accepted one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random arguments (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--heatmap", metavar="PNG", help="save expected/got/difference (full mode)")
    p.set_defaults(run=_run_check)


def _run_check(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    import mcjax

    f = _load(args.function, "FUNCTION")
    derivative = _load(args.derivative, "DERIVATIVE")
    values = _arguments(args)
    try:
        report = mcjax.check(f, derivative, *values, argnums=args.argnums, mode=args.mode,
                             layout=args.layout, kink_convention=args.kink_convention,
                             seed=args.seed)
    except (mcjax.ShapeError, mcjax.DtypeError, mcjax.TraceError, TypeError, ValueError) as e:
        raise UsageError(str(e).replace("mcjax.check:", "mcjax check:", 1)) from None
    print(json.dumps(report.as_dict(), indent=2) if args.json else report)
    if args.heatmap:
        report.heatmap(args.heatmap)
    return 0 if report.ok else 1


# -- train -----------------------------------------------------------------------------------
def _key_value(text: str) -> tuple[str, object]:
    """``b1=0.9`` -> ("b1", 0.9); values are read as JSON when they parse, else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _add_train(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the paper's neuron or an MLP on the digits, with autodiff or analytic gradients",
        description=(
            "Train by minibatch gradient descent, one compiled lax.scan per epoch. "
            "TASK 'neuron': the paper's ReLU neuron, fitted with the paper's loss to synthetic "
            "data from a known (w, b); prints the parameter error. TASK 'digits': an MLP on "
            "scikit-learn's bundled digits (needs scikit-learn); prints the test accuracy. "
            "The final checkpoint (with --checkpoint-dir) holds the trained parameters."
        ),
    )
    p.add_argument("task", choices=("neuron", "digits"), help="what to train")
    p.add_argument("--grad", choices=("analytic", "autodiff"), default="analytic",
                   help="gradient source: the registry's hand-derived rules (default) or jax.grad")
    p.add_argument("--optimizer", default="adam",
                   help="sgd, momentum, adam (the paper's) or any optax optimizer (default adam)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 0.01 for neuron, 0.001 for digits)")
    p.add_argument("--opt", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="an optimizer hyper-parameter, e.g. --opt momentum=0.95; may be repeated")
    p.add_argument("--schedule", default=None, metavar="NAME",
                   help="an optax learning-rate schedule, e.g. cosine_decay; its init_value and "
                        "decay_steps default to --lr and the run's total steps")
    p.add_argument("--schedule-arg", type=_key_value, action="append", default=[],
                   metavar="KEY=VALUE", help="an argument of the schedule; may be repeated")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 200 neuron, 40 digits)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per step (default 32)")
    p.add_argument("--samples", type=int, default=512, help="neuron: examples (default 512)")
    p.add_argument("--features", type=int, default=4, help="neuron: inputs per example (default 4)")
    p.add_argument("--hidden", default="256,256",
                   help="digits: hidden layer widths, comma-separated (default 256,256)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="parameter dtype")
    p.add_argument("--seed", type=int, default=0, help="seed of parameters, data and shuffling")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="write checkpoints (ckpt-EPOCH.npz) to DIR")
    p.add_argument("--checkpoint-every", type=int, default=10, metavar="K",
                   help="checkpoint every K epochs, and at the end and on Ctrl-C (default 10)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --checkpoint-dir")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="JAX's persistent compilation cache (default $MCJAX_CACHE_DIR or "
                        "~/.cache/mcjax/xla)")
    p.add_argument("--no-cache", action="store_true", help="don't use the compilation cache")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_scaling_options(p)
    p.set_defaults(run=_run_train)


def _devices(text: str):
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a number of devices nor 'all'") from None


def _add_scaling_options(p) -> None:
    g = p.add_argument_group("data parallelism (see docs/scaling.md)")
    g.add_argument("--devices", type=_devices, default=None, metavar="N|all",
                   help="split each batch over N devices, or all devices of every process "
                        "(default: one device); --batch-size must be a multiple of it")
    g.add_argument("--distributed", action="store_true",
                   help="join a multi-process run first (jax.distributed.initialize): with "
                        "--coordinator/--num-processes/--process-id, else "
                        "$JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID, else "
                        "the cluster's own (TPU pod slice, SLURM, Open MPI)")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="address of process 0 (implies --distributed)")
    g.add_argument("--num-processes", type=int, default=None, metavar="P",
                   help="number of processes (implies --distributed)")
    g.add_argument("--process-id", type=int, default=None, metavar="I",
                   help="this process's id, 0 ... P-1 (implies --distributed)")


def _learning_rate(args, total_steps: int):
    """--lr, or the --schedule with its start value and length filled from --lr and the run."""
    import inspect

    import mcjax
    from mcjax._train._optim import _optax_schedules

    if args.schedule is None:
        return args.lr
    kwargs = dict(args.schedule_arg)
    maker = _optax_schedules().get(args.schedule.removesuffix("_schedule"), lambda: None)
    accepted = inspect.signature(maker).parameters
    for name, value in (("init_value", args.lr), ("peak_value", args.lr), ("value", args.lr),
                        ("decay_steps", total_steps), ("transition_steps", total_steps)):
        if name in accepted and name not in kwargs:
            kwargs[name] = value
    return mcjax.schedule(args.schedule, **kwargs)


def _train_task(args):
    """(model, data, report) for the task; report(params) -> the task's own figures."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import mcjax

    dtype = jnp.dtype(args.dtype)
    if args.task == "neuron":
        data, truth = mcjax.neuron_data(jax.random.key(args.seed), n_samples=args.samples,
                                        n_features=args.features, noise=0.01, dtype=dtype)
        args.lr = 0.01 if args.lr is None else args.lr
        args.epochs = 200 if args.epochs is None else args.epochs
        return mcjax.neuron_model(args.features, dtype=dtype), data, lambda params: {
            "w_error": float(np.max(np.abs(params["w"] - truth["w"]))),
            "b_error": float(np.abs(params["b"] - truth["b"])),
        }
    data, (X_test, y_test) = mcjax.digits_data(seed=args.seed, dtype=dtype)
    model = mcjax.mlp_model((64, *(int(h) for h in args.hidden.split(",") if h), 10), dtype=dtype)
    args.lr = 1e-3 if args.lr is None else args.lr
    args.epochs = 40 if args.epochs is None else args.epochs
    return model, data, lambda params: {"test_accuracy": float(np.mean(
        np.asarray(jnp.argmax(model.apply(params, X_test), axis=-1)) == y_test))}


def _run_train(args) -> int:
    _enable_x64_if([args.dtype])
    import jax

    import mcjax

    if args.distributed or args.coordinator or args.num_processes is not None \
            or args.process_id is not None:
        try:  # before anything starts JAX's backend
            mcjax.init_distributed(args.coordinator, args.num_processes, args.process_id)
        except (ValueError, RuntimeError) as error:
            print(f"mcjax train: {error}", file=sys.stderr)
            return 1
    if not args.no_cache:
        mcjax.enable_compilation_cache(args.cache_dir)
    model, data, report = _train_task(args)
    total_steps = args.epochs * (len(data[0]) // args.batch_size)
    cache_hits = []

    def count_cache_hits(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            cache_hits.append(event)

    jax.monitoring.register_event_listener(count_cache_hits)
    try:
        result = mcjax.train(
            model, data, optimizer=args.optimizer, learning_rate=_learning_rate(args, total_steps),
            optimizer_options=dict(args.opt), grad=args.grad, epochs=args.epochs,
            batch_size=args.batch_size, seed=args.seed, checkpoint_dir=args.checkpoint_dir,
            checkpoint_every=args.checkpoint_every, resume=args.resume,
            progress=sys.stderr.isatty() if args.progress is None else args.progress,
            devices=args.devices,
        )
    except (mcjax.NonFiniteLossError, mcjax.ShapeError, ValueError, TypeError) as error:
        print(f"mcjax train: {error}", file=sys.stderr)
        return 1
    finally:
        jax.monitoring.unregister_event_listener(count_cache_hits)
    losses = result.history["loss"]
    summary = {
        "task": args.task, "grad": args.grad, "optimizer": args.optimizer,
        "epochs": result.epoch, "steps": result.step, "final_loss": losses[-1] if losses else None,
        "compile_seconds": result.compile_seconds, "train_seconds": result.seconds,
        "compilation_cache_hits": len(cache_hits),
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "resumed_from": str(result.resumed_from) if result.resumed_from else None,
        "interrupted": result.interrupted,
        "devices": len(jax.tree.leaves(result.params)[0].sharding.device_set),
        "process": f"{jax.process_index()} of {jax.process_count()}",
        **report(result.params),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for name, value in summary.items():
            print(f"{name:24s} {f'{value:.6g}' if isinstance(value, float) else value}")
    if result.interrupted:
        hint = f"; resume with --resume --checkpoint-dir {args.checkpoint_dir}" \
            if args.checkpoint_dir else ""
        print(f"mcjax train: interrupted{hint}", file=sys.stderr)
        return 130
    return 0


# -- the command ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcjax",
        description="The matrix calculus of deep learning, executable: hand-derived "
                    "derivatives cross-checked against JAX autodiff.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _add_verify(subparsers)
    _add_check(subparsers)
    _add_train(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``mcjax`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status:
    0 success, 1 a failed verdict or run, 2 a usage, import or trace error (one line on stderr,
    no traceback)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
