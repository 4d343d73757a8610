"""What ``predict`` writes: the samples as PNG files (WAV files for sounds) and one tensor file per rank."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import soundfile
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from callbacks.audio_samples import data_sample_rate, sound_picture
from callbacks.images import captioned, enlarge, enlargement, make_grid, save_png, to_uint8


class SampleWriter(BasePredictionWriter):
    """Write ``predict``'s samples under ``<run dir>/<folder>/``.

    Each image ``(C, H, W)`` becomes ``sample_<index>.png`` and each sound ``(C, T)`` ``sample_<index>.wav`` (at the
    DataModule's ``sample_rate``); at the end every rank writes ``samples_rank<r>.pt`` (the float tensor
    ``(N, *sample_shape)`` in [-1, 1]) and ``grid_rank<r>.png``: the images enlarged by whole pixels to at least 256 px
    under a caption naming the method and the checkpoint's step (for sounds: each waveform above its spectrogram).
    The CLI always adds this callback.

    Args:
        folder: sub-folder of the run directory (``trainer.default_root_dir``).
    """

    def __init__(self, folder: str = "predictions") -> None:
        super().__init__(write_interval="batch_and_epoch")
        self.folder = folder

    def _dir(self, trainer: Trainer) -> Path:
        return Path(trainer.default_root_dir) / self.folder

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """One PNG per sample, named by its index in the predict dataset."""
        if batch_indices is None or len(batch_indices) != len(prediction):
            batch_indices = [f"{trainer.global_rank}_{batch_idx}_{i}" for i in range(len(prediction))]
        if prediction.dim() == 3:  # sounds (N, C, T)
            self._dir(trainer).mkdir(parents=True, exist_ok=True)
            rate = data_sample_rate(trainer)
            for index, sound in zip(batch_indices, prediction.detach().float().cpu()):
                soundfile.write(self._dir(trainer) / f"sample_{index}.wav", sound.T.numpy(), rate)
            return
        for index, image in zip(batch_indices, to_uint8(prediction)):
            save_png(image, self._dir(trainer) / f"sample_{index}.png")

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        """All of this rank's samples as one tensor file and one grid."""
        flat = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        if not flat:
            return
        samples = torch.cat([p.detach().cpu() for p in flat])
        rank = trainer.global_rank
        self._dir(trainer).mkdir(parents=True, exist_ok=True)
        torch.save(samples, self._dir(trainer) / f"samples_rank{rank}.pt")
        if samples.dim() == 3:  # sounds: one picture per sound, stacked
            grid = torch.cat([sound_picture(s.float().mean(0, keepdim=True)) for s in samples], dim=1)
        else:  # enlarged by whole pixels to >= 256 px, under a caption saying what it shows
            factor = enlargement([len(samples)], *samples.shape[-2:])
            step = getattr(pl_module, "checkpoint_step", None)
            what = f"the checkpoint of step {step}" if step is not None else "an untrained model"
            caption = f"{type(pl_module).__name__}, {what}: {len(samples)} samples (rank {rank})"
            grid = captioned(make_grid(enlarge(to_uint8(samples), factor)), [caption])
        save_png(grid, self._dir(trainer) / f"grid_rank{rank}.png")
