"""One whole training iteration of every method: the framework against a plain PyTorch loop doing the same arithmetic.

    python bench/iteration.py [--quick] [--configs NAME ...] [--rounds 5] [--seconds 3] [--device cpu|cuda]

**The framework** is what a user runs: the recipe through the command line, in this process (``lightning_ebm.cli``,
``fit --config conf/experiments/<recipe>.yaml`` with the flags below), so the Lightning loop, the method's
``training_step`` (and, under automatic optimisation, Lightning's optimiser step), the recipe's callbacks, the
checkpoint callback and a CSV logger. Only the data are replaced: :class:`InMemoryImages`, a DataModule of
preloaded random images served as whole batches, so that no decoding or collation is timed (``bench/dataloader.py``
and ``bench/speed.py`` time the DataModules). The progress bar is off (it draws on the terminal).

**The plain loop** is written out below from the papers' updates, on the same preloaded batches: the same nets
(built from ``lightning_ebm.nets`` with the recipe's constructor arguments), the same optimisers and settings, and
Langevin by hand, ``x ← x + (δ²/2)(∂f/∂x − x/σ²) + δ ε`` with ``torch.autograd.grad`` with respect to x only and the
parameters frozen. It has no logging, no checks and no callbacks.

**Timing.** Per configuration and round: the plain loop, the framework, the plain loop again (its ratio to the first
is the measurement's own spread), each with warm-up iterations first, each timed per iteration (the framework by
a callback at the start of successive batches, which excludes start-up, the first sample grid and the final save).
Medians over the iterations of a run; each round's framework time over the geometric mean of its two plain
runs, and its second plain run over its first (the noise), then the medians of these ratios over the rounds: pairing
within a round keeps the machine's slow drifts out of the ratios. ``outside`` is the framework's share of an iteration
spent outside the method's ``training_step`` and Lightning's ``optimizer_step`` (which holds training_step, backward
and the update under automatic optimisation): the loop, batch transfer, batch-level callbacks and logging.

**Same arithmetic.** In the first round the framework's first iteration is replayed by the plain loop from the
framework's initial weights, noise generator state, latents and first batch: ``gradient diff`` is
``‖g_plain − g_framework‖ / ‖g_framework‖`` over all parameters' gradients, ``loss diff`` the relative difference of
the iteration's loss (where the framework's step returns or logs it), and the optimisers' class and settings must be
equal. Both are rounding-level, not zero: the framework updates the chains in place as ``x·(1 − δ²/2σ²) +
(δ²/2)·∂f/∂x``, the plain loop as written above, and Langevin carries the difference along the chains.

``tables(...)`` returns the markdown (``bench/speed.py`` can add it to ``bench/RESULTS.md``).
"""

import argparse
import bisect
import contextlib
import copy
import itertools
import json
import math
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
import yaml
from budget import ROOT
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from sampler import sync
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

MODULE = Path(__file__).stem  # the class paths below are this module's: bench/ must be on sys.path


