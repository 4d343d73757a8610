"""Each private Lightning API that ``lightning_ebm.lightning_private`` wraps still behaves the way the framework needs.

A failure here after a Lightning upgrade names the private use that changed; the module's docstring says why it is
used and where.
"""

import inspect
import re
import sys

import lightning
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, OptimizerCallable
from torch.utils.data import DataLoader, TensorDataset

from lightning_ebm.lightning_private import (
    CLI_INSTANTIATOR,
    attached_trainer,
    batches_processed_this_epoch,
    cli_hparams,
    drop_wandb_anonymous,
    has_cli_instantiator,
    hpc_checkpoint_path,
    save_checkpoint_now,
    split_cli_hparams,
    step_without_counting,
    subcommand_parsers,
)


class Tiny(LightningModule):
    """One linear layer on 2-d inputs, automatic optimisation."""

    def __init__(self, width: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(width, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, self.hparams.width)), batch_size=2)  # 4 batches


class TinySub(Tiny):
    """A subclass, for a checkpoint that names its class."""


class TwoOptimisers(Tiny):
    """Manual optimisation stepping two optimisers per iteration, the second uncounted unless ``count_both``."""

    def __init__(self, count_both: bool = False) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.count_both = count_both
        self.other = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        first, second = self.optimizers()
        first.zero_grad()
        second.zero_grad()
        self.manual_backward(self.layer(batch[0]).pow(2).mean() + self.other(batch[0]).pow(2).mean())
        first.step()
        if self.count_both:
            second.step()
        else:
            with step_without_counting(second):
                second.step()

    def configure_optimizers(self):
        return torch.optim.SGD(self.layer.parameters(), lr=0.1), torch.optim.SGD(self.other.parameters(), lr=0.1)


def trainer(tmp_path, **kwargs) -> Trainer:
    args = {
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "default_root_dir": tmp_path,
        "accelerator": "cpu",
    }
    return Trainer(**{**args, **kwargs})


# --------------------------------------------------------------------- LightningOptimizer._on_before/after_step
@pytest.mark.parametrize("count_both", [False, True])
def test_step_without_counting_keeps_one_iteration_one_step(tmp_path, count_both):
    """3 iterations of two optimiser steps each: ``global_step`` 3 with the uncounted step (the hooks Lightning's
    manual loop installs are what counts), 6 without it (Lightning #17958 still there, the workaround still
    needed); the uncounted step still changes the weights."""
    model = TwoOptimisers(count_both=count_both)
    before = model.other.weight.detach().clone()
    trainer(tmp_path, max_epochs=1, limit_train_batches=3).fit(model)
    assert model.trainer.global_step == (6 if count_both else 3)
    assert not torch.equal(model.other.weight, before)


def test_step_without_counting_puts_the_hooks_back():
    from lightning.pytorch.core.optimizer import LightningOptimizer

    optimizer = LightningOptimizer(torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1))
    calls = []
    optimizer._on_before_step = lambda: calls.append("before")
    optimizer._on_after_step = lambda: calls.append("after")
    with step_without_counting(optimizer):
        optimizer._on_before_step()
        optimizer._on_after_step()
    assert calls == []
    optimizer._on_before_step()
    optimizer._on_after_step()
    assert calls == ["before", "after"]


# ------------------------------------------------------------------------------ ModelCheckpoint's four methods
def test_model_checkpoint_save_methods_keep_their_signatures():
    params = {
        "_should_skip_saving_checkpoint": ["self", "trainer"],
        "_monitor_candidates": ["self", "trainer"],
        "_save_topk_checkpoint": ["self", "trainer", "monitor_candidates"],
        "_save_last_checkpoint": ["self", "trainer", "monitor_candidates"],
    }
    for name, expected in params.items():
        assert list(inspect.signature(getattr(ModelCheckpoint, name)).parameters) == expected, name


