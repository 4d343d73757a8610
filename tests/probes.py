"""A callback for the DDP test: every rank writes what it holds at the end of training."""

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lightning_ebm.samplers import LatentBank


class RankProbe(Callback):
    """Write ``probe_rank<r>.pt`` (parameters, chains, the noise generator's state) into the run directory."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        torch.save(
            {
                "params": [p.detach().cpu() for p in pl_module.parameters()],
                "chains": pl_module.chains.get().cpu() if hasattr(pl_module, "chains") else None,
                "rng": pl_module.rng.get_state(),
                **_latents(pl_module),
                "world_size": trainer.world_size,
            },
            Path(trainer.default_root_dir) / f"probe_rank{trainer.global_rank}.pt",
        )


def _latents(pl_module: LightningModule) -> dict[str, torch.Tensor]:
    """ABP's latent bank and the values its entries started from (a fresh bank with the same seed)."""
    bank = getattr(pl_module, "latents", None)
    if not isinstance(bank, LatentBank):
        return {}
    fresh = type(bank)(bank.shape, bank.init, bank.seed)
    index = torch.arange(len(bank))
    return {"latents": bank.get(index).cpu(), "initial": fresh.get(index).cpu()}


class IndexProbe(Callback):
    """Write ``indices_rank<r>.pt``: the dataset indices this rank trained on."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        self.seen += batch["index"].tolist()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        torch.save(torch.tensor(self.seen), Path(trainer.default_root_dir) / f"indices_rank{trainer.global_rank}.pt")


class RequeueProbe(Callback):
    """For the SLURM test: each (re)start writes ``start_<n>_rank<r>.pt`` (the step it starts from and this rank's
    chains); rank zero keeps ``progress.txt`` at the current step; every step sleeps ``seconds`` so that the test can
    signal the job mid-run."""

    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        run, rank = Path(trainer.default_root_dir), trainer.global_rank
        n = len(list(run.glob(f"start_*_rank{rank}.pt")))
        state = {"global_step": trainer.global_step, "chains": pl_module.chains.rank_state()}  # None before step 1
        torch.save(state, run / f"start_{n}_rank{rank}.pt")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        import time

        if trainer.is_global_zero:
            (Path(trainer.default_root_dir) / "progress.txt").write_text(str(trainer.global_step))
        time.sleep(self.seconds)
