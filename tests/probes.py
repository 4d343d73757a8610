"""Callbacks that observe a run for the tests: what every rank holds at the end (DDP), the indices trained on, the
values a training step reads back from the device."""

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils._python_dispatch import TorchDispatchMode

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


class StartProbe(Callback):
    """Each (re)start writes ``start_<n>_rank<r>.pt``: the step it starts from, this rank's chains and its noise
    generator's state, as the run is about to take its first step."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        run, rank = Path(trainer.default_root_dir), trainer.global_rank
        n = len(list(run.glob(f"start_*_rank{rank}.pt")))
        chains = pl_module.chains.rank_state()  # None before step 1
        state = {"global_step": trainer.global_step, "chains": chains, "rng": pl_module.rng.get_state()}
        torch.save(state, run / f"start_{n}_rank{rank}.pt")


class RequeueProbe(StartProbe):
    """For the SLURM test: a :class:`StartProbe`; rank zero also keeps ``progress.txt`` at the current step, and every
    step sleeps ``seconds`` so that the test can signal the job mid-run."""

    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        import time

        if trainer.is_global_zero:
            (Path(trainer.default_root_dir) / "progress.txt").write_text(str(trainer.global_step))
        time.sleep(self.seconds)


class SyncProbe(Callback):
    """Count, per training step, the values read back from the device (``aten._local_scalar_dense``: ``.item()``,
    ``bool(tensor)``, ``.tolist()``) inside the method's step: ``self.reads[step]``. Under automatic optimisation
    that is Lightning's ``optimizer_step``, which holds ``training_step``, the backward pass, the
    ``on_before_optimizer_step`` hooks (gradient checks, scaling and caps) and the update; under manual optimisation,
    ``training_step``, which does all of it itself. The optimisers' step counters are left out: torch keeps them on
    the CPU (unless ``capturable``), so reading them waits for nothing."""

    def __init__(self) -> None:
        self.reads: dict[int, int] = {}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.name = "optimizer_step" if pl_module.automatic_optimization else "training_step"
        step, probe = getattr(pl_module, self.name), self

        def counted(*args, **kwargs):
            before = pl_module.global_step
            with _ScalarReads(trainer) as reads:
                out = step(*args, **kwargs)
            probe.reads[before] = reads.count
            return out

        setattr(pl_module, self.name, counted)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        delattr(pl_module, self.name)  # the class's own again


class _ScalarReads(TorchDispatchMode):
    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.trainer, self.count = trainer, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            counters = [s["step"] for opt in self.trainer.optimizers for s in opt.state.values() if "step" in s]
            self.count += not any(args[0] is c for c in counters)
        return func(*args, **(kwargs or {}))
