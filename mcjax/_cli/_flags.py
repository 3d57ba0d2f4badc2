"""mcjax.train's messages in ``mcjax train``'s words.

The library names its Python keywords (``grad='autodiff'``, ``resume=True``,
``check_backprop=False skips this check``); the command says the flags that set them
(``--grad autodiff``, ``--resume``, ``--no-check-backprop skips this check``).  One table,
read when the command prints a library message, so that neither side words its messages twice.
"""

from __future__ import annotations

import re

# mcjax.train's keyword -> mcjax train's flag
FLAGS = {
    "grad": "--grad", "check_backprop": "--check-backprop", "resume": "--resume",
    "overwrite": "--overwrite", "checkpoint_dir": "--checkpoint-dir", "devices": "--devices",
    "seed": "--seed", "epochs": "--epochs", "batch_size": "--batch-size",
    "checkpoint_every": "--checkpoint-every", "keep_checkpoints": "--keep",
    "num_processes": "--num-processes", "process_id": "--process-id", "learning_rate": "--lr",
}
NEGATABLE = {"check_backprop"}  # argparse.BooleanOptionalAction: --no-check-backprop
# what a TrainResult's table says to Python, and to a shell
PHRASES = {"table(max_rows=None) shows all": "--history FILE.csv writes all"}

# keyword=value; a keyword alone only where it cannot be an English word (it has a "_")
_SETTING = re.compile(r"(?<![\w.-])(?P<name>" + "|".join(sorted(FLAGS, key=len, reverse=True))
                      + r")(?:=(?P<value>'[^']*'|[^\s,;)]+))?(?![\w(])")
_TWICE = re.compile(r"(--[a-z-]+)(?:, \1| \(\1\))")  # "(resume=True, --resume)"


def _flag(match: re.Match) -> str:
    name, value = match["name"], match["value"]
    flag = FLAGS[name]
    if value is None:
        return flag if "_" in name else match[0]
    if value == "True":
        return flag
    if value == "False":
        return f"--no-{flag[2:]}" if name in NEGATABLE else f"without {flag}"
    return f"{flag} {value.strip(chr(39))}"


def as_flags(text: str) -> str:
    """``text``, a message of mcjax.train, with its keywords said as flags."""
    for phrase, said in PHRASES.items():
        text = text.replace(phrase, said)
    return _TWICE.sub(r"\1", _SETTING.sub(_flag, text))
