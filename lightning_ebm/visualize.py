"""``visualize``: sample a node of a trained classifier or descriptor and write the samples as a grid.

Generative visualisation (Dai, Lu and Wu, ICLR 2015): samples ``p(x) ∝ exp(f_node(x)) N(x; 0, σ² I)`` by HMC (or
Langevin) from N(0, σ² I) starts, for any node of a trained model's score networks (:mod:`lightning_ebm.nodes`).
The command line is built from :func:`visualize`'s signature, so it takes ``--config`` files and ``--print_config``.
"""

from pathlib import Path
from typing import Literal

from lightning_ebm.argv import read_configs
from lightning_ebm.errors import UsageError, parser_error

DESCRIPTION = """Sample a node of a trained classifier or descriptor, p(x) ∝ exp(f_node(x)) N(x; 0, σ²I), by HMC or
Langevin from N(0, σ²I) starts, and write the samples as a PNG grid (generative visualisation, Dai, Lu and Wu, ICLR
2015). --node list prints the nodes of a checkpoint."""


def load_model(ckpt_path: str | Path):  # -> EBMModule (torch is imported only here)
    """The method a checkpoint of this framework holds (its class is recorded in the checkpoint), on the CPU.

    Raises:
        UsageError: no such file, or not a checkpoint of this framework.
    """
    path = Path(ckpt_path)
    if not path.is_file():  # before importing torch: refused at once
        raise UsageError(f"--ckpt_path {path}: no such file (give a .ckpt file, such as a run's checkpoints/last.ckpt)")
    from lightning_ebm.checkpoint_io import read_checkpoint
    from lightning_ebm.lightning_private import split_cli_hparams

    hparams = read_checkpoint(path).get("hyper_parameters") or {}
    class_path, _ = split_cli_hparams(hparams)
    if class_path is None:
        raise UsageError(f"--ckpt_path {path}: it does not say which method wrote it (not a lightning_ebm checkpoint?)")
    module, _, name = class_path.rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    return cls.load_from_checkpoint(path, map_location="cpu")


def load_datamodule(ckpt_path: str | Path, why: str):  # -> LightningDataModule
    """The DataModule a checkpoint records (``datamodule_hyper_parameters``), built again.

    Raises:
        UsageError: the checkpoint records none (``why`` says what needed it).
    """
    import importlib

    from lightning_ebm.checkpoint_io import read_checkpoint
    from lightning_ebm.lightning_private import split_cli_hparams

    class_path, init_args = split_cli_hparams(read_checkpoint(ckpt_path).get("datamodule_hyper_parameters") or {})
    if class_path is None:
        raise UsageError(f"{why}: {ckpt_path} records no DataModule")
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)(**init_args)


def mean_image(ckpt_path: str | Path, node: str, n: int, shape: tuple[int, ...]):  # -> Tensor (n, *shape)
    """``n`` copies of the mean training image of the node's class (``class:<k>``), or of all training images, from
    the DataModule the checkpoint records (``datamodule_hyper_parameters``).

    Raises:
        UsageError: the checkpoint records no DataModule, or its training set has no image of the class.
    """
    import torch

    data = load_datamodule(ckpt_path, "--start mean (use --start noise)")
    name = type(data).__name__
    kind, _, k = node.partition(":")
    items = (data.train_set[i] for i in range(len(data.train_set)))
    images = [d["image"] for d in items if kind != "class" or int(d["label"]) == int(k)]
    if not images:
        raise UsageError(f"--start mean: {name}'s training set has no image of {node}; use --start noise")
    mean = torch.stack(images).mean(0)
    if tuple(mean.shape) != tuple(shape):
        raise UsageError(f"--start mean: {name}'s images are {tuple(mean.shape)}, the node takes {shape}")
    return mean.expand(n, *shape).clone()


def class_agreement(model, node: str, x) -> str:
    """For a ``class:<k>`` node of a classifier, how many samples ``x`` it classifies as k (else ``""``)."""
    import torch

    kind, _, k = node.partition(":")
    if kind != "class" or not hasattr(model, "class_scores"):
        return ""
    with torch.no_grad():
        hits = int((model.class_scores(x).argmax(1) == int(k)).sum())
    return f"{hits} of {len(x)} classified as class {k} by the model"


