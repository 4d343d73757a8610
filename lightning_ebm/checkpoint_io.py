"""Checkpoint files that a kill at any moment cannot lose, and ``--ckpt_path last`` read as the newest intact one.

Lightning's own atomic save writes to the system temp folder and commits with ``shutil.move``. When ``TMPDIR`` is on
another filesystem than the run (node-local tmpfs, the run on shared storage: the usual cluster layout), that move is a
copy over the old file, and a kill during the copy leaves an empty ``last.ckpt`` and no previous one. Here every
checkpoint is written to a temporary file beside its destination, flushed to the disk and committed with
``os.replace``, which is atomic within one filesystem: the destination holds the old file or the new one, never part
of either.
"""

import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_ebm.errors import UsageError

TEMP_MARK = ".partial-"
"""Temporary checkpoint files are named ``.<name>.partial-<pid>`` in the checkpoint's own folder."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without directory handles: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(checkpoint: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to ``path`` through a flushed temporary file in the same folder and ``os.replace``.

    Raises:
        OSError: naming the file, when it cannot be written (a full disk, no permission); the old file is intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}{TEMP_MARK}{os.getpid()}"
    try:
        with open(temp, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except OSError as err:
        temp.unlink(missing_ok=True)
        raise OSError(
            err.errno,
            f"could not write the checkpoint {path} ({err.strerror or err}); the previous checkpoint is intact. "
            "Free space or fix the folder's permissions, then resume with --ckpt_path last",
        ) from err
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_partial_saves(folder: str | Path) -> list[Path]:
    """Remove the temporary files that interrupted saves left in ``folder``; returns them."""
    removed = []
    for temp in Path(folder).glob(f".*.ckpt{TEMP_MARK}*"):
        temp.unlink(missing_ok=True)
        removed.append(temp)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` whose local saves go through :func:`atomic_save` (remote URLs: Lightning's
    own transaction). The command line gives it to every trainer that has no checkpoint plugin of its own."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically (see :func:`atomic_save`)."""
        if "://" in str(path) and not str(path).startswith("file://"):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options, got {storage_options}")
        atomic_save(checkpoint, str(path).removeprefix("file://"))


def readable(path: Path) -> bool:
    """Whether ``path`` loads as a checkpoint (``torch.load`` with ``weights_only``, memory-mapped)."""
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return True


def newest_intact(folder: str | Path) -> Path | None:
    """The newest checkpoint of a run's ``checkpoints`` folder that loads, by modification time (``last.ckpt`` and the
    periodic ``epoch=…-step=….ckpt`` alike), warning about every newer one that does not; ``None`` if none loads."""
    found = sorted(Path(folder).glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in found:
        if readable(path):
            return path
        warnings.warn(
            f"--ckpt_path last: {path} cannot be read (truncated or corrupt); trying an older checkpoint",
            stacklevel=2,
        )
    return None


def read_checkpoint(path: str | Path, flag: str = "--ckpt_path") -> dict[str, Any]:
    """The Lightning checkpoint at ``path``, loaded on the CPU with ``weights_only``.

    Raises:
        UsageError: one line naming ``flag`` and the file, when it is no whole torch file (truncated by an interrupted
            copy, or another kind of file) or a torch file that is not a Lightning checkpoint.
    """
    if not zipfile.is_zipfile(path):
        raise UsageError(
            f"{flag} {path}: not a whole checkpoint (torch writes a zip archive; this file is truncated, by an "
            "interrupted copy or save, or another kind of file): give another checkpoint, such as --ckpt_path last"
        )
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"{flag} {path}: not a readable checkpoint ({first})") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UsageError(
            f"{flag} {path}: a torch file but not a Lightning checkpoint (it holds no 'state_dict'): give a run's "
            "checkpoints/*.ckpt, or load these weights in Python"
        )
    return checkpoint
