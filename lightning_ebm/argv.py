"""The raw command line, read before torch is imported: the program's name, a flag's value, and the refusals that
need no torch.

Importing Lightning takes seconds (10 s on a slow 2-core machine), so what can be refused from the arguments alone
is refused here, at once: an unknown recipe or a missing config file (:func:`lightning_ebm.recipes.resolve`), a
``--ckpt_path`` that is no file, ``validate``/``test``/``predict`` without one, a config file that is no YAML, and
``submit`` without a recipe. Standard library and PyYAML only.
"""

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from lightning_ebm import recipes
from lightning_ebm.errors import UsageError

PROGRAM_ENV = "LIGHTNING_EBM_PROG"
"""The program's name as the user typed it (``lightning-ebm`` or ``python -m lightning_ebm``), for messages; set by
the entry point so that every process of a run (DDP workers included) names it the same way."""

CKPT_KEYWORDS = ("last",)
"""``--ckpt_path`` values that are not files: ``last`` is the newest ``last.ckpt`` of the recipe's runs."""

UNTRAINED = ("none", "None", "null")
"""``--ckpt_path`` values that ask for no checkpoint: ``validate``, ``test`` and ``predict`` of an untrained model
(``None`` is what a sweep agent renders)."""

EVALUATE = ("validate", "test", "predict")
"""The commands that need a trained model."""


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
    if ckpt_path not in CKPT_KEYWORDS + UNTRAINED and not Path(ckpt_path).expanduser().is_file():
        raise UsageError(f"--ckpt_path {ckpt_path}: no such file (give a run's checkpoints/last.ckpt, or 'last')")


def has_config(args: Sequence[str]) -> bool:
    """Whether ``args`` give a ``--config`` (or ``-c``)."""
    return any(a in ("--config", "-c") or a.startswith("--config=") for a in args)


def config_files(args: Sequence[str]) -> list[str]:
    """The ``--config`` (``-c``) values of ``args`` (recipe names already resolved to files), in order."""
    found = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            found.append(args[i + 1])
        elif arg.startswith("--config="):
            found.append(arg.split("=", 1)[1])
    return found


def read_configs(args: Sequence[str]) -> list[object]:
    """The YAML content of each ``--config`` file of ``args`` that is a file (a YAML string given inline is left to
    the parser).

    Raises:
        UsageError: a file that is no valid YAML, naming the file, the line and the column; a file that holds no
            mapping (empty, or a list).
    """
    contents = []
    for given in config_files(args):
        path = Path(given).expanduser()
        if not path.is_file():
            continue
        try:
            contents.append(yaml.safe_load(path.read_text()))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
            where = f"{given}:{mark.line + 1}:{mark.column + 1}" if mark is not None else given
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise UsageError(f"--config {where}: not valid YAML ({problem}); fix the file at that line") from err
        if not isinstance(contents[-1], dict):
            held = "nothing" if contents[-1] is None else f"a {type(contents[-1]).__name__}"
            raise UsageError(
                f"--config {given}: holds {held}, not a mapping of sections (model:, data:, trainer:, ...); "
                "see a shipped recipe: lightning-ebm fit --config texture --print_config"
            )
    return contents


def asks_help(args: Sequence[str]) -> bool:
    """Whether ``args`` ask for help or the config only (``-h``, ``--help``, ``--print_config``)."""
    return any(a in ("-h", "--help") or a.startswith("--print_config") for a in args)


def precheck(command: str, args: Sequence[str]) -> None:
    """Refuse, without importing torch, the arguments of ``command`` (``fit`` ... ``submit``) that cannot run.

    Raises:
        UsageError: an unknown recipe or missing config file, a config file that is no YAML, a missing checkpoint,
            ``validate``/``test``/``predict`` without ``--ckpt_path``, ``submit`` without a recipe.
    """
    if command == "submit" and not has_config(args) and not any(a in ("-h", "--help") for a in args):
        raise UsageError("submit needs the recipe of the run: --config <recipe> (a name such as texture, or a file)")
    configs = read_configs(recipes.expand(args))
    ckpt_path = flag_value(args, "--ckpt_path")
    if ckpt_path is not None and command != "submit":
        check_ckpt_path(ckpt_path)
    in_config = any(isinstance(c, dict) and c.get("ckpt_path") not in (None, *UNTRAINED) for c in configs)
    if command in EVALUATE and ckpt_path is None and not in_config and not asks_help(args):
        raise UsageError(
            f"{command} needs a trained model: give --ckpt_path <run>/checkpoints/last.ckpt (or --ckpt_path last, "
            "or --ckpt_path none for an untrained model)"
        )


def without_untrained(args: Sequence[str]) -> list[str]:
    """``args`` without ``--ckpt_path none`` (the explicit request for an untrained model), which Lightning reads as
    a file name."""
    kept: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg == "--ckpt_path" and i + 1 < len(args) and args[i + 1] in UNTRAINED:
            skip = True
        elif not (arg.startswith("--ckpt_path=") and arg.split("=", 1)[1] in UNTRAINED):
            kept.append(arg)
    return kept