def test_save_checkpoint_now_writes_last_and_top_k_once_per_step(tmp_path):
    """In a 2-step fit whose periodic saves never come, a save after step 1 writes ``last.ckpt`` and the top-k file
    at step 1; a second save at the same step writes nothing more."""
    dirpath = tmp_path / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=dirpath, every_n_train_steps=1000, save_last=True)
    seen = {}

    class SaveAfterFirst(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 0:
                save_checkpoint_now(checkpoint, trainer)
                seen["first"] = sorted(p.name for p in dirpath.iterdir())
                seen["step"] = torch.load(dirpath / "last.ckpt", weights_only=True)["global_step"]
                save_checkpoint_now(checkpoint, trainer)
                seen["again"] = sorted(p.name for p in dirpath.iterdir())

    trainer(tmp_path, max_steps=2, enable_checkpointing=True, callbacks=[checkpoint, SaveAfterFirst()]).fit(Tiny())
    assert seen["first"] == ["epoch=0-step=1.ckpt", "last.ckpt"]
    assert seen["step"] == 1
    assert seen["again"] == seen["first"]


# ------------------------------------------------------------------------- Trainer._checkpoint_connector
def test_hpc_checkpoint_path_numbers_past_the_highest(tmp_path):
    t = trainer(tmp_path)
    assert hpc_checkpoint_path(t) == str(tmp_path / "hpc_ckpt_1.ckpt")
    (tmp_path / "hpc_ckpt_1.ckpt").touch()
    assert hpc_checkpoint_path(t) == str(tmp_path / "hpc_ckpt_2.ckpt")


# ------------------------------------------------------------------- fit_loop.epoch_loop.batch_progress
class RecordProgress(Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int, int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append(("start", trainer.current_epoch, batch_idx, batches_processed_this_epoch(trainer)))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append(("end", trainer.current_epoch, batch_idx, batches_processed_this_epoch(trainer)))


def test_batches_processed_this_epoch_counts_the_running_epoch(tmp_path):
    """Before a batch: the batches before it in this epoch; after it (when checkpoints are saved): those and it."""
    record = RecordProgress()
    trainer(tmp_path, max_epochs=2, callbacks=[record]).fit(Tiny())
    expected = [(when, e, i, i + (when == "end")) for e in range(2) for i in range(4) for when in ("start", "end")]
    assert record.seen == expected


@pytest.mark.filterwarnings("ignore:.*your dataloader is not resumable", "ignore:Be aware that when using `ckpt_path`")
def test_batches_processed_this_epoch_continues_after_a_mid_epoch_resume(tmp_path):
    """A run resumed from a checkpoint saved after 2 of 4 batches counts on from 2, so the next checkpoint records
    the whole epoch's batches (what ``ResumableData`` skips on the next resume)."""
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    trainer(tmp_path, max_steps=2, enable_checkpointing=True, callbacks=[checkpoint]).fit(Tiny())
    record = RecordProgress()
    trainer(tmp_path, max_steps=3, callbacks=[record]).fit(Tiny(), ckpt_path=tmp_path / "epoch=0-step=2.ckpt")
    assert record.seen[0][-1] == 2 and record.seen[1][-1] == 3


# ---------------------------------------------------------------------------------- LightningModule._trainer
def test_attached_trainer_is_none_outside_fit_and_the_trainer_inside(tmp_path):
    model = Tiny()
    assert attached_trainer(model) is None
    with pytest.raises(RuntimeError, match="not attached"):
        model.trainer  # noqa: B018  (the property raises: why attached_trainer reads the private attribute)
    seen = []

    class Look(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(attached_trainer(pl_module) is trainer)

    trainer(tmp_path, max_steps=1, callbacks=[Look()]).fit(model)
    assert seen == [True]


# ------------------------------------------------------------------------ "_class_path" / "_instantiator"
def test_cli_hparams_are_the_ones_lightning_cli_saves(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog"])
    class_path = f"{TinySub.__module__}.{TinySub.__qualname__}"
    cli = LightningCLI(
        Tiny,
        subclass_mode_model=True,
        run=False,
        seed_everything_default=0,
        args=[f"--model={class_path}", "--model.width=3", "--trainer.logger=false"],
    )
    hparams = dict(cli.model.hparams)
    assert has_cli_instantiator(hparams)
    assert hparams == cli_hparams(class_path, {"width": 3})
    assert split_cli_hparams(hparams) == (class_path, {"width": 3})
    assert split_cli_hparams({"width": 3}) == (None, {"width": 3})


class WithOptimizer(Tiny):
    """A module taking an optimiser factory, the way ``EBMModule`` does."""

    def __init__(self, width: int = 2, optimizer: OptimizerCallable = torch.optim.SGD) -> None:
        super().__init__(width)
        self.optimizer = optimizer


def _save(model: LightningModule, hparams: dict, path):
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": hparams}
    torch.save({**checkpoint, "pytorch-lightning_version": lightning.__version__}, path)
    return path


def test_cli_hparams_load_through_lightning_cli_instantiator(tmp_path):
    """``load_from_checkpoint`` of :func:`cli_hparams` goes through the CLI's instantiator (which Lightning still
    trusts): a ``class_path``/``init_args`` spec comes back as the factory it describes. Lightning still reads
    ``_class_path``: one naming a class that is not the loader's is refused."""
    model = WithOptimizer(width=3)
    spec = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.5}}
    class_path = f"{WithOptimizer.__module__}.{WithOptimizer.__qualname__}"
    path = _save(model, cli_hparams(class_path, {"width": 3, "optimizer": spec}), tmp_path / "model.ckpt")
    loaded = WithOptimizer.load_from_checkpoint(path, map_location="cpu")
    optimizer = loaded.optimizer([torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.5
    torch.testing.assert_close(loaded.layer.weight, model.layer.weight)
    assert cli_hparams(class_path, {})["_instantiator"] == CLI_INSTANTIATOR

    elsewhere = _save(model, cli_hparams("torch.nn.Linear", {"width": 3}), tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match=re.escape("'torch.nn.Linear'")):
        WithOptimizer.load_from_checkpoint(elsewhere, map_location="cpu")


# ------------------------------------------------------------------------------- WandbLogger._wandb_init
def test_wandb_init_loses_only_the_anonymous_none(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(project="p", save_dir=str(tmp_path), offline=True)
    assert "anonymous" in logger._wandb_init and logger._wandb_init["anonymous"] is None  # what wandb warns about
    drop_wandb_anonymous(logger)
    assert "anonymous" not in logger._wandb_init and logger._wandb_init["project"] == "p"
    chosen = WandbLogger(project="p", save_dir=str(tmp_path), offline=True, anonymous=True)
    drop_wandb_anonymous(chosen)
    assert chosen._wandb_init["anonymous"] == "allow"  # a user's own choice stays


# ------------------------------------------------------- LightningCLI._subcommand_parsers / _parse_ckpt_path
class _Stop(Exception):
    pass


class RecordingCLI(LightningCLI):
    """Records what ``EBMCLI`` relies on, and stops before anything is instantiated."""

    calls: list[str]

    def parse_arguments(self, parser, args):
        self.calls = ["parse_arguments"]
        self.parsers = dict(subcommand_parsers(self))
        self.parsers["fit"].set_defaults({"trainer.max_steps": 7})  # what EBMCLI does with a checkpoint's values
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self):
        self.calls.append("_parse_ckpt_path")

    def before_instantiate_classes(self):
        raise _Stop(self)


def test_subcommand_parsers_and_the_parse_ckpt_path_hook(monkeypatch):
    """``_subcommand_parsers`` holds each subcommand's parser before ``parse_arguments`` runs, and its defaults
    count; ``__init__`` calls ``_parse_ckpt_path()`` (no arguments) after ``parse_arguments``, so EBMCLI's override
    replaces Lightning's."""
    monkeypatch.setattr(sys, "argv", ["prog"])
    with pytest.raises(_Stop) as stopped:
        RecordingCLI(Tiny, seed_everything_default=0, args=["fit", "--trainer.logger=false"])
    cli = stopped.value.args[0]
    assert set(cli.parsers) == {"fit", "validate", "test", "predict"}
    assert all(isinstance(p, LightningArgumentParser) for p in cli.parsers.values())
    assert cli.config.fit.trainer.max_steps == 7
    assert cli.calls == ["parse_arguments", "_parse_ckpt_path"]
    assert list(inspect.signature(LightningCLI._parse_ckpt_path).parameters) == ["self"]
    source = inspect.getsource(LightningCLI.__init__)
    assert "self._parse_ckpt_path()" in source
    assert source.index("self.parse_arguments(") < source.index("self._parse_ckpt_path()")
