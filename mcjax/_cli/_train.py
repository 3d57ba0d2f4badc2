"""``mcjax train``: the paper's neuron, an MLP on the digits, or a user's own model
(``my_model.py:model``, see :func:`_own_task`), from the command line.

The defaults are mcjax.train's (``_train/_defaults.DEFAULTS``), but for the neuron's learning rate.

Exit status: 0 done; 1 training failed (a NaN or Inf, a checkpoint that could not be written
such as on a full disk, out of memory, a hand-derived
gradient that failed its check at the first batch: the report follows); 2 a usage or environment error: a bad flag or value,
flags that contradict each other, a checkpoint folder that cannot serve the run (a file,
another run's, another process's, a read-only one, one on a full disk, a missing one to resume,
one written with other settings or with an unreadable run.json), found before any training, or
a folder whose lock was removed during the run (found before the next save, which is not
written); 128 + N a run stopped by signal N at the end of an
epoch, with a checkpoint (143 for SIGTERM, 130 for Ctrl-C; a second signal does not cut a save
short).  Every error is one line on stderr, and so is every warning.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
import sys
from pathlib import Path

from mcjax._core._conventions import DTYPES
from mcjax._core._errors import CheckpointError, UsageError
from mcjax._train._defaults import DEFAULTS
from mcjax._train._history import HISTORY_SUFFIXES

USAGE_ERRORS = (ValueError, TypeError, NotADirectoryError, FileNotFoundError)  # ShapeError,
# DtypeError and CheckpointError are among them (subclasses of ValueError and TypeError)
NEW_RUN_CHECKPOINTING = {"checkpoint_every": DEFAULTS.checkpoint_every,
                         "keep_checkpoints": DEFAULTS.keep_checkpoints}  # --checkpoint-every, --keep


def _number(kind, low, *, strict: bool):
    """An argparse type: a finite ``kind`` >= ``low`` (> ``low`` when ``strict``)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"{text} is out of range; expected a finite "
                                             f"number {'>' if strict else '>='} {low}")
        return value

    return parse


POSITIVE, COUNT, RATE = _number(int, 1, strict=False), _number(int, 0, strict=False), \
    _number(float, 0, strict=True)
NEURON_LEARNING_RATE = 0.01  # the neuron's five parameters move far from init: a larger step


def _key_value(text: str) -> tuple[str, object]:
    """``b1=0.9`` -> ("b1", 0.9); values are read as JSON when they parse, else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(h) for h in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of layer widths >= 1 such as "
                                         "256,256")
    return sizes


def _devices(text: str):
    if text == "all":
        return text
    try:
        return POSITIVE(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a number of devices (>= 1) nor 'all'") from None


BUILT_IN = ("neuron", "digits")
DATA = "data"  # the module's attribute that holds (or makes) a user's model's data


def _task_name(text: str) -> str:
    """TASK: a built-in task's name or MODULE:NAME (loaded later, once the flags are known)."""
    module, sep, name = text.rpartition(":")
    if text in BUILT_IN or (sep and module and name):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is neither {' nor '.join(BUILT_IN)} nor "
                                     "MODULE:NAME (e.g. my_model.py:model)")


