"""Sound clips for the 1-D generator of alternating back-propagation (Han et al., AAAI 2017: 60,000 samples at
11,025 Hz), read with soundfile (torchaudio is not a dependency: see docs/engineering.md)."""

import math
import warnings
from pathlib import Path
from typing import Literal

import soundfile
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from datamodules.base import nothing_held_out, split_indices
from datamodules.resumable import ResumableData

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def resample(x: Tensor, orig_rate: int, new_rate: int, *, zeros: int = 16, rolloff: float = 0.95) -> Tensor:
    """Band-limited resampling of ``x (C, T)`` from ``orig_rate`` to ``new_rate`` Hz: ``(C, ceil(T·new/orig))``.

    Windowed-sinc interpolation (Smith, "Digital Audio Resampling"): the rates are reduced by their gcd to
    ``orig → new``; output phase ``k`` of each block of ``new`` samples is a convolution with stride ``orig`` against
    a sinc low-pass at ``rolloff × min(orig, new) / 2`` cycles per input block, cut to ``zeros`` zero crossings by a
    Hann window. Content above the lower Nyquist frequency is removed, not folded back.
    """
    if orig_rate == new_rate:
        return x
    g = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // g, new_rate // g
    cutoff = rolloff * min(orig, new)
    width = math.ceil(zeros * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float64) / orig
    t = (taps[None] - torch.arange(new, dtype=torch.float64)[:, None] / new) * cutoff
    t = t.clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    kernels = torch.special.sinc(t) * window * cutoff / orig  # (new, taps)
    padded = torch.nn.functional.pad(x.double()[:, None], (width, width + orig))
    y = torch.nn.functional.conv1d(padded, kernels[:, None], stride=orig)  # (C, new, blocks)
    length = math.ceil(x.shape[-1] * new / orig)
    return y.transpose(1, 2).reshape(x.shape[0], -1)[:, :length].to(x.dtype)


def read_sound(path: Path, rate: int) -> Tensor:
    """A sound file as a mono ``(1, T)`` float tensor at ``rate`` Hz (channels averaged), in the file's [-1, 1]."""
    try:
        data, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise ValueError(f"cannot read the sound file {path}: {error}. Remove it or convert it to WAV/FLAC") from error
    if data.shape[0] == 0:
        raise ValueError(f"the sound file {path} is empty (0 samples): remove it")
    mono = torch.from_numpy(data).mean(1, keepdim=True).T.contiguous()
    return resample(mono, file_rate, rate)


class AudioClips(torch.utils.data.Dataset):
    """Fixed-length clips ``{"audio": (1, clip_length), "index": i}`` held in memory."""

    def __init__(self, clips: Tensor) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return self.clips.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"audio": self.clips[i], "index": i}


class AudioDataModule(ResumableData):
    """Sound files cut into fixed-length mono clips at one sample rate, scaled to [-1, 1].

    Each file (WAV, FLAC or OGG, found recursively under a folder, or listed) is mixed down to mono, resampled to
    ``sample_rate`` with a band-limited windowed-sinc resampler, and cut into consecutive ``clip_length`` clips; the
    last, shorter piece (or a file shorter than one clip) is zero-padded or dropped (``short``), and the numbers are
    reported. ABP's sound setting is 60,000 samples at 11,025 Hz, one clip per file, no further scaling.

    Args:
        root: a folder (searched recursively) or a list of sound files.
        sample_rate: the clips' sample rate in Hz.
        clip_length: samples per clip.
        short: ``"pad"`` (zeros at the end) or ``"drop"`` for pieces shorter than ``clip_length``.
        peak_normalize: scale each clip so that its largest magnitude is 1 (off: the files' own levels, as in ABP).
        val_fraction: share of the clips held out.
        batch_size: clips per step and process.
        num_workers: DataLoader worker processes.
        n_predict: samples that ``predict`` draws.
    """

    def __init__(
        self,
        root: str | list[str],
        *,
        sample_rate: int = 11025,
        clip_length: int = 60000,
        short: Literal["pad", "drop"] = "pad",
        peak_normalize: bool = False,
        val_fraction: float = 0.0,
        batch_size: int = 8,
        num_workers: int = 0,
        n_predict: int = 8,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name, value in (
            ("sample_rate", sample_rate),
            ("clip_length", clip_length),
            ("batch_size", batch_size),
            ("n_predict", n_predict),
        ):
            if value < 1:
                raise ValueError(f"AudioDataModule needs {name} >= 1, got {value}")
        if num_workers < 0:
            raise ValueError(f"AudioDataModule needs num_workers >= 0, got {num_workers}")
        files = self._files(root)
        clips, padded, dropped = [], 0, 0
        for path in files:
            sound = read_sound(path, sample_rate)
            for start in range(0, sound.shape[-1], clip_length):
                piece = sound[:, start : start + clip_length]
                if piece.shape[-1] < clip_length:
                    if short == "drop":
                        dropped += 1
                        continue
                    piece = torch.nn.functional.pad(piece, (0, clip_length - piece.shape[-1]))
                    padded += 1
                clips.append(piece)
        if padded or dropped:
            warnings.warn(
                f"{len(files)} sound file(s) gave {len(clips)} clips of {clip_length} samples at {sample_rate} Hz; "
                f"{'padded ' + str(padded) if short == 'pad' else 'dropped ' + str(dropped)} shorter piece(s)",
                stacklevel=2,
            )
        if not clips:
            raise ValueError(
                f"no clip of {clip_length} samples in {len(files)} file(s) under {root}: lower clip_length or use "
                "short='pad'"
            )
        clips = torch.stack(clips)
        if peak_normalize:
            clips = clips / clips.abs().amax(-1, keepdim=True).clamp_min(1e-8)
        clips = clips.clamp(-1, 1)
        train, held = split_indices(len(clips), val_fraction)
        self.train_set = AudioClips(clips[train])
        self.val_set = AudioClips(clips[held]) if held else None

    @staticmethod
    def _files(root: str | list[str]) -> list[Path]:
        if isinstance(root, (list, tuple)):
            files = [Path(p) for p in root]
            missing = [str(p) for p in files if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"sound file(s) not found: {', '.join(missing[:3])}")
            return files
        folder = Path(root)
        if not folder.is_dir():
            raise FileNotFoundError(f"no folder of sound files at {folder}: give a folder or a list of files")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no {'/'.join(AUDIO_SUFFIXES)} files under {folder}")
        return files

    @property
    def sample_shape(self) -> tuple[int, int]:
        """``(1, clip_length)``: one mono clip."""
        return (1, self.hparams.clip_length)

    def train_dataloader(self) -> DataLoader:
        """Shuffled clips, in an order fixed by the run seed and the epoch; a run resumed mid-epoch continues it."""
        hp = self.hparams
        return self.resumable_loader(self.train_set, batch_size=hp.batch_size, num_workers=hp.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        """The held-out clips; nothing while fitting without any (validation is skipped), a refusal otherwise."""
        if self.val_set is None:
            return nothing_held_out(self)
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)

    def test_dataloader(self) -> DataLoader | list:
        """As :meth:`val_dataloader`."""
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """Indices ``0 … n_predict − 1``; the model draws one sample per index."""
        return DataLoader(torch.arange(self.hparams.n_predict), batch_size=self.hparams.n_predict)
