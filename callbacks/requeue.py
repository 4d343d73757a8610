"""Save and requeue a SLURM job when it is told its time is up, at a step boundary that every process shares."""

import os
import re
import signal
import subprocess
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from callbacks.checkpoint import RunCheckpoint
from lightning_ebm.lightning_private import hpc_checkpoint_path


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` for an array task, else ``SLURM_JOB_ID``."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array is not None and os.environ.get("SLURM_ARRAY_TASK_ID") is not None:
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class SlurmRequeue(Callback):
    """SLURM auto-requeue that is safe under DDP: on ``signum`` (SIGUSR1, what ``#SBATCH --signal=SIGUSR1@90`` sends
    90 s before the time limit), every process finishes its step, all agree that the signal came, the checkpoint
    (every rank's chains included) is written as Lightning's ``hpc_ckpt_<n>.ckpt`` in the run directory, training
    stops, and rank zero calls ``scontrol requeue`` as the run's last act. The requeued job starts in the same run
    directory and Lightning restores the newest ``hpc_ckpt`` by itself.

    Lightning's own handler saves inside the signal handler, wherever each process was interrupted; the checkpoint
    gathers every rank's chains (a collective), which then meets whatever collective another rank is in (a gradient
    all-reduce) and hangs or fails. Here the handler only sets a flag, and the flag is all-reduced after each
    training step, so the checkpoint is written at one step by all processes. Active only inside a SLURM job
    (``SLURMEnvironment.detect()``); elsewhere it does nothing and costs nothing. It is always present in the CLI.

    Args:
        signum: the signal that asks for a checkpoint and a requeue.
        requeue: call ``scontrol requeue`` (``False``: only save and stop, for a job that resubmits itself).
    """

    def __init__(self, signum: int = signal.SIGUSR1, requeue: bool = True) -> None:
        self.signum, self.requeue = signal.Signals(signum), requeue
        self._active = False
        self._signalled = False
        self._pending = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self._signalled = True

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Inside a SLURM job, handle ``signum`` (before Lightning would install its own handler for it)."""
        self._active = stage == "fit" and SLURMEnvironment.detect()
        if self._active:
            self._signalled = False
            self._previous = signal.signal(self.signum, self._handler)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Give the signal its previous handler back; requeue if the signal came.

        The requeue is the last thing the run does: SLURM then stops the job's processes with SIGTERM, and by now
        Lightning has put back the default SIGTERM action, so they end at once. (Requeued earlier, the processes
        met SIGTERM inside Lightning's handler, which broadcasts to the other ranks; they hung until SLURM's kill
        timeout, and a job restarted meanwhile could fail.)
        """
        if not self._active:
            return
        signal.signal(self.signum, self._previous)
        self._active = False
        if self._pending and trainer.is_global_zero:
            self._requeue(trainer)
        self._pending = False

    def _requeue(self, trainer: Trainer) -> None:
        job = slurm_job_id()
        if not self.requeue or not job or not re.fullmatch(r"[0-9_]+", job):
            return
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if result.returncode != 0:
            rank_zero_warn(
                f"scontrol requeue {job} failed ({result.stderr.strip()}): resubmit {trainer.default_root_dir}/"
                "job.sbatch by hand; the job continues from its newest hpc_ckpt"
            )

    def _agreed(self, pl_module: LightningModule) -> bool:
        """Whether any process got the signal (a MAX all-reduce under DDP, at the same step on every process)."""
        flag = torch.tensor([float(self._signalled)], device=pl_module.device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Checkpoint and requeue when the signal came to any process."""
        if not self._active or not self._agreed(pl_module):
            return
        path = hpc_checkpoint_path(trainer)
        rank_zero_info(f"{self.signum.name} received: saving {path} at step {trainer.global_step} and requeueing")
        # last.ckpt first, so that the hpc checkpoint's record of it is current: the restarted run then keeps
        # writing last.ckpt instead of taking it for another run's file and starting a last-v1.ckpt beside it
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, RunCheckpoint):
                callback.save_now(trainer)
        trainer.save_checkpoint(path)
        trainer.should_stop = True
        self._pending = True  # requeued in teardown, once training has ended cleanly
