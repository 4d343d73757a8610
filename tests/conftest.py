"""Shared fixtures: tiny texture files, a tiny model, and a CLI runner that writes under tmp_path."""

import getpass
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_ebm.nets import TextureDescriptor

ROOT = Path(__file__).resolve().parents[1]
TEXTURE = str(ROOT / "conf" / "experiments" / "texture.yaml")
DEBUG = str(ROOT / "conf" / "trainer" / "debug.yaml")

# A descriptor small enough for a CPU test: two layers, 8 and 4 channels.
tiny_net = partial(TextureDescriptor, channels=(8, 4), kernel_sizes=(5, 3), strides=(2, 1))


def tiny_model(cls: type, **kwargs):
    """A method of class ``cls`` with the tiny net on 16x16 grayscale samples; ``kwargs`` override."""
    args = {
        "net": tiny_net,
        "sample_shape": (1, 16, 16),
        "n_chains": 3,
        "langevin_steps": 3,
        "langevin_step_size": 0.05,
        "langevin_sigma": 0.5,
        "optimizer": partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.999)),
    }
    return cls(**{**args, **kwargs})


TINY = [
    "--model.net=lightning_ebm.nets.TextureDescriptor",
    "--model.net.channels=[8, 4]",
    "--model.net.kernel_sizes=[5, 3]",
    "--model.net.strides=[2, 1]",
    "--data.image_size=24",
    "--data.crop_size=16",
    "--model.langevin_steps=3",
]


# torch.compile's cache (the compile tests) under the checkout's pytest cache, not the system temp folder;
# `make clean` removes it
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".pytest_cache" / "torchinductor"))
# ...except its C++ precompiled headers (150 MB), which inductor always puts in <temp>/torchinductor_<user>: removed
# at the end of the session when they were not there before (a plain fit makes that folder, empty)
INDUCTOR_TEMP = Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}"
INDUCTOR_HEADERS = INDUCTOR_TEMP / "precompiled_headers"
FOUND = {path: path.exists() for path in (INDUCTOR_TEMP, INDUCTOR_HEADERS)}


def pytest_sessionfinish(session, exitstatus):
    if not FOUND[INDUCTOR_HEADERS]:
        shutil.rmtree(INDUCTOR_HEADERS, ignore_errors=True)
    if not FOUND[INDUCTOR_TEMP]:
        shutil.rmtree(INDUCTOR_TEMP, ignore_errors=True)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No network, no credentials, nothing written outside tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("LIGHTNING_EBM_RUN_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)


def stripes(size: int = 24, period: int = 4, rgb: bool = False) -> np.ndarray:
    """A uint8 test texture of diagonal stripes."""
    yy, xx = np.mgrid[:size, :size]
    gray = (((xx + yy) // period) % 2 * 200 + 20).astype(np.uint8)
    return np.stack([gray, gray[::-1], gray.T], -1) if rgb else gray


@pytest.fixture
def texture_file(tmp_path) -> Path:
    """A 24x24 grayscale PNG."""
    path = tmp_path / "textures" / "stripes.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(stripes()).save(path)
    return path


def run_cli(*args: str, root: Path | None):
    """Run ``fit``/``validate``/``test``/``predict`` in-process with everything written under ``root``; returns the
    CLI object (its trainer, model and data). A refused input raises :class:`lightning_ebm.errors.UsageError`."""
    from lightning_ebm.cli import run

    return run([*args] if root is None else [*args, f"--trainer.default_root_dir={root}"])


def run_dirs(root: Path) -> list[Path]:
    """The run directories under ``root`` (those holding a config.yaml), oldest first."""
    return sorted((p.parent for p in Path(root).rglob("config.yaml")), key=os.path.getmtime)
