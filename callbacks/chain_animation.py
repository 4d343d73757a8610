"""A GIF of Langevin chains at the end of training: how the descriptor's samples form, step by step."""

from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from torch import Tensor

from callbacks.images import MIN_SIDE, captioned, enlarge, enlargement, log_image, make_grid, pad, to_uint8
from callbacks.sample_grid import run_title
from lightning_ebm.samplers.banks import ChainBank

SUPPORTED = (
    "GenerativeConvNet and ContrastiveDivergence (from their chains or chain_init) and CoopNets (from the generator's "
    "proposals)"
)

Source = Literal["auto", "training", "final"]


def keeps_chains(pl_module: LightningModule) -> bool:
    """Whether the method keeps persistent chains: GenerativeConvNet, ContrastiveDivergence with ``persistent=True``."""
    return isinstance(getattr(pl_module, "chains", None), ChainBank) and pl_module.hparams.get("persistent", True)


def persistent_chains(pl_module: LightningModule) -> Tensor | None:
    """The persistent chains ``(n_chains, *sample_shape)`` when the method keeps them and they exist, else ``None``."""
    return pl_module.chains.get() if keeps_chains(pl_module) and pl_module.chains.initialized else None


def animates(pl_module: LightningModule) -> bool:
    """Whether the method has a Langevin sampler and a chain start that :func:`chain_start` knows."""
    starts = hasattr(pl_module, "initial_chains") or (hasattr(pl_module, "latents") and hasattr(pl_module, "generate"))
    return hasattr(pl_module, "langevin") and starts


def chain_start(pl_module: LightningModule, n: int, rng: torch.Generator) -> Tensor:
    """``n`` chain starts ``(n, *sample_shape)``, where the method's own sampling starts: its distinct chains
    (``chain_starts``: persistent chains, or the observed images CD-k keeps) as far as there are, then
    ``initial_chains`` (``chain_init``); the generator's proposals for CoopNets."""
    if hasattr(pl_module, "initial_chains"):
        kept = pl_module.chain_starts() if hasattr(pl_module, "chain_starts") else None
        kept = kept[:n] if kept is not None else kept
        if kept is not None and len(kept) == n:
            return kept.clone()
        new = pl_module.initial_chains(n - (0 if kept is None else len(kept)), rng)
        return new if kept is None else torch.cat([kept, new])
    with torch.no_grad():
        return pl_module.generate(pl_module.latents(n, rng))