def add_train(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the paper's neuron, an MLP on the digits or your own model, with autodiff "
             "or analytic gradients",
        description=(
            "Train by minibatch gradient descent, one compiled lax.scan per epoch. "
            "TASK 'neuron': the paper's ReLU neuron, fitted with the paper's loss to synthetic "
            "data from a known (w, b); prints the parameter error. TASK 'digits': an MLP on "
            "scikit-learn's bundled digits (needs scikit-learn: pip install 'mcjax[experiments]'); "
            "prints the test accuracy. "
            "TASK MODULE:NAME (e.g. my_model.py:model): your own model, NAME being a "
            "mcjax.Model, an (init, loss) pair, or a function of no arguments that returns "
            "one; the data are the module's 'data' (or --data NAME): a pytree of arrays with "
            "one example per row, or a function that returns one (given --seed if it takes a "
            "'seed'); see docs/own-model.md. "
            "The final checkpoint (with --checkpoint-dir) holds the trained parameters. "
            "The defaults are mcjax.train's. Prints a table of the loss per epoch (with "
            "--json, only the summary); --history and --plot save the history. "
            "Exit status: 0 done, 1 training failed (or --grad analytic failed its check), "
            "2 usage or environment error, 143 stopped by SIGTERM (130 by Ctrl-C) with a "
            "checkpoint to --resume from."
        ),
    )
    p.add_argument("task", type=_task_name, metavar="TASK",
                   help="what to train: neuron, digits, or MODULE:NAME (your own model)")
    p.add_argument("--data", default=None, metavar="NAME",
                   help="with MODULE:NAME, the module's data: a pytree of arrays or a function "
                        f"returning one (default {DATA})")
    p.add_argument("--grad", choices=("analytic", "autodiff"), default=DEFAULTS.grad,
                   help="gradient source: hand-derived (the registry's rules, or your model's "
                        "backprop; checked with mcjax.check at the first batch) or jax.grad "
                        "(default %(default)s)")
    p.add_argument("--check-backprop", action=argparse.BooleanOptionalAction,
                   default=DEFAULTS.check_backprop,
                   help="with --grad analytic, check the hand-derived gradient at the first "
                        "batch and stop with the report (exit 1) if it is wrong (default: on)")
    p.add_argument("--optimizer", default=DEFAULTS.optimizer,
                   help="sgd, momentum, adam (the paper's), kfac (K-FAC: --opt damping=0.1, "
                        "adaptive=true, adaptive_damping=true, ...; docs/kfac.md) or any optax "
                        "optimizer (default %(default)s)")
    p.add_argument("--lr", type=RATE, default=None,
                   help=f"learning rate > 0 (default {NEURON_LEARNING_RATE} for neuron, "
                        f"{DEFAULTS.learning_rate} for digits)")
    p.add_argument("--opt", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="an optimizer hyper-parameter, e.g. --opt momentum=0.95 (in range: "
                        "decay rates such as b1, b2, momentum in [0, 1), eps > 0, weight_decay "
                        ">= 0); may be repeated")
    p.add_argument("--schedule", default=None, metavar="NAME",
                   help="an optax learning-rate schedule, e.g. cosine_decay; its init_value and "
                        "decay_steps default to --lr and the run's total steps")
    p.add_argument("--schedule-arg", type=_key_value, action="append", default=[],
                   metavar="KEY=VALUE", help="an argument of the schedule; may be repeated")
    p.add_argument("--epochs", type=POSITIVE, default=DEFAULTS.epochs,
                   help="epochs, >= 1; a resumed run counts those already done "
                        "(default %(default)s)")
    p.add_argument("--batch-size", type=POSITIVE, default=DEFAULTS.batch_size,
                   help="examples per step (default %(default)s)")
    p.add_argument("--samples", type=POSITIVE, default=4096,
                   help="neuron: examples (default %(default)s)")
    p.add_argument("--features", type=POSITIVE, default=4,
                   help="neuron: inputs per example (default 4)")
    p.add_argument("--hidden", type=_hidden, default=(256, 256),
                   help="digits: hidden layer widths, comma-separated (default 256,256)")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="parameter dtype (with MODULE:NAME, float64 turns on jax_enable_x64 "
                        "before the module is imported; the dtypes are the module's)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed,
                   help="seed of parameters, data and shuffling (default %(default)s)")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="the run's checkpoint folder (orbax; one folder per saved epoch, "
                        "run.json, a lock): new or empty for a new run")
    p.add_argument("--checkpoint-every", type=POSITIVE, default=None, metavar="K",
                   help="checkpoint every K epochs, and at the end and on SIGTERM/Ctrl-C "
                        f"(default {DEFAULTS.checkpoint_every}; with --resume, the run's own)")
    p.add_argument("--keep", type=POSITIVE, default=None, metavar="N",
                   help=f"keep the newest N checkpoints of the run (default "
                        f"{DEFAULTS.keep_checkpoints}; with --resume, the run's own)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --checkpoint-dir from its newest intact checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in --checkpoint-dir, deleting the run that is there")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction,
                   default=DEFAULTS.progress,
                   help="progress bar on stderr, left at its last epoch (default: when stderr "
                        "is a terminal)")
    p.add_argument("--history", default=None, metavar="FILE.csv|FILE.jsonl",
                   help="write the loss and metrics per epoch there, one row per epoch as it "
                        "ends (a resumed run first writes the epochs it restored)")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="save a figure of the loss and metrics per epoch there (needs "
                        "matplotlib: pip install 'mcjax[plot]')")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="JAX's persistent compilation cache (default $MCJAX_CACHE_DIR or "
                        "~/.cache/mcjax/xla)")
    p.add_argument("--no-cache", action="store_true", help="don't use the compilation cache")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_scaling_options(p)
    p.set_defaults(run=run_train)


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
    g.add_argument("--num-processes", type=POSITIVE, default=None, metavar="P",
                   help="number of processes (implies --distributed)")
    g.add_argument("--process-id", type=COUNT, default=None, metavar="I",
                   help="this process's id, 0 ... P-1 (implies --distributed)")


