"""A GIF of Langevin chains at the end of training: how the descriptor's samples form, step by step."""

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from torch import Tensor

from callbacks.images import MIN_SIDE, captioned, enlarge, enlargement, log_image, make_grid, pad, to_uint8
from callbacks.sample_grid import run_title

SUPPORTED = (
    "GenerativeConvNet and ContrastiveDivergence (chains from initial_chains) and CoopNets (chains from the "
    "generator's proposals)"
)


def animates(pl_module: LightningModule) -> bool:
    """Whether the method has a Langevin sampler and a chain start that :func:`chain_start` knows."""
    starts = hasattr(pl_module, "initial_chains") or (hasattr(pl_module, "latents") and hasattr(pl_module, "generate"))
    return hasattr(pl_module, "langevin") and starts


def chain_start(pl_module: LightningModule, n: int, rng: torch.Generator) -> Tensor:
    """``n`` chain starts ``(n, *sample_shape)``: ``initial_chains`` (the descriptor methods) or the generator's
    proposals (CoopNets)."""
    if hasattr(pl_module, "initial_chains"):
        return pl_module.initial_chains(n, rng)
    with torch.no_grad():
        return pl_module.generate(pl_module.latents(n, rng))


class ChainAnimation(Callback):
    """At the end of training, run ``n_chains`` Langevin chains from the method's chain start for ``n_steps`` steps
    and write them as an animated GIF, ``<run dir>/<folder>/chain.gif``: one frame at the start and every
    ``n_steps / n_frames`` steps, each captioned ``<run> - Langevin step i / N`` and enlarged like
    :class:`~callbacks.SampleGrid`'s pictures (whole factors, nearest neighbour). The attached logger (wandb,
    TensorBoard) gets the last frame as the image ``chain`` (wandb's videos need moviepy). Runs on rank zero.

    It supports the methods with a Langevin sampler and a chain start: GenerativeConvNet and ContrastiveDivergence
    (from ``initial_chains``, as ``chain_init`` says) and CoopNets (from the generator's proposals). Any other
    method makes ``fit`` stop at setup with a ValueError.

    Args:
        n_chains: chains in the animation.
        n_steps: Langevin steps; ``None``: ``10 ×`` the method's sampling steps (``sample_steps``, else
            ``langevin_steps``).
        n_frames: frames after the first (fewer when ``n_steps`` is smaller).
        frame_ms: how long each frame shows, in milliseconds.
        hold_ms: how long the last frame shows before the animation loops.
        folder: sub-folder of the run directory (``trainer.default_root_dir``).
        caption: the run's name in the captions (``None``: as :class:`~callbacks.SampleGrid`).
        min_side: the shorter side, in pixels, that the frames are enlarged to at least.
    """

    def __init__(
        self,
        n_chains: int = 2,
        n_steps: int | None = None,
        n_frames: int = 30,
        frame_ms: int = 100,
        hold_ms: int = 1000,
        folder: str = "samples",
        caption: str | None = None,
        min_side: int = MIN_SIDE,
    ) -> None:
        if n_chains < 1 or n_frames < 1 or (n_steps is not None and n_steps < 1) or frame_ms < 1 or hold_ms < 1:
            raise ValueError(
                f"ChainAnimation needs n_chains, n_frames, n_steps (when given), frame_ms and hold_ms >= 1, got "
                f"{n_chains}, {n_frames}, {n_steps}, {frame_ms}, {hold_ms}"
            )
        self.n_chains, self.n_steps, self.n_frames = n_chains, n_steps, n_frames
        self.frame_ms, self.hold_ms = frame_ms, hold_ms
        self.folder, self.caption, self.min_side = folder, caption, min_side

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Refuse a method without Langevin chains to animate before training starts."""
        if stage == "fit" and not animates(pl_module):
            raise ValueError(
                f"ChainAnimation animates Langevin chains, and {type(pl_module).__name__} has no Langevin sampler "
                f"with a chain start; it supports {SUPPORTED}. Remove callbacks.ChainAnimation from "
                "trainer.callbacks for this method."
            )

    def steps(self, pl_module: LightningModule) -> int:
        """The chains' length: ``n_steps``, else 10 × the method's sampling steps."""
        if self.n_steps is not None:
            return self.n_steps
        hp = pl_module.hparams
        return 10 * max(1, hp.get("sample_steps") or hp.get("langevin_steps") or 1)

    def frames(self, pl_module: LightningModule, title: str) -> list[Tensor]:
        """Run the chains and return the captioned, enlarged uint8 frames, each ``(C, H, W)``, of one size."""
        n_steps = self.steps(pl_module)
        every = max(1, n_steps // self.n_frames)
        rng = pl_module.seeded_rng(2_000)
        x0 = chain_start(pl_module, self.n_chains, rng)
        states = [(0, to_uint8(x0))]

        def record(state: dict[str, Any]) -> None:
            i = state["step"] + 1
            if i % every == 0 or i == n_steps:
                states.append((i, to_uint8(state["x"])))

        pl_module.langevin(x0, n_steps=n_steps, rng=rng, callback=record)
        factor = enlargement([self.n_chains], *x0.shape[-2:], min_side=self.min_side)
        frames = [
            captioned(make_grid(enlarge(x, factor)), [f"{title} - Langevin step {i} / {n_steps}"]) for i, x in states
        ]
        height, width = max(f.shape[1] for f in frames), max(f.shape[2] for f in frames)
        return [pad(f, height, width) for f in frames]

    @rank_zero_only
    def write(self, trainer: Trainer, pl_module: LightningModule) -> Path:
        """Run the chains, write the GIF and log its last frame; returns the GIF's path."""
        frames = self.frames(pl_module, self.caption or run_title(trainer, pl_module))
        images = [Image.fromarray(f[0].numpy() if f.shape[0] == 1 else f.permute(1, 2, 0).numpy()) for f in frames]
        path = Path(trainer.default_root_dir) / self.folder / "chain.gif"
        path.parent.mkdir(parents=True, exist_ok=True)
        durations = [self.frame_ms] * (len(images) - 1) + [self.hold_ms]
        images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
        log_image(trainer, "chain", frames[-1], trainer.global_step, caption=f"last frame of {path.name}")
        return path

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the animation once, after the last training step."""
        self.write(trainer, pl_module)