def visualize(
    ckpt_path: str,
    node: str = "score",
    n: int = 16,
    sampler: Literal["hmc", "langevin"] = "hmc",
    steps: int = 100,
    sigma: float | None = None,
    step_size: float | None = None,
    leapfrog_steps: int = 10,
    temperature: float = 1.0,
    start: Literal["noise", "mean"] = "noise",
    seed: int = 0,
    out: str | None = None,
) -> Path:
    """Sample a node of a trained model and write the samples as a PNG grid.

    Args:
        ckpt_path: a checkpoint of any method with a score network (a run's ``checkpoints/last.ckpt``).
        node: ``score`` (the model's own f), ``class:<k>``, ``layer:<module>:<channel>`` (one channel's response
            summed over positions), or ``list`` to print every node of the model.
        n: number of samples.
        sampler: ``hmc`` (step size adapted to an acceptance rate of 0.65) or ``langevin``.
        steps: HMC iterations or Langevin steps.
        sigma: σ of the Gaussian reference; default: the model's own sampler σ.
        step_size: the initial HMC step size ε or the Langevin δ; default: the model's own, else σ/10.
        leapfrog_steps: leapfrog steps per HMC iteration.
        temperature: T of the tempered node ``p_T(x) ∝ exp(f_node(x) / T) N(x; 0, σ² I)``; 1 is the paper's
            model. T < 1 strengthens the node against the reference (the sampler stays exact for ``p_T``).
        start: ``noise`` (N(0, σ² I) draws, as the paper) or ``mean``: every chain starts at the mean training
            image of the node's class (``class:<k>``) or of all training images (other nodes), read through the
            DataModule the checkpoint records.
        seed: seed of the starts and the noise.
        out: the PNG file to write; default: ``<run>/visualize/<node>.png`` beside the checkpoint's run.

    Returns:
        The PNG written (with ``node=list``: the checkpoint's path, after printing the nodes).
    """
    if n < 1:
        raise UsageError(f"--n {n}: the number of samples must be at least 1")
    if steps < 0:
        raise UsageError(f"--steps {steps}: the number of sampler steps cannot be negative (0 shows the starts)")
    if leapfrog_steps < 1:
        raise UsageError(f"--leapfrog_steps {leapfrog_steps}: an HMC iteration needs at least 1 leapfrog step")
    if not temperature > 0:
        raise UsageError(f"--temperature {temperature}: the tempered density exp(f / T) needs T > 0 (1: the model)")
    model = load_model(ckpt_path).eval()  # first: a missing file is refused before torch is imported
    import torch

    from callbacks.images import make_grid, save_png, stage_grid, to_uint8
    from lightning_ebm.mixins import AcceptanceTracker
    from lightning_ebm.nodes import describe_nodes, node_function
    from lightning_ebm.samplers import hmc, langevin

    if node == "list":
        print(describe_nodes(model))
        return Path(ckpt_path)
    node_f, shape = node_function(model, node)
    f = node_f if temperature == 1 else (lambda x: node_f(x) / temperature)
    hp = model.hparams
    own = ("hmc_sigma", "langevin_sigma") if sampler == "hmc" else ("langevin_sigma", "hmc_sigma")
    sigma = sigma or hp.get(own[0]) or hp.get(own[1]) or 1.0
    g = torch.Generator().manual_seed(seed)
    x0 = sigma * torch.randn((n, *shape), generator=g) if start == "noise" else mean_image(ckpt_path, node, n, shape)
    tracker = AcceptanceTracker()
    for p in model.parameters():
        p.requires_grad_(False)
    if sampler == "hmc":
        eps = step_size or hp.get("hmc_step_size") or 0.1 * sigma
        x = hmc(f, x0, n_steps=steps, step_size=eps, leapfrog_steps=leapfrog_steps, sigma=sigma, generator=g,
                callback=tracker)  # fmt: skip
        report = f"HMC acceptance {tracker.accept_prob:.2f} at mean step size {tracker.step_size:.3g}"
    else:
        delta = step_size or hp.get("langevin_step_size") or 0.1 * sigma
        x = langevin(f, x0, n_steps=steps, step_size=delta, sigma=sigma, generator=g)
        report = f"Langevin step size {delta:.3g}"
    if not torch.isfinite(x).all():
        raise UsageError(f"the chains of node {node} diverged at σ = {sigma:.3g}: lower --step_size or --sigma")
    agreement = class_agreement(model, node, x)
    ckpt = Path(ckpt_path)
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    path = Path(out) if out else run / "visualize" / f"{node.replace(':', '-')}.png"
    settings = f"sigma {sigma:.3g}, T {temperature:g}, {steps} {sampler} steps from {start}"
    if x.dim() == 4:
        lines = [f"node {node}: {settings}"] + ([agreement] if agreement else [])
        save_png(stage_grid({"samples": x.clamp(-1, 1)}, title=lines), path)
    else:  # a sequence (sound): one row per sample
        save_png(make_grid(to_uint8(x[:, :, None])), path)
    with torch.no_grad():
        values = node_f(x)
    print(f"{n} samples of node {node} (σ = {sigma:.3g}, T = {temperature:g}, {steps} steps from {start}; {report}); "
          f"f_node mean {values.mean().item():.3g}{'; ' + agreement if agreement else ''} → {path}")  # fmt: skip
    return path


def main(args: list[str], prog: str) -> Path:
    """The ``visualize`` command line: :func:`visualize`'s arguments as options, ``--config`` and ``--print_config``."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    class Parser(ArgumentParser):
        def error(self, message: str, ex: Exception | None = None):
            if not self.exit_on_error:
                super().error(message, ex)
            parser_error(self, message, ex)

    read_configs(args)  # a config file that is no YAML: named with its line, before the parser's long message
    parser = Parser(prog=f"{prog} visualize", description=DESCRIPTION)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a YAML file of these options")
    parser.add_function_arguments(visualize, as_group=False)
    config = parser.parse_args(args)
    return visualize(**{k: v for k, v in config.as_dict().items() if k != "config"})