def _contradictions(args) -> list[str]:
    """Flags that make no sense together (found before anything starts)."""
    found = []
    for flag, needs, given in (("--resume", "--checkpoint-dir", args.resume),
                               ("--overwrite", "--checkpoint-dir", args.overwrite),
                               ("--schedule-arg", "--schedule", args.schedule_arg)):
        if given and not getattr(args, needs[2:].replace("-", "_")):
            found.append(f"{flag} needs {needs}")
    if args.resume and args.overwrite:
        found.append("--resume and --overwrite contradict each other; expected one of them")
    if args.data is not None and args.task in BUILT_IN:
        found.append(f"--data names a module's data; expected it with TASK MODULE:NAME, not "
                     f"{args.task}")
    if args.task == "neuron" and args.samples < args.batch_size:
        found.append(f"--batch-size {args.batch_size} but --samples {args.samples}; expected a "
                     f"batch size of at most {args.samples}")
    if args.task == "digits":
        try:  # the digits are scikit-learn's: said before any work, as --plot's matplotlib
            import sklearn.datasets  # noqa: F401
        except ImportError:
            found.append("TASK digits needs scikit-learn: pip install 'mcjax[experiments]'")
    return found


def _output_problems(args) -> list[str]:
    """--history and --plot must name files that can be written (their missing folders are
    made when they are written; a file on the way is a usage error)."""
    found = []
    for flag, path in (("--history", args.history), ("--plot", args.plot)):
        if path is None:
            continue
        target = Path(path)
        existing = next(f for f in target.absolute().parents if f.exists())
        if target.is_dir():
            found.append(f"{flag} {path} is a folder; expected a file name")
        elif not existing.is_dir():
            found.append(f"{flag} {path}: {existing} is a file; expected a folder there")
    if args.history is not None and Path(args.history).suffix.lower() not in HISTORY_SUFFIXES:
        found.append(f"--history {args.history}; expected a file name ending in "
                     f"{' or '.join(HISTORY_SUFFIXES)}")
    if args.plot is not None:
        try:
            from matplotlib.figure import Figure
        except ImportError:
            found.append("--plot needs matplotlib: pip install 'mcjax[plot]'")
        else:
            kinds = Figure().canvas.get_supported_filetypes()
            if Path(args.plot).suffix.lstrip(".").lower() not in kinds:
                found.append(f"--plot {args.plot}; expected a file name ending in "
                             f".{' or .'.join(sorted(kinds))}")
    return found


