"""Every callback writes or logs what it promises, in a real Trainer run."""

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image

from callbacks import EnergyMonitor, RunCheckpoint, SampleGrid
from callbacks.images import make_grid, to_uint8
from datamodules import TextureDataModule
from lightning_ebm.methods import GenerativeConvNet
from tests.conftest import tiny_model


def fit(tmp_path, callbacks, max_steps=3):
    model = tiny_model(GenerativeConvNet, n_chains=2, langevin_steps=2)
    trainer = Trainer(
        max_steps=max_steps,
        default_root_dir=tmp_path,
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        log_every_n_steps=1,
    )
    trainer.fit(model, TextureDataModule("brick", image_size=16))
    return trainer


def test_sample_grid_writes_pngs_every_n_steps_and_at_the_end(tmp_path):
    fit(tmp_path, [SampleGrid(every_n_steps=2, n_samples=2)], max_steps=3)  # one per chain
    written = sorted(p.name for p in (tmp_path / "samples").glob("*.png"))
    assert written == ["step_0000000.png", "step_0000002.png", "step_0000003.png"]
    grid = np.asarray(Image.open(tmp_path / "samples" / "step_0000003.png"))
    assert min(grid.shape) >= 256 and grid.dtype == np.uint8  # enlarged; tests/callbacks/test_pictures.py


def test_energy_monitor_logs_the_diagnostics(tmp_path):
    trainer = fit(tmp_path, [EnergyMonitor()])
    metrics = trainer.callback_metrics
    for key in ("train/f_data", "train/f_sample", "train/energy_gap", "train/grad_norm"):
        assert key in metrics and torch.isfinite(metrics[key])
    torch.testing.assert_close(metrics["train/energy_gap"], metrics["train/f_data"] - metrics["train/f_sample"])


def test_run_checkpoint_keeps_the_final_state(tmp_path):
    fit(tmp_path, [RunCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_last=True)], max_steps=3)
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 3


def test_callbacks_validate_their_arguments():
    with pytest.raises(ValueError, match="every_n_steps"):
        SampleGrid(every_n_steps=0)
    with pytest.raises(ValueError, match="every_n_steps"):
        EnergyMonitor(every_n_steps=0)


def test_grid_and_uint8_conversion():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 2, 2).expand(3, 1, 2, 2)
    u = to_uint8(x)
    assert u.dtype == torch.uint8 and u.flatten()[:4].tolist() == [0, 128, 255, 255]
    grid = make_grid(u, nrow=2, padding=1)
    assert grid.shape == (1, 2 * 3 + 1, 2 * 3 + 1)


def test_sample_quality_logs_swd_fid_kid_against_held_out_data(tmp_path):
    from functools import partial

    from torch import nn

    from callbacks import SampleQuality
    from datamodules import DigitsDataModule
    from lightning_ebm.nets import ObjectDescriptor

    features = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
    net = partial(ObjectDescriptor, channels=(8,), kernel_sizes=(3,), strides=(2,), n_out=4)
    model = GenerativeConvNet(net=net, sample_shape=(1, 8, 8), n_chains=32, langevin_steps=2)  # 32 samples
    quality = SampleQuality(n_samples=32, metrics=["swd", "fid", "kid"], feature=features)
    trainer = Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        logger=False,
        callbacks=[quality],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DigitsDataModule(batch_size=16))
    metrics = trainer.callback_metrics
    assert all(torch.isfinite(metrics[f"val/{k}"]) for k in ("swd", "fid", "kid"))
    assert quality._real.shape == (32, 1, 8, 8)
    with pytest.raises(ValueError, match="metrics among swd, fid, kid"):
        SampleQuality(metrics=["is"])
