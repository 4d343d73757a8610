"""One run directory for every process of a run, whoever started the processes."""

import os
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from callbacks.sample_grid import RUN_DIR_ENV


class SharedRunDirectory(Callback):
    """Every process writes under global rank zero's run directory.

    The command line names a run directory before the processes of a run have met. Processes that Lightning starts
    inherit the directory of the process that started them, and ``srun``'s and ``torchrun --rdzv-id``'s share a job
    id that names it (``<root>/<recipe>/job-<id>``). Processes that an outside launcher started with no shared id
    (``torchrun`` with its static rendezvous, a script on each node setting ``NODE_RANK`` and ``LOCAL_RANK``) have
    nothing in common until the process group is up. The command line makes a directory on global rank zero only and
    leaves the others' at the root; here, once the processes have met, rank zero's directory is sent to every other
    process, which writes there from then on (the checkpoint callback broadcasts its folder the same way). The command
    line puts this callback first, so that the other callbacks' ``setup`` already sees the shared directory.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Take rank zero's ``trainer.default_root_dir`` (a collective: every process calls it)."""
        if trainer.world_size == 1:
            return
        shared = trainer.strategy.broadcast(trainer.default_root_dir, src=0)
        if shared != trainer.default_root_dir:
            trainer._default_root_dir = shared
            os.environ[RUN_DIR_ENV] = str(Path(shared))