def _learning_rate(args, total_steps: int):
    """--lr, or the --schedule with its start value and length filled from --lr and the run."""
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
    try:
        return mcjax.schedule(args.schedule, **kwargs)
    except (TypeError, ValueError) as error:
        text = str(error).removeprefix("mcjax.schedule: ")
        raise UsageError(_line(text if " is not an optax schedule" in text
                               else f"--schedule {args.schedule}: {text}")) from None


def _option_problems(args) -> list[str]:
    """What is wrong with the --opt entries, each named as it was given."""
    from mcjax._train._optim import hyper_parameter_problems, known_optimizers

    def spelled(key, value):
        return f"--opt {key}={value if isinstance(value, str) else json.dumps(value)}"

    options = dict(args.opt)
    if "learning_rate" in options:
        return [f"{spelled('learning_rate', options['learning_rate'])}: the learning rate has "
                f"its own flag; expected --lr {options['learning_rate']}"]
    if args.optimizer != "momentum" and args.optimizer not in known_optimizers():
        return []  # TrainConfig names the optimizer that does not exist
    return [problem if problem.startswith("--opt") else f"--opt: {problem}"
            for problem in hyper_parameter_problems(args.optimizer, options, spelled)]


def _checkpointing(args) -> str | None:
    """Set --checkpoint-every and --keep: as given, or the resumed run's own, or the defaults
    of a new run; return the line that says which of the run's own are changed (or None)."""
    from mcjax._train._models import count_problem
    from mcjax._train._run_folder import read_record

    recorded = None
    if args.resume and args.checkpoint_dir is not None:
        try:
            recorded = read_record(args.checkpoint_dir).get("checkpointing")
        except (CheckpointError, OSError):  # TrainConfig's look at the folder says why
            recorded = None
    run = recorded if isinstance(recorded, dict) else NEW_RUN_CHECKPOINTING
    changed = []
    for flag, name in (("--checkpoint-every", "checkpoint_every"), ("--keep", "keep_checkpoints")):
        attr = flag[2:].replace("-", "_")
        given, own = getattr(args, attr), run.get(name, NEW_RUN_CHECKPOINTING[name])
        if count_problem(own, name) and not (own is None and name == "keep_checkpoints"):
            own = NEW_RUN_CHECKPOINTING[name]  # a record edited by hand: a new run's
        if given is None:
            setattr(args, attr, own)
        elif recorded is not None and given != own:
            changed.append(f"{flag} {given} instead of the run's {'all' if own is None else own}")
    return f"mcjax train: resuming with {' and '.join(changed)}" if changed else None


def _config(args, total_steps: int):
    from mcjax._train._config import TrainConfig

    return TrainConfig(args.optimizer, _learning_rate(args, total_steps), dict(args.opt),
                       args.grad, args.epochs, args.batch_size, DEFAULTS.shuffle, args.seed,
                       args.checkpoint_dir, args.checkpoint_every, args.keep, args.resume,
                       args.overwrite, args.check_backprop)


def _own_model(value, spec: str):
    """A user's model from what MODULE:NAME names: a Model, an (init, loss) pair, or a function
    of no arguments that returns one of them."""
    from mcjax._core._user_code import call_user
    from mcjax._train._models import Model

    expected = ("expected a mcjax.Model, an (init, loss) pair, or a function of no arguments "
                "that returns one")
    if callable(value) and not isinstance(value, Model) and _takes_nothing(value):
        value = call_user(value, "mcjax train", f"TASK {spec!r}")
        if not isinstance(value, (Model, tuple, list)):
            raise UsageError(f"mcjax train: TASK {spec!r} returned a {type(value).__name__}; "
                             f"{expected}")
    if isinstance(value, Model):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(map(callable, value)):
        return Model(value[0], value[1], name=spec.rpartition(":")[2])
    raise UsageError(f"mcjax train: TASK {spec!r} is a {type(value).__name__}; {expected}")


