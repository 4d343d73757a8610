"""Sample quality against held-out data, measured during validation and pooled over DDP processes."""

from collections.abc import Sequence
from typing import Literal

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from lightning_ebm.metrics import PooledFeatureScores, share, swd

Metric = Literal["swd", "fid", "kid"]


class SampleQuality(Callback):
    """Score ``n_samples`` samples of the model against held-out images at the end of validation, every
    ``every_n_epochs``.

    Logs ``val/swd`` (sliced Wasserstein distance ×10³ over Laplacian-pyramid patches, no network needed) with
    ``val/swd_floor`` beside it, and, when asked, ``val/fid`` and ``val/kid`` (its mean over subsets) with the
    Inception network (``feature`` an int; needs torch-fidelity and its weights) or with any ``nn.Module`` feature
    extractor. The held-out images are the first ``n_samples`` images of the DataModule's ``val_dataloader``, read
    once in ``setup``.

    **DDP.** The ``n_samples`` samples are drawn by all processes together (process ``r`` draws ``share(n_samples,
    r, world_size)`` of them) and every score is that of the pooled samples, the same number on every process and
    the one a single process would log for the same samples: SWD over the gathered samples, FID and KID through
    torchmetrics objects that gather their feature statistics
    (:class:`lightning_ebm.metrics.PooledFeatureScores`; each process feeds a distinct shard of the held-out
    images, so each counts once). The metric objects live on the callback, on the module's device, and are not
    part of the model's ``state_dict``.

    **The floor.** ``val/swd_floor`` is the SWD of ``n_samples`` training samples (the DataModule's
    ``reference_samples(n)``; for ``TextureDataModule``, other crops of the observed image, away from any held-out
    rows) against the same held-out images: what a perfect sampler would score, the noise of the estimate with this
    many images. It is computed once and logged with every ``val/swd``; a DataModule without ``reference_samples``
    gets no floor, which is said once. A healthy model's ``val/swd`` falls toward the floor and stays above it; only
    the ratio means something, since both depend on the number of images and patches. On brick against the 64×64
    centre crop with 1024 patches per image, the floor is 114 with 2 samples (texture.yaml) and 77 with 8
    (coopnets_texture.yaml), where other textures score about 200; bench/texture_quality.py puts the trained
    texture.yaml and coopnets_texture.yaml models at 1.15–1.2× its floor. With held-out rows
    (``TextureDataModule(holdout=...)``) the floor also holds how the held-out part of the image differs from the
    rest: on brick, 108 to 129 with 8 crops, where 8 crops of one part score 51 to 70 against 8 others.

    Args:
        every_n_epochs: score at the end of validation in every N-th training epoch.
        n_samples: samples drawn per score, all DDP processes together, and held-out images compared (fewer when
            the held-out set is smaller); FID and KID need 2 or more. A model learned with persistent chains
            has ``n_chains`` samples per process: keep ``n_samples <= n_chains × processes`` there (more is refused
            unless the model's ``fresh_steps`` starts new chains).
        metrics: any of ``"swd"``, ``"fid"``, ``"kid"``.
        feature: FID/KID features: an Inception feature size (64, 192, 768, 2048) or an ``nn.Module``.
        weights_path: a local copy of the FID Inception weights.
        patches_per_image: SWD patches per image and pyramid level. Karras et al. take 128 from each of 16384
            images; a few texture crops need about 1024 (8 crops against one held-out crop of brick: a floor of
            142 with 128, 77 with 1024).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        n_samples: int = 64,
        metrics: Sequence[Metric] = ("swd",),
        feature: int | nn.Module = 2048,
        weights_path: str | None = None,
        patches_per_image: int = 128,
    ) -> None:
        unknown = set(metrics) - {"swd", "fid", "kid"}
        if every_n_epochs < 1 or n_samples < 1 or patches_per_image < 1 or unknown or not metrics:
            raise ValueError(
                f"SampleQuality needs every_n_epochs >= 1, n_samples >= 1, patches_per_image >= 1 and metrics among "
                f"swd, fid, kid; got {every_n_epochs}, {n_samples}, {patches_per_image}, {list(metrics)}"
            )
        self.every_n_epochs, self.n_samples, self.metrics = every_n_epochs, n_samples, tuple(metrics)
        self.feature, self.weights_path, self.patches_per_image = feature, weights_path, patches_per_image
        self._set_up = False
        self._real: Tensor | None = None
        self._floor: float | None = None
        self._floor_pending = False
        self._scores: PooledFeatureScores | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Read the held-out images and build the FID/KID objects, once (the floor waits for the first score)."""
        if stage == "predict" or self._set_up:
            return
        self._set_up = True
        if self.n_samples < trainer.world_size:
            raise ValueError(
                f"SampleQuality(n_samples={self.n_samples}) draws its samples over all {trainer.world_size} "
                f"processes, at least one each: raise n_samples to {trainer.world_size} or more"
            )
        self._real = self._held_out(trainer.datamodule, pl_module)
        if self._real is None:
            return
        # the floor is computed when the first validation logs it, so that it does not delay the first training step
        self._floor_pending = "swd" in self.metrics
        kinds = [m for m in self.metrics if m != "swd"]
        if kinds:
            shape, n_real = self._real.shape[1:], len(self._real)
            self._scores = PooledFeatureScores(kinds, self.feature, self.weights_path, shape, n_real, self.n_samples)

    def _held_out(self, datamodule: LightningDataModule | None, pl_module: LightningModule) -> Tensor | None:
        """The first ``n_samples`` held-out images ``(n, C, H, W)``, on the CPU, or ``None`` (said once)."""
        loaders = datamodule.val_dataloader() if datamodule is not None else []
        images, count = [], 0
        for batch in loaders or []:
            x = pl_module.images(batch)
            images.append(x.cpu())
            count += len(x)
            if count >= self.n_samples:
                break
        if not images:
            rank_zero_warn("SampleQuality: the DataModule has no held-out images (val_dataloader); nothing is scored")
            return None
        return torch.cat(images)[: self.n_samples]

    def _swd_floor(self, datamodule: LightningDataModule) -> float | None:
        """SWD of ``n_samples`` training samples against the held-out images, or ``None`` (said once)."""
        reference = getattr(datamodule, "reference_samples", None)
        if reference is None:
            rank_zero_info(
                f"SampleQuality: {type(datamodule).__name__} has no reference_samples(n) (training samples), so "
                "val/swd_floor, the SWD a perfect sampler would score, is not logged"
            )
            return None
        return swd(reference(self.n_samples), self._real, patches_per_image=self.patches_per_image)

    def _pooled(self, pl_module: LightningModule, mine: Tensor, world_size: int) -> Tensor:
        """The samples of all processes ``(n_samples, C, H, W)``, in rank order, from this process's share."""
        if world_size == 1:
            return mine
        most = share(self.n_samples, 0, world_size)  # all_gather needs one shape: pad every share to the largest
        padded = torch.cat([mine, mine.new_zeros(most - len(mine), *mine.shape[1:])])
        gathered = pl_module.all_gather(padded)  # (world_size, most, C, H, W)
        return torch.cat([gathered[r, : share(self.n_samples, r, world_size)] for r in range(world_size)])

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Draw this process's share of the samples and log the scores of all processes' samples."""
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs or self._real is None:
            return
        world_size = trainer.world_size
        mine = pl_module.sample(share(self.n_samples, trainer.global_rank, world_size))
        scores = {}
        if "swd" in self.metrics:
            pooled = self._pooled(pl_module, mine, world_size)
            scores["val/swd"] = swd(pooled, self._real, patches_per_image=self.patches_per_image)
            if self._floor_pending:
                self._floor_pending = False
                self._floor = self._swd_floor(trainer.datamodule)
            if self._floor is not None:
                scores["val/swd_floor"] = self._floor
        if self._scores is not None:
            self._scores.to(pl_module.device)
            if not self._scores.has_real:
                self._scores.add_real(self._real)
            scores |= {f"val/{k}": v for k, v in self._scores.score(mine).items()}
        # every process holds the same values: the max over processes changes nothing, and logging with sync_dist
        # keeps Lightning from warning about epoch-level values that are not synchronised
        values = {k: torch.tensor(v, device=pl_module.device) for k, v in scores.items()}
        pl_module.log_dict(values, sync_dist=True, reduce_fx="max")
