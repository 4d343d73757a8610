"""Sample quality over two gloo processes equals the score of the pooled samples in one process."""

import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lightning_ebm.metrics import PooledFeatureScores, fid, kid, share, swd

N = 13  # real images and samples per round: an odd count gives the two processes shares of 7 and 6


class LinearFeatures(nn.Module):
    """A fixed random linear map of the pixels to ``num_features`` features, in float64."""

    def __init__(self, pixels: int, num_features: int = 8) -> None:
        super().__init__()
        self.num_features = num_features
        g = torch.Generator().manual_seed(123)
        self.register_buffer("weight", torch.randn(pixels, num_features, generator=g, dtype=torch.float64))

    def forward(self, x):
        return x.flatten(1).double() @ self.weight


def images(seed: int, shift: float = 0.0) -> torch.Tensor:
    """``N`` 1×8×8 images, a fixed function of ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(N, 1, 8, 8, generator=g) * 2 - 1 + shift).clamp(-1, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pooled_worker(rank: int, world_size: int, port: int, out: str) -> None:
    """Rank ``rank`` feeds its share of two rounds of samples; every rank saves the scores it got."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        scores = PooledFeatureScores(["fid", "kid"], LinearFeatures(64), None, (1, 8, 8), N, N, batch_size=2)
        scores.add_real(images(0))
        rounds = []
        for seed, shift in ((1, 0.3), (2, -0.2)):
            fake = images(seed, shift)
            rounds.append(scores.score(fake[rank::world_size]))  # this rank's share: rows rank, rank + 2, ...
        torch.save(rounds, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_fid_and_kid_of_two_processes_are_those_of_the_pooled_samples(tmp_path):
    mp.spawn(pooled_worker, args=(2, free_port(), str(tmp_path)), nprocs=2)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert got[0] == got[1]  # every process logs the same number
    features = LinearFeatures(64)
    for scores, (seed, shift) in zip(got[0], ((1, 0.3), (2, -0.2))):
        fake = images(seed, shift)  # S_0 ∪ S_1 in one process, against the whole real set
        assert scores["fid"] == pytest.approx(fid(fake, images(0), feature=features), rel=1e-9)
        assert scores["fid"] > 0.1  # not an empty comparison: the samples are shifted
        # subset_size = N takes every image in every subset, so KID is the MMD² of the whole sets
        assert scores["kid"] == pytest.approx(kid(fake, images(0), feature=features)[0], rel=1e-9)
    assert got[0][0]["fid"] != pytest.approx(got[0][1]["fid"])  # the second round forgot the first samples


def test_pooled_scores_say_what_is_missing():
    with pytest.raises(ValueError, match="at least 2 real images"):
        PooledFeatureScores(["fid"], LinearFeatures(64), None, (1, 8, 8), 1, 8)
    scores = PooledFeatureScores(["fid"], LinearFeatures(64), None, (1, 8, 8), N, N)
    with pytest.raises(ValueError, match="before add_real"):
        scores.score(images(1))
    scores.add_real(images(0))
    with pytest.raises(ValueError, match="13 of the 13 samples; got 12"):
        scores.score(images(1)[:12])
    assert share(13, 0, 2) == 7 and share(13, 1, 2) == 6


class RecordingConvNet:
    """Mixin: saves every ``sample`` of each rank and, at the end, the rank's logged metrics."""

    def sample(self, n, **kwargs):
        x = super().sample(n, **kwargs)
        torch.save(x.cpu(), f"{self.trainer.default_root_dir}/samples_rank{self.global_rank}.pt")
        return x

    def on_train_end(self):
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}
        torch.save(metrics, f"{self.trainer.default_root_dir}/metrics_rank{self.global_rank}.pt")


def __getattr__(name: str) -> type:
    """``Recording``, a GenerativeConvNet with :class:`RecordingConvNet`, made on first use (the spawned processes
    look it up by name), so that the plain torch.distributed test does not import Lightning."""
    if name != "Recording":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from lightning_ebm.methods import GenerativeConvNet

    cls = type("Recording", (RecordingConvNet, GenerativeConvNet), {"__module__": __name__, "__qualname__": name})
    globals()[name] = cls
    return cls


def test_callback_under_ddp_logs_the_scores_of_the_pooled_samples(tmp_path):
    """Two CPU processes (ddp_spawn, gloo), 7 samples in all: the logged FID, KID and SWD are those of the
    gathered samples against the held-out crops, computed in one process."""
    from lightning.pytorch import Trainer

    from callbacks import SampleQuality
    from datamodules import TextureDataModule
    from tests.conftest import tiny_model

    cls = sys.modules[__name__].Recording
    data = TextureDataModule("brick", image_size=40, crop_size=16, holdout=0.4, n_val=7)
    quality = SampleQuality(
        every_n_epochs=2, n_samples=7, metrics=["swd", "fid", "kid"], feature=LinearFeatures(256, 4)
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_steps=2,
        check_val_every_n_epoch=1,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[quality],
    )
    trainer.fit(tiny_model(cls, n_chains=4, langevin_steps=2), data)  # 7 samples over 2 processes: 4 and 3

    s0, s1 = (torch.load(tmp_path / f"samples_rank{r}.pt") for r in (0, 1))
    assert len(s0) == 4 and len(s1) == 3 and not torch.equal(s0[:3], s1)  # each rank drew its own share
    pooled, real = torch.cat([s0, s1]), data._eval_images()
    logged = [torch.load(tmp_path / f"metrics_rank{r}.pt") for r in (0, 1)]
    assert logged[0] == logged[1]
    features = LinearFeatures(256, 4)  # 4 features: full-rank covariances from 7 images
    assert logged[0]["val/fid"] == pytest.approx(fid(pooled, real, feature=features), rel=1e-6)
    assert logged[0]["val/kid"] == pytest.approx(kid(pooled, real, feature=features)[0], rel=1e-6)
    assert logged[0]["val/swd"] == pytest.approx(swd(pooled, real), rel=1e-6)
    assert logged[0]["val/swd_floor"] == pytest.approx(swd(data.reference_samples(7), real), rel=1e-6)
    assert trainer.callback_metrics["val/fid"] == pytest.approx(logged[0]["val/fid"])  # what ddp_spawn hands back
    fresh = tiny_model(cls, n_chains=4, langevin_steps=2)
    assert trainer.lightning_module.state_dict().keys() == fresh.state_dict().keys()  # no metric in checkpoints
