"""Sound samples written during training: WAV files, the logger's audio, and a picture of each."""

from pathlib import Path

import numpy as np
import soundfile
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from callbacks.images import log_image, save_png
from callbacks.sample_grid import SampleGrid


def data_sample_rate(trainer: Trainer, default: int = 11025) -> int:
    """The sample rate in Hz of the run's sounds: the DataModule's ``sample_rate``, else ``default``."""
    hparams = getattr(getattr(trainer, "datamodule", None), "hparams", {})
    return int(hparams.get("sample_rate", default))


def sound_picture(clip: Tensor, width: int = 512, wave_height: int = 64, n_fft: int = 256) -> Tensor:
    """A uint8 ``(1, wave_height + n_fft/2, width)`` picture of a mono ``clip (1, T)`` in [-1, 1]: the waveform
    (the range of the samples under each column) above the log-magnitude spectrogram (low frequencies at the bottom)."""
    x = clip.detach().float().cpu().reshape(-1)
    columns = x[: x.numel() // width * width].reshape(width, -1) if x.numel() >= width else x[None].expand(width, -1)
    low, high = columns.amin(1), columns.amax(1)
    rows = torch.linspace(1, -1, wave_height)[:, None]
    wave = ((rows >= low[None] - 2 / wave_height) & (rows <= high[None] + 2 / wave_height)).float()
    spec = torch.stft(x, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft), return_complex=True).abs()
    spec = (spec[1:] + 1e-5).log10()
    spec = ((spec - spec.max() + 4) / 4).clamp(0, 1).flip(0)  # 80 dB of range, top = highest frequency
    spec = F.interpolate(spec[None, None], size=(n_fft // 2, width), mode="bilinear", align_corners=False)[0, 0]
    return (torch.cat([wave, spec]) * 255).round().to(torch.uint8)[None]


class AudioSamples(SampleGrid):
    """Every ``every_n_steps`` training steps and at the end of training, draw ``n_samples`` sounds and write them as
    ``<run dir>/audio/step_<N>_<i>.wav``, hand them to wandb as audio (through soundfile), and write a picture of
    their waveforms and spectrograms (``audio/step_<N>.png``, also logged as ``sounds``); runs on rank zero.

    Args:
        every_n_steps: training steps between samples.
        n_samples: sounds each time.
        sample_rate: their rate in Hz (``None``: the DataModule's ``sample_rate``, else 11,025).
        folder: sub-folder of the run directory.
    """

    def __init__(
        self, every_n_steps: int = 100, n_samples: int = 4, sample_rate: int | None = None, folder: str = "audio"
    ) -> None:
        super().__init__(every_n_steps=every_n_steps, n_samples=n_samples, folder=folder)
        self.sample_rate = sample_rate

    def _rate(self, trainer: Trainer) -> int:
        return self.sample_rate if self.sample_rate is not None else data_sample_rate(trainer)

    @rank_zero_only
    def write(self, trainer: Trainer, pl_module: LightningModule) -> Path:
        """Draw the sounds and write them for the current step; returns the picture's path."""
        step, rate = trainer.global_step, self._rate(trainer)
        sounds = pl_module.sample(self.n_samples).detach().float().cpu()
        if sounds.dim() != 3:
            raise ValueError(f"AudioSamples needs sounds of shape (n, channels, samples), got {tuple(sounds.shape)}")
        folder = Path(trainer.default_root_dir) / self.folder
        folder.mkdir(parents=True, exist_ok=True)
        for i, sound in enumerate(sounds):
            soundfile.write(folder / f"step_{step:07d}_{i}.wav", sound.T.numpy(), rate)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                clips = [wandb.Audio(np.ascontiguousarray(s.T.numpy()), sample_rate=rate) for s in sounds]
                logger.experiment.log({"audio": clips, "trainer/global_step": step})
        picture = torch.cat([sound_picture(s.mean(0, keepdim=True)) for s in sounds], dim=1)
        log_image(trainer, "sounds", picture, step)
        self._last_step = step
        return save_png(picture, folder / f"step_{step:07d}.png")
