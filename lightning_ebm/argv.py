"""The raw command line, read before torch is imported: the program's name, a flag's value, and the refusals that
need no torch.

Importing Lightning takes seconds (10 s on a slow 2-core machine), so what can be refused from the arguments alone
is refused here, at once: an unknown recipe or a missing config file (:func:`lightning_ebm.recipes.resolve`), a
``--ckpt_path`` that is no file, and ``submit`` without a recipe. Standard library only.
"""

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lightning_ebm import recipes
from lightning_ebm.errors import UsageError

PROGRAM_ENV = "LIGHTNING_EBM_PROG"
"""The program's name as the user typed it (``lightning-ebm`` or ``python -m lightning_ebm``), for messages; set by
the entry point so that every process of a run (DDP workers included) names it the same way."""

CKPT_KEYWORDS = ("last",)
"""``--ckpt_path`` values that are not files: ``last`` is the newest ``last.ckpt`` of the recipe's runs."""


def program() -> str:
    """How the user called the program: ``lightning-ebm`` or ``python -m lightning_ebm``."""
    return os.environ.get(PROGRAM_ENV) or (
        "lightning-ebm" if Path(sys.argv[0]).name == "lightning-ebm" else "python -m lightning_ebm"
    )


def flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in command-line ``args`` (``--flag value`` or ``--flag=value``), if given (the last)."""
    found = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(flag + "="):
            found = arg.split("=", 1)[1]
    return found


def check_ckpt_path(ckpt_path: str) -> None:
    """Refuse a ``--ckpt_path`` that is neither a keyword nor a file.

    Raises:
        UsageError: naming the path and what to give instead.
    """
    if ckpt_path not in CKPT_KEYWORDS and not Path(ckpt_path).expanduser().is_file():
        raise UsageError(f"--ckpt_path {ckpt_path}: no such file (give a run's checkpoints/last.ckpt, or 'last')")


def has_config(args: Sequence[str]) -> bool:
    """Whether ``args`` give a ``--config`` (or ``-c``)."""
    return any(a in ("--config", "-c") or a.startswith("--config=") for a in args)


def precheck(command: str, args: Sequence[str]) -> None:
    """Refuse, without importing torch, the arguments of ``command`` (``fit`` ... ``submit``) that cannot run.

    Raises:
        UsageError: an unknown recipe or missing config file, a missing checkpoint, ``submit`` without a recipe.
    """
    if command == "submit" and not has_config(args) and not any(a in ("-h", "--help") for a in args):
        raise UsageError("submit needs the recipe of the run: --config <recipe> (a name such as texture, or a file)")
    recipes.expand(args)
    ckpt_path = flag_value(args, "--ckpt_path")
    if ckpt_path is not None and command != "submit":
        check_ckpt_path(ckpt_path)
