"""Checkpointing that never loses the final state."""

import warnings
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_ebm.lightning_private import save_checkpoint_now


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that also saves when training ends between two periodic saves.

    Lightning's ``ModelCheckpoint`` writes ``last.ckpt`` at train end only if no ``last.ckpt`` was written earlier in
    the run, so the steps after the last periodic save would be lost; this one saves them. The CLI always adds it
    (options under ``checkpoint.*``) and points it at ``<run dir>/checkpoints``.

    With manual optimisation (CoopNets) Lightning warns at every periodic save that the checkpoint holds the state
    after the optimiser steps; that is the state this framework saves on purpose (the iteration is complete and
    ``global_step`` counts it), so the warning is not shown.
    """

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Lightning's periodic save, without the manual-optimisation warning; and the final state at the last step
        of ``max_steps``, while the epoch it ends is still the current one. (Saved at train end instead, the state
        says the epoch is over: Lightning's loop counts an epoch that ``max_steps`` cuts short as completed, and a run
        resumed from it would read the rest of the next epoch's order, not of this one's.)"""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if 0 < trainer.max_steps <= trainer.global_step:
            self.save_now(trainer)

    def save_now(self, trainer: Trainer) -> None:
        """Save the current state (top-k and ``last.ckpt``) unless this step is saved already."""
        save_checkpoint_now(self, trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save the final state if it is newer than the last saved one."""
        self.save_now(trainer)
        super().on_train_end(trainer, pl_module)