# --------------------------------------------------------------------------------------------------- the data
def preloaded(shape: Sequence[int], n_images: int, num_classes: int = 10, seed: int = 0) -> dict[str, Tensor]:
    """``n_images`` random images (uint8 levels scaled to [-1, 1]), labels and dataset indices, in memory."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_images, *shape), generator=g, dtype=torch.uint8).float() / 127.5 - 1
    labels = torch.randint(0, num_classes, (n_images,), generator=g)
    return {"image": images, "label": labels, "index": torch.arange(n_images)}


def batches(data: dict[str, Tensor], batch_size: int) -> list[dict[str, Tensor]]:
    """Consecutive whole batches (views), the last partial one dropped."""
    n = len(data["image"]) // batch_size
    return [{k: v[i * batch_size : (i + 1) * batch_size] for k, v in data.items()} for i in range(n)]


class _Batches(Dataset):
    def __init__(self, items: list[dict[str, Tensor]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return self.items[i]


class InMemoryImages(LightningDataModule):
    """Preloaded random images served as whole ``{"image", "label", "index"}`` batches, in order; nothing held out.

    Args:
        shape: ``(C, H, W)`` of one image.
        n_images: images in memory (an epoch is ``n_images // batch_size`` batches).
        batch_size: images per batch.
        num_classes: labels are drawn in ``0 … num_classes − 1``.
        seed: the images' seed (the plain loop uses the same images).
    """

    def __init__(
        self, shape: Sequence[int] = (1, 28, 28), n_images: int = 1024, batch_size: int = 128, num_classes: int = 10,
        seed: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.shape, self.batch_size = tuple(int(s) for s in shape), batch_size
        self.items = batches(preloaded(self.shape, n_images, num_classes, seed), batch_size)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """``(C, H, W)``, linked into the model by the CLI."""
        return self.shape

    def train_dataloader(self) -> DataLoader:
        """The batches, in order, as they are (``batch_size=None``: no collation)."""
        return DataLoader(_Batches(self.items), batch_size=None, shuffle=False)

    def val_dataloader(self) -> list:
        """Nothing held out: validation is skipped."""
        return []


# ---------------------------------------------------------------------------------------------- configurations
@dataclass
class Config:
    """One row: a recipe with model overrides (dotted keys of the recipe), the data's shape and batch size."""

    label: str
    recipe: str
    shape: tuple[int, int, int]
    batch: int
    overrides: dict[str, Any] = field(default_factory=dict)
    n_images: int = 0  # 0: 8 batches
    num_classes: int = 10

    @property
    def images(self) -> int:
        return self.n_images or 8 * self.batch


SILU_CNN = {  # 76,928 parameters: 5x5/2 -> 16, 3x3/2 -> 32, 64, 64 (28 -> 14 -> 7 -> 4 -> 2), fc 256 -> 64, summed
    "class_path": "lightning_ebm.nets.ObjectDescriptor",
    "init_args": {
        "channels": [16, 32, 64, 64],
        "kernel_sizes": [5, 3, 3, 3],
        "strides": [2, 2, 2, 2],
        "n_out": 64,
        "activation": "torch.nn.SiLU",
    },
}
M = "model.init_args."

CONFIGS = {
    "coopnets": Config(
        "CoopNets, 32×32 RGB, batch 100, 144 chains, 10 noise-free steps (coopnets_cifar_paper)",
        "coopnets_cifar_paper", (3, 32, 32), 100, {M + "n_chains": 144, M + "langevin_noise": False},
    ),
    "descriptor": Config(
        "GenerativeConvNet, 28×28 gray, batch 128, 128 chains, 60 steps, 77k-parameter SiLU CNN (texture)",
        "texture", (1, 28, 28), 128, {M + "net": SILU_CNN, M + "n_chains": 128, M + "langevin_steps": 60},
    ),
    "multigrid": Config(
        "MultigridMCD 4→16→64, batch 100, 90 steps per grid (multigrid_paper)",
        "multigrid_paper", (3, 64, 64), 100, {M + "langevin_steps": 90},
    ),
    "multigrid_digits": Config(
        "MultigridMCD 4→16, 16×16 gray, batch 64, 30 steps per grid (multigrid_digits)",
        "multigrid_digits", (1, 16, 16), 64,
    ),
    "cd": Config("ContrastiveDivergence CD-10, 48×48 gray, batch 4 (cd_texture)", "cd_texture", (1, 48, 48), 4),
    "abp": Config(
        "AlternatingBackprop, 32×32 gray, batch 32, 30 latent steps (abp_faces)", "abp_faces", (1, 32, 32), 32,
        n_images=180,
    ),
    "generative_gradient": Config(
        "GenerativeGradient, 16×16 gray, batch 256 (generative_gradient_digits at 4× its batch)",
        "generative_gradient_digits", (1, 16, 16), 256,
    ),
}  # fmt: skip

_tiny_descriptor = {"channels": [4, 4], "kernel_sizes": [3, 3], "strides": [2, 2], "n_out": 4}
_tiny_generator = {"z_dim": 4, "channels": [8, 4]}
QUICK = {  # the same recipes at tiny sizes, for the smoke test
    "coopnets": Config("CoopNets (tiny)", "coopnets_cifar_paper", (3, 16, 16), 4, {
        M + "n_chains": 4, M + "langevin_noise": False, M + "langevin_steps": 2,
        M + "descriptor.init_args": _tiny_descriptor, M + "generator.init_args": _tiny_generator,
    }),
    "descriptor": Config("GenerativeConvNet (tiny)", "texture", (1, 16, 16), 4, {
        M + "net": {**SILU_CNN, "init_args": {**SILU_CNN["init_args"], **_tiny_descriptor}},
        M + "n_chains": 4, M + "langevin_steps": 2,
    }),
    "multigrid": Config("MultigridMCD (tiny)", "multigrid_paper", (3, 16, 16), 4, {
        M + "grids": [4, 16], M + "langevin_steps": 2, M + "descriptor.init_args": {"width": 0.05},
    }),
    "multigrid_digits": Config("MultigridMCD 4→16 (tiny)", "multigrid_digits", (1, 16, 16), 4, {
        M + "langevin_steps": 2, M + "descriptor.init_args": {"width": 0.05},
    }),
    "cd": Config("ContrastiveDivergence (tiny)", "cd_texture", (1, 16, 16), 2, {
        M + "langevin_steps": 2, M + "net.init_args.channels": [4, 4, 4],
    }),
    "abp": Config("AlternatingBackprop (tiny)", "abp_faces", (1, 16, 16), 4, {
        M + "generator_steps": 2, M + "generator.init_args": {"z_dim": 4, "channels": [8, 4]},
    }),
    "generative_gradient": Config("GenerativeGradient (tiny)", "generative_gradient_digits", (1, 8, 8), 8, {
        M + "net.init_args": {"num_classes": 10, "channels": [4], "hidden": 8},
    }),
}  # fmt: skip


def recipe_path(config: Config) -> Path:
    return ROOT / "conf" / "experiments" / f"{config.recipe}.yaml"


def set_dotted(tree: dict, key: str, value: Any) -> None:
    """``tree[a][b][c] = value`` for ``key = "a.b.c"``; a dict value is merged into a dict there (as jsonargparse
    merges ``init_args``), unless it names another ``class_path``."""
    *parents, last = key.split(".")
    for name in parents:
        tree = tree.setdefault(name, {})
    old = tree.get(last)
    same_class = isinstance(value, dict) and isinstance(old, dict) and value.get("class_path") == old.get("class_path")
    if isinstance(value, dict) and isinstance(old, dict) and ("class_path" not in value or same_class):
        merged = copy.deepcopy(old)
        for k, v in value.items():
            set_dotted(merged, k, v)
        tree[last] = merged
    else:
        tree[last] = copy.deepcopy(value)


def model_config(config: Config) -> tuple[str, dict[str, Any]]:
    """The method's class name and init_args: the recipe's ``model`` with the overrides, as the CLI will read it."""
    tree = yaml.safe_load(recipe_path(config).read_text())
    for key, value in config.overrides.items():
        set_dotted(tree, key, value)
    model = tree["model"]
    return model["class_path"].rsplit(".", 1)[-1], dict(model.get("init_args") or {})


# ------------------------------------------------------------------------------------- building from the config
def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def factory(spec: Any) -> Callable[..., Any]:
    """A config's class (``"torch.nn.SiLU"``) or ``{class_path, init_args}`` as a callable with those arguments."""
    if isinstance(spec, str):
        return _import(spec)
    kwargs = {k: factory(v) if k == "activation" else v for k, v in (spec.get("init_args") or {}).items()}
    return partial(_import(spec["class_path"]), **kwargs)


def optimizer(init: dict[str, Any], key: str = "optimizer") -> Callable[..., torch.optim.Optimizer]:
    return factory(init[key]) if key in init else torch.optim.Adam


@contextlib.contextmanager
def frozen(*nets: nn.Module) -> Iterator[None]:
    """Parameters without gradients inside the block (sampling differentiates with respect to the input only)."""
    params = [p for net in nets for p in net.parameters()]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def plain_langevin(
    f: Callable[[Tensor], Tensor], x: Tensor, steps: int, delta: float, sigma: float, noise: bool,
    gen: torch.Generator, clip: Sequence[float] | None = None,
) -> Tensor:  # fmt: skip
    """Xie et al. (ICML 2016): ``x ← x + (δ²/2)(∂f/∂x − x/σ²) + δ ε``, ε ~ N(0, I), as the released codes write it."""
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(f(x).sum(), x)
        x = x + 0.5 * delta**2 * (grad - x / sigma**2)
        if noise:
            x = x + delta * torch.randn(x.shape, generator=gen, device=x.device)
        if clip is not None:
            x = x.clamp(clip[0], clip[1])
    return x.detach()


# ----------------------------------------------------------------------------------------------- plain loops
class Plain:
    """A method's iteration written out in plain PyTorch. Subclasses build ``self.nets`` (attribute name -> net, as
    the method names them) and implement :meth:`step`; ``hp`` is the method's settings (recipe over defaults)."""

    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(self, init: dict[str, Any], shape: Sequence[int], n_images: int, device: str, gen: torch.Generator):
        self.hp = {**self.DEFAULTS, **init}
        self.shape, self.device, self.gen = tuple(shape), device, gen
        self.nets: dict[str, nn.Module] = {}
        self.record, self.grads = False, {}

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimisers, in the method's order."""
        return [self.opt]

    def backward(self, loss: Tensor) -> None:
        """``loss.backward()``, keeping the gradients when :attr:`record` is set (the arithmetic check)."""
        loss.backward()
        if self.record:
            self.grads = {k: p.grad.detach().clone() for k, p in self.named_parameters().items() if p.grad is not None}

    def used(self) -> dict[str, Any]:
        """The settings this loop reads, compared with the framework's hyper-parameters."""
        return {k: self.hp[k] for k in self.DEFAULTS}

    def step(self, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def named_parameters(self) -> dict[str, Tensor]:
        return {f"{name}.{k}": p for name, net in self.nets.items() for k, p in net.named_parameters()}

    def load(self, params: dict[str, Tensor], latents: Tensor | None) -> None:
        """Start from the framework's weights (and latents)."""
        own = self.named_parameters()
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(params[k])

    def require(self, **expected: Any) -> None:
        """Refuse settings that this plain loop does not implement."""
        for k, v in expected.items():
            if self.hp.get(k, v) != v:
                raise NotImplementedError(f"{type(self).__name__}: {k}={self.hp[k]!r} is not written out here")


LANGEVIN = {"langevin_steps": 30, "langevin_step_size": 0.0046, "langevin_sigma": 0.0154, "langevin_noise": True,
            "langevin_clip": None}  # fmt: skip


class PlainDescriptor(Plain):
    """GenerativeConvNet (Xie et al., ICML 2016): persistent chains from zero, l Langevin steps, one step on
    ``mean f(x̃) − mean f(x)``."""

    DEFAULTS: ClassVar[dict[str, Any]] = {**LANGEVIN, "n_chains": 1}

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.require(chain_init="zeros", grad_scaling="none", grad_cap=None, bias_lr_multiplier=1.0, persistent=False)
        self.net = self.nets["net"] = factory(self.hp["net"])(self.shape).to(self.device)
        self.opt = optimizer(self.hp)(self.net.parameters())
        self.chains = torch.zeros((self.hp["n_chains"], *self.shape), device=self.device)

    def revise(self, x: Tensor) -> Tensor:
        hp = self.hp
        with frozen(self.net):
            return plain_langevin(
                self.net, x, hp["langevin_steps"], hp["langevin_step_size"], hp["langevin_sigma"],
                hp["langevin_noise"], self.gen, hp["langevin_clip"],
            )  # fmt: skip

    def step(self, batch: dict[str, Tensor]) -> Tensor:
        self.chains = synthesized = self.revise(self.chains)
        return self.update(batch["image"], synthesized)

    def update(self, x: Tensor, synthesized: Tensor) -> Tensor:
        """The maximum-likelihood step on ``mean f(x̃) − mean f(x)``; its loss."""
        loss = self.net(synthesized).mean() - self.net(x).mean()
        self.opt.zero_grad()
        self.backward(loss)
        self.opt.step()
        return loss.detach()


class PlainCD(PlainDescriptor):
    """Contrastive divergence CD-k (Hinton 2002): k Langevin steps from the observed batch."""

    DEFAULTS: ClassVar[dict[str, Any]] = {**LANGEVIN}

    def __init__(self, *args: Any) -> None:
        Plain.__init__(self, *args)
        self.require(persistent=False, grad_scaling="none", grad_cap=None, bias_lr_multiplier=1.0)
        self.net = self.nets["net"] = factory(self.hp["net"])(self.shape).to(self.device)
        self.opt = optimizer(self.hp)(self.net.parameters())

    def step(self, batch: dict[str, Tensor]) -> Tensor:
        x = batch["image"]
        return self.update(x, self.revise(x))


class PlainCoopNets(Plain):
    """CoopNets (Xie et al., AAAI 2018): the generator proposes x̂ = g(z), Langevin revises it to x̃, the descriptor
    steps on ``mean f(x̃) − mean f(x)`` and the generator on ``mean ‖x̃ − g(z)‖² / 2s²``."""

    DEFAULTS: ClassVar[dict[str, Any]] = {**LANGEVIN, "n_chains": 144, "generator_sigma": 0.3, "generator_steps": 0}

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.require(generator_steps=0, descriptor_clip_val=None, generator_clip_val=None)
        self.d = self.nets["descriptor"] = factory(self.hp["descriptor"])(self.shape).to(self.device)
        self.g = self.nets["generator"] = factory(self.hp["generator"])(self.shape).to(self.device)
        self.opt_d = optimizer(self.hp)(self.d.parameters())
        self.opt_g = optimizer(self.hp, "generator_optimizer")(self.g.parameters())

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt_d, self.opt_g]

    def step(self, batch: dict[str, Tensor]) -> Tensor:
        hp, x = self.hp, batch["image"]
        z = torch.randn((hp["n_chains"], *self.g.latent_shape), generator=self.gen, device=self.device)
        proposal = self.g(z)
        with frozen(self.d):
            revised = plain_langevin(
                self.d, proposal.detach(), hp["langevin_steps"], hp["langevin_step_size"], hp["langevin_sigma"],
                hp["langevin_noise"], self.gen, hp["langevin_clip"],
            )  # fmt: skip
        d_loss = self.d(revised).mean() - self.d(x).mean()
        g_loss = (revised - proposal).pow(2).flatten(1).sum(1).mean() / (2 * hp["generator_sigma"] ** 2)
        self.opt_d.zero_grad()
        self.opt_g.zero_grad()
        self.backward(d_loss + g_loss)
        self.opt_d.step()
        self.opt_g.step()
        return d_loss.detach()


class PlainMultigrid(Plain):
    """Multi-grid MCD (Gao et al., CVPR 2018): from the 1×1 means, per grid: block replication, Langevin under that
    grid's descriptor; each descriptor steps on ``mean f_k(x̃_k) − mean f_k(Q_k x)``."""

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "grids": [4, 16, 64], "langevin_steps": 30, "langevin_step_size": 0.00235, "langevin_sigma": 0.392,
        "langevin_noise": True, "langevin_clip": None,
    }  # fmt: skip

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.require(grid_options=None, clip_val=None)
        c = self.shape[0]
        make = factory(self.hp["descriptor"])
        self.descriptors = [make((c, k, k)).to(self.device) for k in self.hp["grids"]]
        self.nets = {f"descriptors.{i}": d for i, d in enumerate(self.descriptors)}
        self.opts = [optimizer(self.hp)(d.parameters()) for d in self.descriptors]

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return self.opts

    def step(self, batch: dict[str, Tensor]) -> Tensor:
        hp, x = self.hp, batch["image"]
        side = x.shape[-1]
        chain = F.avg_pool2d(x, side)  # the 1x1 means
        loss = 0.0
        for k, d in zip(hp["grids"], self.descriptors):
            chain = F.interpolate(chain, scale_factor=k // chain.shape[-1], mode="nearest")
            with frozen(d):
                chain = plain_langevin(
                    d, chain, hp["langevin_steps"], hp["langevin_step_size"], hp["langevin_sigma"],
                    hp["langevin_noise"], self.gen, hp["langevin_clip"],
                )  # fmt: skip
            observed = F.avg_pool2d(x, side // k)
            loss = loss + d(chain).mean() - d(observed).mean()
        for opt in self.opts:
            opt.zero_grad()
        self.backward(loss)
        for opt in self.opts:
            opt.step()
        return loss.detach()


class PlainABP(Plain):
    """Alternating back-propagation (Han et al., AAAI 2017): each example's latent, kept across epochs, revised by
    Langevin on ``log p(x, z)``; then one generator step on ``mean ‖x − g(z)‖² / 2s²``."""

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "generator_steps": 30, "generator_step_size": 0.3, "generator_sigma": 0.3, "generator_noise": True,
    }  # fmt: skip

    def __init__(self, init: dict[str, Any], shape: Sequence[int], n_images: int, device: str, gen: torch.Generator):
        super().__init__(init, shape, n_images, device, gen)
        self.require(observation=None, latent_init="normal")
        self.g = self.nets["generator"] = factory(self.hp["generator"])(self.shape).to(self.device)
        self.opt = optimizer(self.hp)(self.g.parameters())
        z = torch.randn((n_images, *self.g.latent_shape), generator=torch.Generator().manual_seed(0))
        self.latents = z.to(device)

    def load(self, params: dict[str, Tensor], latents: Tensor | None) -> None:
        super().load(params, latents)
        if latents is not None:
            self.latents = latents.clone().to(self.device)

    def step(self, batch: dict[str, Tensor]) -> Tensor:
        hp, x, index = self.hp, batch["image"], batch["index"]
        delta, s2 = hp["generator_step_size"], hp["generator_sigma"] ** 2
        z = self.latents[index]
        with frozen(self.g):
            for _ in range(hp["generator_steps"]):
                z = z.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(-(x - self.g(z)).pow(2).sum() / (2 * s2), z)
                z = z + 0.5 * delta**2 * (grad - z)
                if hp["generator_noise"]:
                    z = z + delta * torch.randn(z.shape, generator=self.gen, device=z.device)
        z = z.detach()
        loss = (x - self.g(z)).pow(2).flatten(1).sum(1).mean() / (2 * s2)
        self.opt.zero_grad()
        self.backward(loss)
        self.opt.step()
        self.latents[index] = z
        return loss.detach()


class PlainGenerativeGradient(Plain):
    """Generative gradient (Dai, Lu and Wu, ICLR 2015): ``w · L_gen + (1 − w) · L_disc`` on a labelled batch, with
    ``L_gen`` the class-conditional log-likelihood importance-sampled over the batch."""

    DEFAULTS: ClassVar[dict[str, Any]] = {"generative_schedule": [[0, 1.0], [500, 1.0], [500, 0.0]]}

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.net = self.nets["net"] = factory(self.hp["net"])(self.shape).to(self.device)
        self.opt = optimizer(self.hp)(self.net.parameters())
        self.schedule = [(float(s), float(w)) for s, w in self.hp["generative_schedule"]]
        self.t = 0

    def weight(self) -> float:
        steps = [s for s, _ in self.schedule]
        i = bisect.bisect_right(steps, self.t)
        if i in (0, len(steps)):
            return self.schedule[min(i, len(steps) - 1)][1]
        (s0, w0), (s1, w1) = self.schedule[i - 1], self.schedule[i]
        return w0 + (w1 - w0) * (self.t - s0) / (s1 - s0)

    def step(self, batch: dict[str, Tensor]) -> Tensor:
        x, y = batch["image"], batch["label"]
        scores = self.net(x)
        own = scores[torch.arange(len(y), device=y.device), y]
        generative = -(own - torch.logsumexp(scores[:, y], dim=0) + math.log(len(y))).mean()
        w = self.weight()
        loss = w * generative + (1 - w) * F.cross_entropy(scores, y)
        self.opt.zero_grad()
        self.backward(loss)
        self.opt.step()
        self.t += 1
        return loss.detach()


PLAIN: dict[str, type[Plain]] = {
    "GenerativeConvNet": PlainDescriptor,
    "ContrastiveDivergence": PlainCD,
    "CoopNets": PlainCoopNets,
    "MultigridMCD": PlainMultigrid,
    "AlternatingBackprop": PlainABP,
    "GenerativeGradient": PlainGenerativeGradient,
}


def plain_loop(config: Config, device: str, gen: torch.Generator | None = None) -> Plain:
    """The plain loop of ``config``'s method with fresh nets (seed 0) and optimisers."""
    method, init = model_config(config)
    torch.manual_seed(0)
    gen = torch.Generator(device=device).manual_seed(0) if gen is None else gen
    return PLAIN[method](init, config.shape, config.images, device, gen)


def time_plain(config: Config, items: list[dict[str, Tensor]], warmup: int, iters: int, device: str) -> list[float]:
    """Seconds of each of ``iters`` plain iterations after ``warmup`` ones, in a fresh loop."""
    loop = plain_loop(config, device)
    starts = []
    for i in range(warmup + iters + 1):
        sync(device)
        starts.append(time.perf_counter())
        if i < warmup + iters:
            loop.step(items[i % len(items)])
    return [b - a for a, b in itertools.pairwise(starts[warmup:])]


# ------------------------------------------------------------------------------------------------ the framework
class IterationTimer(Callback):
    """Times the framework's iterations: ``perf_counter`` at the start of successive batches (after ``warmup``
    batches), the time inside the method's ``training_step`` and Lightning's ``optimizer_step``, and stops the fit
    after ``warmup + iters`` iterations (the batch that starts then skips its step). With ``capture``, keeps the
    initial weights, optimiser settings, noise states and latents, and the first iteration's gradients and loss.
    """

    def __init__(self, warmup: int = 2, iters: int = 5, capture: bool = False, device: str = "cpu") -> None:
        self.warmup, self.iters, self.capture, self.device = warmup, iters, capture, device
        self.starts: list[float] = []
        self.inside: list[float] = []
        self._depth, self._stop = 0, False
        self.initial: dict[str, Tensor] = {}
        self.rng_state: Tensor | None = None
        self.global_rng: Tensor | None = None
        self.latents: Tensor | None = None
        self.loss = float("nan")
        self.grads: dict[str, Tensor] = {}
        self.optimizers: list[tuple[str, list[dict[str, Any]]]] = []
        self.hparams: dict[str, Any] = {}

    def _timed(self, fn: Callable[..., Any], skip: bool) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if skip and self._stop:
                return None
            if self._depth:  # training_step inside optimizer_step: counted once
                return fn(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sync(self.device)
                self.inside[-1] += time.perf_counter() - start
                self._depth -= 1

        return timed

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.training_step = self._timed(pl_module.training_step, skip=True)
        pl_module.optimizer_step = self._timed(pl_module.optimizer_step, skip=False)
        self.hparams = dict(pl_module.hparams)
        if self.capture:
            from lightning_ebm.samplers.banks import LatentBank

            self.initial = {k: p.detach().clone() for k, p in pl_module.named_parameters()}
            self.optimizers = [settings(opt) for opt in trainer.optimizers]
            self.rng_state = pl_module.rng.get_state().clone()
            bank = getattr(pl_module, "latents", None)
            if isinstance(bank, LatentBank):
                n = len(trainer.datamodule.items) * trainer.datamodule.batch_size
                self.latents = bank.get(torch.arange(n, device=pl_module.device)).clone()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        sync(self.device)
        self.starts.append(time.perf_counter())
        self.inside.append(0.0)
        if len(self.starts) == 1 and self.capture:
            self.global_rng = torch.get_rng_state()
        if len(self.starts) > self.warmup + self.iters:
            self._stop = trainer.should_stop = True

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self.capture and len(self.starts) == 1 and not self.grads:  # after the first iteration's backward
            self.grads = {k: p.grad.detach().clone() for k, p in pl_module.named_parameters() if p.grad is not None}

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.capture and len(self.starts) == 1:
            # the loss: the step's output under automatic optimisation, else train/loss if this step logged it
            loss = outputs.get("loss") if isinstance(outputs, dict) else None
            loss = trainer.callback_metrics.get("train/loss") if loss is None else loss
            self.loss = float("nan") if loss is None else float(loss)

    def times(self) -> list[float]:
        """Seconds of each timed iteration."""
        s = self.starts[self.warmup : self.warmup + self.iters + 1]
        return [b - a for a, b in itertools.pairwise(s)]

    def outside_share(self) -> float:
        """The share of the timed iterations spent outside ``training_step``/``optimizer_step``."""
        total = sum(self.times())
        return 1 - sum(self.inside[self.warmup : self.warmup + self.iters]) / total if total else float("nan")


CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"  # the CLI adds one beside wandb; wandb itself is not timed
QUIET = (  # what the fits say because of this benchmark's data and its early stop
    r".*`training_step` returned `None`",
    r"Total length of .* across ranks is zero",
    r"SampleQuality: the DataModule has no held-out images",
)


def json_flag(key: str, value: Any) -> str:
    return f"--{key}={json.dumps(value)}"


def framework_args(config: Config, timer: dict[str, Any], device: str, root: Path) -> list[str]:
    """The command line: the recipe, the overrides, the in-memory data, the timer callback."""
    data = {"shape": list(config.shape), "n_images": config.images, "batch_size": config.batch}
    data["num_classes"] = config.num_classes
    return [
        "fit",
        "--config",
        str(recipe_path(config)),
        *(json_flag(k, v) for k, v in config.overrides.items()),
        json_flag("data", {"class_path": f"{MODULE}.InMemoryImages", "init_args": data}),
        json_flag("trainer.logger", {"class_path": CSV_LOGGER, "init_args": {"save_dir": "."}}),
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.accelerator={'gpu' if device.startswith('cuda') else 'cpu'}",
        "--trainer.devices=1",
        json_flag("trainer.callbacks+", {"class_path": f"{MODULE}.IterationTimer", "init_args": timer}),
        f"--trainer.default_root_dir={root}",
    ]  # fmt: skip


def time_framework(
    config: Config, warmup: int, iters: int, device: str, root: Path, capture: bool = False
) -> IterationTimer:
    """One fit of the recipe through the CLI, in this process, stopped after ``warmup + iters`` iterations."""
    from lightning_ebm.cli import run

    timer = {"warmup": warmup, "iters": iters, "capture": capture, "device": device}
    with warnings.catch_warnings():
        for message in QUIET:
            warnings.filterwarnings("ignore", message=message)
        cli = run(framework_args(config, timer, device, root))
    found = [c for c in cli.trainer.callbacks if type(c).__name__ == "IterationTimer"]
    if len(found) != 1 or len(found[0].times()) != iters:
        raise RuntimeError(f"{config.recipe}: the fit ended before {warmup + iters} iterations")
    return found[0]


# ----------------------------------------------------------------------------------------- the arithmetic check
def settings(opt: torch.optim.Optimizer) -> tuple[str, list[dict[str, Any]]]:
    """An optimiser's class and its groups' settings (learning rate, betas, ...), without ``initial_lr``, which a
    learning-rate scheduler adds (the recipe's scheduler leaves the first iteration's rate at the optimiser's)."""
    return type(opt).__name__, [
        {k: _plain(v) for k, v in g.items() if k not in ("params", "initial_lr")} for g in opt.param_groups
    ]


def check_arithmetic(config: Config, timer: IterationTimer, items: list[dict[str, Tensor]], device: str) -> str:
    """Replay the framework's first iteration in the plain loop from the same weights, noise and latents; returns
    ``"gradient diff / loss diff"`` (relative), or what differs in the settings or optimisers.

    The gradients are compared, not the updated weights: Adam's first step is ``lr · sign(g)`` for every entry, so
    a gradient that is zero but for rounding (the bias of a convolution before batch norm) moves by ±lr on either
    side at random."""
    gen = torch.Generator(device=device)
    gen.set_state(timer.rng_state)
    loop = plain_loop(config, device, gen)
    mismatched = [k for k, v in loop.used().items() if k in timer.hparams and _plain(timer.hparams[k]) != _plain(v)]
    if mismatched:
        return "settings differ: " + ", ".join(f"{k}={timer.hparams[k]!r}/{loop.hp[k]!r}" for k in mismatched)
    if [settings(opt) for opt in loop.optimizers()] != timer.optimizers:
        return f"optimisers differ: {[settings(opt) for opt in loop.optimizers()]} / {timer.optimizers}"
    loop.load(timer.initial, timer.latents)
    torch.set_rng_state(timer.global_rng)
    loop.record = True
    loss = float(loop.step(items[0]))
    if set(loop.grads) != set(timer.grads):
        return "parameters differ: " + ", ".join(sorted(set(loop.grads) ^ set(timer.grads)))
    num = sum(float((loop.grads[k] - timer.grads[k]).double().pow(2).sum()) for k in loop.grads)
    den = sum(float(timer.grads[k].double().pow(2).sum()) for k in loop.grads)
    grads = f"{math.sqrt(num / den):.1e}" if den else "no gradient"
    if math.isnan(timer.loss):  # manual optimisation, on a step that logs nothing
        return f"{grads} / –"
    return f"{grads} / {abs(loss - timer.loss) / max(abs(timer.loss), 1e-12):.1e}"


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


# -------------------------------------------------------------------------------------------------- the table
@dataclass
class Row:
    config: Config
    plain: list[float] = field(default_factory=list)
    again: list[float] = field(default_factory=list)
    framework: list[float] = field(default_factory=list)
    outside: list[float] = field(default_factory=list)
    check: str = ""
    iters: int = 0
    warmup: int = 0

    def ratios(self) -> tuple[float, float]:
        """``(framework / plain, plain again / plain)``: the medians over the rounds of each round's own ratios, the
        framework's against the geometric mean of the plain runs before and after it. Pairing within a round keeps
        the machine's slow drifts (clock, other tenants) out of the ratio; the noise column is the same pairing of
        the two plain runs."""
        paired = [f / math.sqrt(p * a) for p, f, a in zip(self.plain, self.framework, self.again)]
        noise = [a / p for p, a in zip(self.plain, self.again)]
        return statistics.median(paired), statistics.median(noise)

    def markdown(self) -> str:
        ratio, noise = self.ratios()
        p, outside = statistics.median(self.plain), statistics.median(self.outside)
        return (
            f"| {self.config.label} | {p:.3f} | {noise:.3f} | {ratio:.3f} | {outside:.1%} | {self.check} "
            f"| {self.iters} × {len(self.plain)} ({self.warmup}) |"
        )


SLOW = 4
"""A configuration whose iteration takes more than ``SLOW × seconds`` runs one round of 3 iterations after 1 warm-up."""
MAX_ITERS = 80
"""The most timed iterations of one run (the fastest configurations: about ``seconds`` of them)."""


def measure(
    name: str, config: Config, rounds: int, warmup: int, iters: int | None, seconds: float, device: str, root: Path
) -> Row:
    """Interleaved rounds of plain, framework, plain again; ``iters=None`` picks as many iterations as fill about
    ``seconds`` per run (3 to :data:`MAX_ITERS`), from the plain loop's warm-up."""
    data = preloaded(config.shape, config.images, config.num_classes)
    items = [{k: v.to(device) for k, v in b.items()} for b in batches(data, config.batch)]
    probe = time_plain(config, items, warmup, 1, device)[0]  # untimed: the process's first iterations are slow
    if iters is None and probe > SLOW * seconds:  # tens of seconds an iteration (multigrid_paper on a CPU)
        iters, warmup, rounds = 3, 1, 1
    elif iters is None:
        iters = max(3, min(MAX_ITERS, round(seconds / max(probe, 1e-6))))
    row = Row(config, iters=iters, warmup=warmup)
    for r in range(rounds):
        row.plain.append(statistics.median(time_plain(config, items, warmup, iters, device)))
        timer = time_framework(config, warmup, iters, device, root / f"{name}-{r}", capture=r == 0)
        row.framework.append(statistics.median(timer.times()))
        row.outside.append(timer.outside_share())
        row.again.append(statistics.median(time_plain(config, items, warmup, iters, device)))
        if r == 0:
            row.check = check_arithmetic(config, timer, items, device)
        print(f"# {name} round {r + 1}/{rounds}: plain {row.plain[-1]:.4f} s, framework {row.framework[-1]:.4f} s, "
              f"plain again {row.again[-1]:.4f} s", file=sys.stderr, flush=True)  # fmt: skip
    return row


def tables(
    quick: bool = False,
    configs: Sequence[str] | None = None,
    rounds: int = 5,
    warmup: int = 2,
    iters: int | None = None,
    seconds: float = 3.0,
    device: str = "cpu",
) -> str:
    """The markdown table of every configuration (``configs``: names of :data:`CONFIGS`; ``quick``: the tiny
    :data:`QUICK` sizes, one round, one warm-up and two iterations)."""
    torch.set_flush_denormal(True)
    chosen = QUICK if quick else CONFIGS
    names = list(chosen) if not configs else list(configs)
    if quick:
        rounds, warmup, iters = 1, 1, 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows.append(measure(name, chosen[name], rounds, warmup, iters, seconds, device, Path(tmp)))
    cpu = platform.processor() or platform.machine()
    return "\n".join([
        f"{device}; torch {torch.__version__}; {cpu}, {torch.get_num_threads()} threads; medians over the "
        "iterations of a run; ratios within each interleaved round of plain, framework, plain again (the framework "
        "against the geometric mean of the two plain runs), then their median over the rounds.",
        "",
        "| method, size (recipe) | plain s/iter | plain again / plain (noise) | framework / plain | framework time "
        "outside training_step | same arithmetic: gradient diff / loss diff | iterations × rounds (warm-up) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(row.markdown() for row in rows),
        "",
        "Framework: the recipe through the CLI with its callbacks, a CSV logger and in-memory random images; plain: "
        "the same nets, optimisers and updates written out in `bench/iteration.py`, without logging or checks. "
        "Gradient and loss differences of the replayed first iteration are rounding carried along the sampler "
        "(ABP's 30 latent steps of δ = 0.3 on random images amplify it most); '–': the step does not return its loss.",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 iterations, one round (a smoke run)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), help="which rows (default: all)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of plain, framework, plain again")
    parser.add_argument("--warmup", type=int, default=2, help="iterations before timing, in every run")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per run (default: about --seconds)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per run when --iters is not given")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    print(tables(args.quick, args.configs, args.rounds, args.warmup, args.iters, args.seconds, args.device))


if __name__ == "__main__":
    # run as a script, this file is ``__main__``; the CLI builds the DataModule and the timer from the module
    # ``iteration``: use that one module for everything
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from iteration import main as _main

    _main()
