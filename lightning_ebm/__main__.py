"""``lightning-ebm`` and ``python -m lightning_ebm``: one program, six commands. Dispatch only.

``fit``, ``validate``, ``test`` and ``predict`` are :mod:`lightning_ebm.cli`, ``visualize`` is
:mod:`lightning_ebm.visualize` and ``submit`` is :mod:`lightning_ebm.slurm`; each is imported only when it runs, so
``--help`` answers without importing torch. Exit status: 0 on success, 2 on a refused input (one line, no
traceback; ``LIGHTNING_EBM_DEBUG=1`` shows it), 1 when training fails.
"""

import importlib.util
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

COMMANDS = {
    "fit": "train a method: lightning-ebm fit --config texture",
    "validate": "score a checkpoint on the held-out data: validate --ckpt_path RUN/checkpoints/last.ckpt",
    "test": "score a checkpoint on the test data",
    "predict": "draw samples from a checkpoint into PNG (or WAV) files",
    "visualize": "sample a node of a trained classifier or descriptor and write a PNG grid",
    "submit": "run a fit as a SLURM job that requeues itself at its time limit",
}
HOME = Path(__file__).resolve().parents[1]


def usage(prog: str) -> str:
    """The program's help: its commands, the shipped recipes and presets."""
    from lightning_ebm import __version__, recipes

    width = max(map(len, COMMANDS))
    commands = "\n".join(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items())
    return (
        f"usage: {prog} <command> [options]\n\n"
        f"Energy-based generative ConvNets as Lightning experiments (lightning_ebm {__version__}).\n\n"
        f"commands:\n{commands}\n\n"
        f"recipes (--config NAME): {', '.join(recipes.names('experiments'))}\n"
        f"presets (stack after a recipe): {', '.join(recipes.names('trainer'))}\n\n"
        f"'{prog} <command> --help' lists a command's options."
    )


def check_packages() -> None:
    """Refuse to run with another module named ``callbacks`` or ``datamodules`` in front of ours (a ``callbacks.py``
    in the working directory, say), which would otherwise break every command with an unexplained ImportError."""
    from lightning_ebm.errors import UsageError

    for name in ("callbacks", "datamodules"):
        expected = HOME / name / "__init__.py"
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
        if origin != expected:
            found = origin or (spec.submodule_search_locations if spec else "nowhere")
            raise UsageError(
                f"the module {name!r} found first is {found}, not lightning_ebm's package {expected.parent}: rename "
                "that file or folder, or run from another directory"
            )


def cli_main(args: Sequence[str] | None = None) -> int:
    """Run the command line; ``args`` replaces ``sys.argv[1:]`` (for notebooks and tests). Returns the exit status."""
    from lightning_ebm.argv import PROGRAM_ENV, precheck, program, without_untrained
    from lightning_ebm.errors import UsageError

    argv = list(sys.argv[1:] if args is None else args)
    prog = program()
    os.environ.setdefault(PROGRAM_ENV, prog)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(prog), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        from lightning_ebm import __version__

        print(f"lightning_ebm {__version__}")
        return 0
    command = argv[0]
    try:
        if command not in COMMANDS:
            raise UsageError(f"unknown command {command!r}; the commands are {', '.join(COMMANDS)}")
        check_packages()
        if command not in ("visualize", "submit"):  # submit prechecks its own arguments, after its short forms
            precheck(command, argv[1:])
        if command == "visualize":
            from lightning_ebm.visualize import main

            main(argv[1:], prog)
        elif command == "submit":
            from lightning_ebm.slurm import submit

            submit(argv[1:])
        else:
            from lightning_ebm.cli import run

            run([command, *without_untrained(argv[1:])])  # --ckpt_path none: an untrained model, asked for
    except UsageError as err:
        if os.environ.get("LIGHTNING_EBM_DEBUG"):
            raise
        print(f"{prog} {command}: error: {err}", file=sys.stderr)
        return 2
    except SystemExit as done:  # --help and --print_config
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except FloatingPointError as err:  # DivergenceError: says where and what to lower
        if os.environ.get("LIGHTNING_EBM_DEBUG"):
            raise
        print(f"{prog} {command}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as err:
        if os.environ.get("LIGHTNING_EBM_DEBUG") or not out_of_memory(err):
            raise
        print(f"{prog} {command}: {out_of_memory(err)}", file=sys.stderr)
        return 1
    return 0


def out_of_memory(err: BaseException) -> str:
    """One line for an allocation that failed (CPU or GPU) and what to lower, or ``""`` for another error."""
    text = str(err)
    cpu = "can't allocate memory" in text or isinstance(err, MemoryError)
    gpu = type(err).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text
    if not (cpu or gpu):
        return ""
    tried = re.search(r"(?:you tried to allocate (\d+) bytes|Tried to allocate ([\d.]+ \w+))", text)
    size = "" if tried is None else f" ({int(tried[1]) / 2**30:,.1f} GiB asked for)" if tried[1] else f" ({tried[2]})"
    where = "GPU memory" if gpu else "memory"
    return (
        f"out of {where}{size}: lower --data.batch_size, --model.n_chains or the image size (or use more devices); "
        "the run's last checkpoint, if it has one, is intact (--ckpt_path last resumes it)"
    )


def main() -> None:
    """The console script: exit with :func:`cli_main`'s status."""
    sys.exit(cli_main())


if __name__ == "__main__":
    main()