def _takes_nothing(fn) -> bool:
    try:
        return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                   for p in inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False


def _takes_seed(fn) -> bool:
    try:
        return "seed" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _own_task(args):
    """(model, data, report) of MODULE:NAME: the model it names and the module's data
    (``--data``), called with ``seed`` if it is a function that takes one."""
    from mcjax._core._user_code import call_user, load_object

    module, value = load_object(args.task, "TASK", "mcjax train")
    model = _own_model(value, args.task)
    module_name = args.task.rpartition(":")[0]
    name = args.data or DATA
    data = getattr(module, name, None)
    if data is None:
        hint = "" if args.data else "; or name them with --data NAME"
        raise UsageError(f"mcjax train: {module_name} has no {name!r}; expected the training "
                         "data there: a pytree of arrays with one example per row, or a "
                         f"function that returns one{hint}")
    if callable(data):
        seeded = _takes_seed(data)
        data = call_user(data, "mcjax train", f"{module_name}:{name}",
                         **({"seed": args.seed} if seeded else {}))
    return model, data, lambda params: {}


def _rows(data) -> int:
    """The number of examples, for a schedule's length (the data are checked later, by
    ``prepare``, which says what is wrong with them)."""
    import jax
    import numpy as np

    shapes = [np.shape(leaf) for leaf in jax.tree.leaves(data)]
    return shapes[0][0] if shapes and shapes[0] else 1