class ChainAnimation(Callback):
    """An animated GIF of Langevin chains, ``<run dir>/<folder>/chain.gif``, written once at the end of ``fit``:
    how the samples form, frame by frame, each captioned and enlarged like :class:`~callbacks.SampleGrid`'s pictures
    (whole factors, nearest neighbour). The attached logger (wandb, TensorBoard) gets the last frame as the image
    ``chain`` (wandb's videos need moviepy). Runs on rank zero.

    Two sources of frames:

    - ``"training"``: the persistent chains themselves, ``n_chains`` of them, after every ``max_steps / n_frames``
      training steps: the trajectory of the paper's synthesis, from the start to the final samples (Xie et al. 2016,
      Algorithm 1: the chains continue across parameter updates). Costs a copy of the chains per frame. A resumed
      run animates the steps since the resume, in ``chain_from_step_<N>.gif``.
    - ``"final"``: after training, ``n_steps`` Langevin steps of the final model from where its sampling starts
      (:func:`chain_start`). A model learned with persistent chains is tuned to their path: chains from
      ``chain_init`` under the final model need not become its samples, and this shows what they do.

    ``"auto"`` takes ``"training"`` for a method that keeps persistent chains (GenerativeConvNet, persistent
    ContrastiveDivergence) and ``"final"`` otherwise (CD-k, CoopNets). It supports the methods with a Langevin
    sampler and a chain start (see ``SUPPORTED``); any other makes ``fit`` stop at setup with a ValueError.

    Args:
        n_chains: chains in the animation.
        source: ``"auto"``, ``"training"`` or ``"final"`` (above).
        n_steps: ``"final"``: Langevin steps; ``None``: ``10 ×`` the method's sampling steps (``sample_steps``, else
            ``langevin_steps``).
        n_frames: frames after the first (fewer when there are fewer steps).
        frame_ms: how long each frame shows, in milliseconds.
        hold_ms: how long the last frame shows before the animation loops.
        folder: sub-folder of the run directory (``trainer.default_root_dir``).
        caption: the run's name in the captions (``None``: as :class:`~callbacks.SampleGrid`).
        min_side: the shorter side, in pixels, that the frames are enlarged to at least.
    """

    def __init__(
        self,
        n_chains: int = 2,
        source: Source = "auto",
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
        if source not in ("auto", "training", "final"):
            raise ValueError(f"ChainAnimation(source={source!r}): choose 'auto', 'training' or 'final'")
        self.n_chains, self.source, self.n_steps, self.n_frames = n_chains, source, n_steps, n_frames
        self.frame_ms, self.hold_ms = frame_ms, hold_ms
        self.folder, self.caption, self.min_side = folder, caption, min_side
        self._training = False
        self._every = 1
        self._first_step = 0
        self._states: list[tuple[int, Tensor]] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Refuse a method without Langevin chains to animate before training starts; choose the source."""
        if stage != "fit":
            return
        if not animates(pl_module):
            raise ValueError(
                f"ChainAnimation animates Langevin chains, and {type(pl_module).__name__} has no Langevin sampler "
                f"with a chain start; it supports {SUPPORTED}. Remove callbacks.ChainAnimation from "
                "trainer.callbacks for this method."
            )
        keeps = keeps_chains(pl_module)
        if self.source == "training" and not keeps:
            raise ValueError(
                f"ChainAnimation(source='training') animates persistent chains, and {type(pl_module).__name__} keeps "
                "none (CD-k restarts its chains at the data): use source='final' or 'auto'"
            )
        self._training = self.source == "training" or (self.source == "auto" and keeps)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Space the training frames over the steps this run will take."""
        self._first_step, self._states = trainer.global_step, []
        left = trainer.max_steps - trainer.global_step if trainer.max_steps > 0 else 10 * self.n_frames
        self._every = max(1, left // self.n_frames)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Keep a copy of the persistent chains every ``max_steps / n_frames`` steps (``"training"`` frames)."""
        step = trainer.global_step
        if not self._training or not trainer.is_global_zero:
            return
        if (step - self._first_step) % self._every == 0 or step == self._first_step + 1:
            chains = persistent_chains(pl_module)
            if chains is not None:
                self._states.append((step, to_uint8(chains[: self.n_chains])))

    def steps(self, pl_module: LightningModule) -> int:
        """The ``"final"`` chains' length: ``n_steps``, else 10 × the method's sampling steps."""
        if self.n_steps is not None:
            return self.n_steps
        hp = pl_module.hparams
        return 10 * max(1, hp.get("sample_steps") or hp.get("langevin_steps") or 1)

    def final_states(self, pl_module: LightningModule) -> tuple[list[tuple[int, Tensor]], int]:
        """Run the ``"final"`` chains: ``([(Langevin step, uint8 chains)], n_steps)``."""
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
        return states, n_steps

    def frames(self, trainer: Trainer, pl_module: LightningModule, title: str) -> list[Tensor]:
        """The captioned, enlarged uint8 frames, each ``(C, H, W)``, of one size."""
        if self._training:
            states = list(self._states)
            chains = persistent_chains(pl_module)
            if chains is not None and (not states or states[-1][0] != trainer.global_step):
                states.append((trainer.global_step, to_uint8(chains[: self.n_chains])))
            captions = [f"{title} - training step {i}: the persistent chains" for i, _ in states]
        else:
            states, n_steps = self.final_states(pl_module)
            captions = [f"{title} - final model, Langevin step {i} / {n_steps}" for i, _ in states]
        h, w = states[0][1].shape[-2:]
        factor = enlargement([len(states[0][1])], h, w, min_side=self.min_side)
        frames = [captioned(make_grid(enlarge(x, factor)), [c]) for (_, x), c in zip(states, captions)]
        height, width = max(f.shape[1] for f in frames), max(f.shape[2] for f in frames)
        return [pad(f, height, width) for f in frames]

    @rank_zero_only
    def write(self, trainer: Trainer, pl_module: LightningModule) -> Path | None:
        """Write the GIF and log its last frame; returns the GIF's path (``None``: no frame to write)."""
        if self._training and not self._states and persistent_chains(pl_module) is None:
            return None
        frames = self.frames(trainer, pl_module, self.caption or run_title(trainer, pl_module))
        images = [Image.fromarray(f[0].numpy() if f.shape[0] == 1 else f.permute(1, 2, 0).numpy()) for f in frames]
        name = "chain.gif" if not self._training or self._first_step == 0 else f"chain_from_step_{self._first_step}.gif"
        path = Path(trainer.default_root_dir) / self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        durations = [self.frame_ms] * (len(images) - 1) + [self.hold_ms]
        images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
        log_image(trainer, "chain", frames[-1], trainer.global_step, caption=f"last frame of {path.name}")
        return path

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the animation once, after the last training step."""
        self.write(trainer, pl_module)
