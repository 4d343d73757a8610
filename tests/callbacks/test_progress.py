"""StepProgressBar: one training bar per fit counting global steps toward max_steps, resumes included."""

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from callbacks import StepProgressBar


class Linear(LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = self.layer(x).pow(2).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class BarProbe(Callback):
    """Records the training bar object and its count at every epoch start."""

    def __init__(self):
        self.ids, self.counts = [], []

    def on_train_epoch_start(self, trainer, pl_module):
        bar = trainer.progress_bar_callback.train_progress_bar
        self.ids.append(id(bar))
        self.counts.append(bar.n)


def fit_with_bar(tmp_path, data, callbacks=(), ckpt_path=None, **trainer_args):
    """Fit ``Linear`` on ``data`` with a StepProgressBar (and ``callbacks``); no logger unless one is given."""
    progress = StepProgressBar()
    trainer = Trainer(
        default_root_dir=tmp_path,
        callbacks=[progress, *callbacks],
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        **{"logger": False, **trainer_args},
    )
    trainer.fit(Linear(), data, ckpt_path=ckpt_path)
    return trainer, progress


def fit(tmp_path, max_steps, batches_per_epoch, ckpt_path=None):
    probe = BarProbe()
    data = DataLoader(TensorDataset(torch.randn(2 * batches_per_epoch, 4)), batch_size=2)
    trainer, progress = fit_with_bar(tmp_path, data, [probe], ckpt_path, max_steps=max_steps)
    return trainer, progress, probe


def test_one_batch_per_epoch_is_one_bar_to_max_steps(tmp_path):
    trainer, progress, probe = fit(tmp_path, max_steps=5, batches_per_epoch=1)
    bar = progress.train_progress_bar
    assert trainer.global_step == 5
    assert (bar.total, bar.n, bar.initial) == (5, 5, 0)
    assert len(probe.ids) == 5 and set(probe.ids) == {id(bar)}  # never recreated
    assert probe.counts == [0, 1, 2, 3, 4]  # never reset
    text = str(bar)
    assert text.startswith("step:") and "5/5" in text and "train/loss=" in text and "epoch=" not in text


def test_several_batches_per_epoch_counts_steps_and_shows_the_epoch(tmp_path):
    _, progress, probe = fit(tmp_path, max_steps=7, batches_per_epoch=3)
    bar = progress.train_progress_bar
    assert (bar.total, bar.n) == (7, 7)
    assert set(probe.ids) == {id(bar)} and probe.counts == [0, 3, 6]
    assert "epoch=2" in str(bar)


def test_resumed_run_starts_at_the_restored_step(tmp_path):
    trainer, _, _ = fit(tmp_path, max_steps=3, batches_per_epoch=1)
    ckpt = tmp_path / "three.ckpt"
    trainer.save_checkpoint(ckpt)
    trainer, progress, probe = fit(tmp_path, max_steps=6, batches_per_epoch=1, ckpt_path=ckpt)
    bar = progress.train_progress_bar
    assert trainer.global_step == 6
    assert (bar.total, bar.initial, bar.n) == (6, 3, 6)
    assert probe.counts[0] == 3


def test_without_max_steps_the_total_is_the_estimated_steps(tmp_path):
    _, progress = fit_with_bar(tmp_path, DataLoader(TensorDataset(torch.randn(6, 4)), batch_size=2), max_epochs=2)
    assert (progress.train_progress_bar.total, progress.train_progress_bar.n) == (6, 6)


def test_the_loggers_version_is_not_in_the_postfix(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    data = DataLoader(TensorDataset(torch.randn(2, 4)), batch_size=2)
    _, progress = fit_with_bar(tmp_path, data, max_steps=2, logger=CSVLogger(tmp_path))
    text = str(progress.train_progress_bar)
    assert "2/2" in text and "train/loss=" in text and "v_num" not in text
