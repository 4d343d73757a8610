"""Sample quality against held-out data, measured during validation."""

from collections.abc import Sequence
from typing import Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_ebm.metrics import fid, kid, swd

Metric = Literal["swd", "fid", "kid"]


class SampleQuality(Callback):
    """Score ``model.sample(n)`` against ``n`` held-out images at the end of validation, every ``every_n_epochs``.

    Logs ``val/swd`` (sliced Wasserstein distance ×10³ over Laplacian-pyramid patches, no network needed) and, when
    asked, ``val/fid`` and ``val/kid`` with the Inception network (``feature`` an int; needs torch-fidelity and its
    weights) or with any ``nn.Module`` feature extractor. The held-out images are the first ``n_samples`` of the
    DataModule's ``val_dataloader`` (read once); each DDP rank scores its own samples and the logged value is their
    mean.

    Args:
        every_n_epochs: score at the end of validation in every N-th training epoch.
        n_samples: samples drawn and held-out images compared.
        metrics: any of ``"swd"``, ``"fid"``, ``"kid"``.
        feature: FID/KID features: an Inception feature size (64, 192, 768, 2048) or an ``nn.Module``.
        weights_path: a local copy of the FID Inception weights.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        n_samples: int = 64,
        metrics: Sequence[Metric] = ("swd",),
        feature: int | nn.Module = 2048,
        weights_path: str | None = None,
    ) -> None:
        unknown = set(metrics) - {"swd", "fid", "kid"}
        if every_n_epochs < 1 or n_samples < 2 or unknown or not metrics:
            raise ValueError(
                f"SampleQuality needs every_n_epochs >= 1, n_samples >= 2 and metrics among swd, fid, kid; got "
                f"{every_n_epochs}, {n_samples}, {list(metrics)}"
            )
        self.every_n_epochs, self.n_samples, self.metrics = every_n_epochs, n_samples, tuple(metrics)
        self.feature, self.weights_path = feature, weights_path
        self._real: Tensor | None = None

    def _held_out(self, trainer: Trainer, pl_module: LightningModule) -> Tensor | None:
        if self._real is None:
            loaders = trainer.datamodule.val_dataloader() if trainer.datamodule is not None else []
            images, count = [], 0
            for batch in loaders or []:
                x = pl_module.images(batch)
                images.append(x.cpu())
                count += len(x)
                if count >= self.n_samples:
                    break
            if not images:
                rank_zero_warn(
                    "SampleQuality: the DataModule has no held-out images (val_dataloader); nothing is scored"
                )
                return None
            self._real = torch.cat(images)[: self.n_samples]
        return self._real

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Draw the samples and log the scores."""
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        real = self._held_out(trainer, pl_module)
        if real is None:
            return
        fake = pl_module.sample(len(real)).cpu()
        scores = {}
        if "swd" in self.metrics:
            scores["val/swd"] = swd(fake, real)
        if "fid" in self.metrics:
            scores["val/fid"] = fid(fake, real, feature=self.feature, weights_path=self.weights_path)
        if "kid" in self.metrics:
            scores["val/kid"] = kid(fake, real, feature=self.feature, weights_path=self.weights_path)[0]
        pl_module.log_dict({k: torch.tensor(v, device=pl_module.device) for k, v in scores.items()}, sync_dist=True)
