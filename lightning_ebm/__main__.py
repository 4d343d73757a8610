"""``python -m lightning_ebm {fit,validate,test,predict} --config ...``, ``visualize --ckpt_path ... --node ...`` and
``submit --config ... --nodes N --gpus-per-node G``: the whole entry point."""

import os
import sys
import warnings
from typing import Any

from lightning_ebm.cli import EBMCLI, RUN_DIR_ENV, submit_main, visualize_main

# Lightning warnings that say nothing about a run of this CLI: a deprecation inside Lightning itself, and two that
# one-batch epochs (a single texture) trigger although logging and data loading are right.
for _message in (
    r".*isinstance\(treespec, LeafSpec\)",
    r"Your `IterableDataset` has `__len__` defined",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
):
    warnings.filterwarnings("ignore", message=_message)


def cli_main(args: Any = None) -> Any:
    """Run the command line; ``args`` (a list of strings or a dict) replaces ``sys.argv`` for tests and notebooks.

    Returns the :class:`EBMCLI` of a Lightning subcommand; ``visualize`` (the written grid's path) and ``submit`` (the
    SLURM job id) build no trainer, so they are parsed on their own.
    """
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, (list, tuple)) and argv and argv[0] in ("visualize", "submit"):
        return (visualize_main if argv[0] == "visualize" else submit_main)(list(argv[1:]))
    inherited = RUN_DIR_ENV in os.environ  # set by the launching process of a DDP run
    failed = True
    try:
        cli = EBMCLI(args=args)
        failed = False
        return cli
    finally:
        if not inherited:
            os.environ.pop(RUN_DIR_ENV, None)
        _finish_wandb(failed)


def _finish_wandb(failed: bool) -> None:
    """Close the wandb run this process opened: Lightning leaves it open, and a failed run would otherwise
    swallow the next run started in the same process (a notebook, a sweep agent running in-process)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


if __name__ == "__main__":
    cli_main()
