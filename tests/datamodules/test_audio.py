"""Sound files to fixed-length clips: mono mix-down, band-limited resampling, padding, and errors that name files."""

import math

import numpy as np
import pytest
import soundfile
import torch

from callbacks.audio_samples import sound_picture
from datamodules import AudioDataModule
from datamodules.audio import resample


def tone(freq: float, seconds: float, rate: int, stereo: bool = False) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([x, -x * 0 + x], 1) if stereo else x


def chirp(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.4 * np.sin(2 * np.pi * (200 + 400 * t) * t)


def test_resampling_keeps_the_band_and_removes_what_is_above_the_new_nyquist():
    rate = 22050
    for freq, kept in ((440.0, True), (3000.0, True), (8000.0, False)):  # 11,025 Hz keeps up to 5,512 Hz
        x = torch.from_numpy(tone(freq, 1.0, rate)).float()[None]
        y = resample(x, rate, 11025)
        assert y.shape == (1, 11025)
        reference = torch.from_numpy(tone(freq, 1.0, 11025)).float()
        inner = slice(500, -500)
        if kept:
            assert (y[0, inner] - reference[inner]).abs().max() < 2e-3
        else:
            assert y[0, inner].abs().max() < 0.01  # not folded back to 3,025 Hz
    up = resample(torch.from_numpy(tone(440.0, 1.0, 8000)).float()[None], 8000, 11025)
    assert (
        up.shape == (1, 11025)
        and (up[0, 500:-500] - torch.from_numpy(tone(440.0, 1.0, 11025)).float()[500:-500]).abs().max() < 2e-3
    )


def test_files_become_mono_clips_at_the_rate_with_short_pieces_reported(tmp_path):
    (tmp_path / "sub").mkdir()
    soundfile.write(tmp_path / "a.wav", tone(440, 0.25, 22050, stereo=True), 22050)  # 2,756 samples at 11,025 Hz
    soundfile.write(tmp_path / "sub" / "b.flac", chirp(0.1, 11025), 11025)  # 1,102 samples
    with pytest.warns(UserWarning, match=r"2 sound file.*gave 5 clips of 1000 samples.*padded 2"):
        data = AudioDataModule(str(tmp_path), clip_length=1000, batch_size=2)
    assert data.sample_shape == (1, 1000) and len(data.train_set) == 5
    clip = data.train_set[0]["audio"]
    assert clip.shape == (1, 1000) and clip.abs().max() <= 1
    assert data.train_set[4]["audio"][0, 102:].abs().max() == 0  # the padded tail of the chirp's second piece
    with pytest.warns(UserWarning, match=r"dropped 2"):
        assert len(AudioDataModule(str(tmp_path), clip_length=1000, short="drop").train_set) == 3
    batch = next(iter(data.train_dataloader()))
    assert batch["audio"].shape == (2, 1, 1000) and batch["index"].shape == (2,)


def test_bad_sound_input_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no folder of sound files"):
        AudioDataModule(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=r"no \.wav/\.flac/\.ogg files"):
        AudioDataModule(str(tmp_path))
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wave file")
    with pytest.raises(ValueError, match=r"cannot read the sound file .*broken\.wav"):
        AudioDataModule(str(tmp_path))
    (tmp_path / "broken.wav").unlink()
    soundfile.write(tmp_path / "empty.wav", np.zeros(0), 11025)
    with pytest.raises(ValueError, match=r"empty\.wav is empty"):
        AudioDataModule(str(tmp_path))


def test_sound_picture_shows_the_waveform_above_the_spectrogram():
    rate = 11025
    low = sound_picture(torch.from_numpy(tone(300, 1.0, rate)).float()[None])
    high = sound_picture(torch.from_numpy(tone(4000, 1.0, rate)).float()[None])
    assert low.dtype == torch.uint8 and low.shape == (1, 64 + 128, 512)
    spectrum = lambda p: p[0, 64:].float().mean(1)  # noqa: E731  rows, top = highest frequency
    assert spectrum(low).argmax() > spectrum(high).argmax()  # the low tone's energy sits lower in the picture
    assert math.isclose(float(low[0, :64].float().mean() / 255), 0.5, abs_tol=0.15)  # a ±0.5 sine fills half


def test_a_resumed_run_continues_the_order_of_clips(tmp_path):
    for i in range(3):
        soundfile.write(tmp_path / f"{i}.wav", tone(200 + 100 * i, 0.3, 11025), 11025)
    data = AudioDataModule(str(tmp_path), clip_length=500, short="drop", batch_size=3)  # 18 clips: 6 batches
    assert len(data.train_set) == 18
    data.load_state_dict({"shuffle_seed": 3, "batches_done": 0})
    straight = [b["index"].tolist() for b in data.train_dataloader()]
    data.load_state_dict({"shuffle_seed": 3, "batches_done": 2})
    resumed = [b["index"].tolist() for b in data.train_dataloader()]
    assert len(straight) == 6 and resumed == straight[2:]
    order = [i for batch in straight for i in batch]
    assert sorted(order) == list(range(18)) and order != list(range(18))