def _task(args):
    """(model, data, report) for the task; report(params) -> the task's own figures."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import mcjax

    if args.task not in BUILT_IN:
        return _own_task(args)
    dtype = jnp.dtype(args.dtype)
    if args.task == "neuron":
        data, truth = mcjax.datasets.neuron_data(jax.random.key(args.seed), n_samples=args.samples,
                                        n_features=args.features, noise=0.01, dtype=dtype)
        return mcjax.neuron_model(args.features, dtype=dtype), data, lambda params: {
            "w_error": float(np.max(np.abs(params["w"] - truth["w"]))),
            "b_error": float(np.abs(params["b"] - truth["b"])),
        }
    data, (X_test, y_test) = mcjax.datasets.digits_data(seed=args.seed, dtype=dtype)
    model = mcjax.mlp_model((64, *args.hidden, 10), dtype=dtype)
    apply = model.apply
    assert apply is not None  # the paper's MLP predicts
    return model, data, lambda params: {"test_accuracy": float(np.mean(
        np.asarray(jnp.argmax(apply(params, X_test), axis=-1)) == y_test))}


def _line(error) -> str:
    """``error`` as one line of ``mcjax train``'s (an operating system's error as a sentence
    that names the file, not ``[Errno 28] ...``); an exception's message, mcjax.train's, in
    the command's words (its flags, not its keywords; no ``mcjax.train:`` of its own)."""
    from mcjax._cli._flags import as_flags
    from mcjax._train._checkpoint import WriteError

    if isinstance(error, OSError) and not isinstance(error, WriteError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"mcjax train: {where}{error.strerror}"
    text = str(error).strip() or type(error).__name__
    line = text.splitlines()[0]
    if isinstance(error, BaseException):
        line = as_flags(line.removeprefix("mcjax.train: "))
    return f"mcjax train: {line}"


def _fail(error) -> int:
    """A run that failed: one line on stderr, status 1."""
    print(_line(error), file=sys.stderr)
    return 1


def run_train(args) -> int:
    neuron = args.task == "neuron"
    args.lr = args.lr if args.lr is not None else NEURON_LEARNING_RATE if neuron \
        else DEFAULTS.learning_rate
    problems = _contradictions(args) + _option_problems(args) + _output_problems(args)
    if problems:
        raise UsageError(_line("; and ".join(problems)))
    changed = _checkpointing(args)
    # orbax logs each failure it raises (ERROR:absl:... with a traceback) before the error
    # reaches this command, which says it in one line
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    if args.dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    import mcjax

    if args.distributed or args.coordinator or args.num_processes is not None \
            or args.process_id is not None:
        try:  # before anything starts JAX's backend
            mcjax.sharding.init_distributed(args.coordinator, args.num_processes, args.process_id)
        except ValueError as error:
            raise UsageError(_line(error)) from None
        except RuntimeError as error:
            return _fail(error)
    try:
        _config(args, total_steps=1)  # every setting and the folder, before any data
        if not args.no_cache:
            mcjax.compilation.enable_compilation_cache(args.cache_dir)
        model, data, report = _task(args)
        config = _config(args, args.epochs * (_rows(data) // args.batch_size))
        from mcjax._train._loop import prepare

        run = prepare(model, data, config, devices=args.devices)
    except (*USAGE_ERRORS, OSError) as error:  # OSError: a full disk under run.json, ...
        raise UsageError(_line(error)) from None
    except mcjax.DerivativeError as error:  # the report follows the line that says where
        print(_line(error), str(error).partition("\n")[2], sep="\n", file=sys.stderr)
        return 1
    if changed:  # said once the run is known to resume
        print(changed, file=sys.stderr)
    return _train(args, run, report)


def _train(args, run, report) -> int:
    import jax

    import mcjax
    from mcjax._core._compat import unregister_event_listener
    from mcjax._train import _history
    from mcjax._train._loop import run_epochs
    from mcjax._train._stops import exit_status

    cache_hits = []

    def count_cache_hits(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            cache_hits.append(event)

    # one process writes the files of a multi-process run (they all hold the same history)
    writes = jax.process_index() == 0
    log = _history.HistoryWriter(args.history) if args.history and writes else None
    jax.monitoring.register_event_listener(count_cache_hits)
    try:
        if log is not None:
            log.start(_history.rows(run.history, run.steps_per_epoch))
        result = run_epochs(run, progress=args.progress, callback=log)
        if args.plot and writes:
            Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
            result.plot(args.plot, title=f"mcjax train {args.task}, grad={args.grad}")
    except mcjax.CheckpointError as error:  # the folder changed under the run: its lock
        print(_line(error), file=sys.stderr)  # removed, a later epoch written by another
        return 2
    except (FloatingPointError, OSError, RuntimeError, MemoryError) as error:
        return _fail(error)  # a NaN (NonFiniteLossError), a full disk, out of device memory
    finally:
        unregister_event_listener(count_cache_hits)
        if log is not None:
            log.close()
    losses = result.history["loss"]
    summary = {
        "task": args.task, "grad": args.grad, "optimizer": args.optimizer,
        "epochs": result.epoch, "steps": result.step, "final_loss": losses[-1] if losses else None,
        "compile_seconds": result.compile_seconds, "train_seconds": result.seconds,
        "compilation_cache_hits": len(cache_hits),
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "resumed_from": str(result.resumed_from) if result.resumed_from else None,
        "interrupted": result.interrupted, "signal": result.signal,
        "backprop_check": "passed" if result.backprop_check is not None else None,
        "devices": len(jax.tree.leaves(result.params)[0].sharding.device_set),
        "process": f"{jax.process_index()} of {jax.process_count()}",
        **report(result.params),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        from mcjax._cli._flags import as_flags

        if result.epoch:
            print(as_flags(result.table()), end="\n\n")
        for name, value in summary.items():  # JSON's nulls: no checkpoint, no signal, ...
            if value is not None:
                print(f"{name:24s} {f'{value:.6g}' if isinstance(value, float) else value}")
    if result.interrupted:
        hint = f"; resume with --resume --checkpoint-dir {args.checkpoint_dir}" \
            if args.checkpoint_dir else ""
        print(f"mcjax train: stopped by {result.signal} after epoch {result.epoch}{hint}",
              file=sys.stderr)
    return exit_status(result.signal)
