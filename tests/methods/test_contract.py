"""The contract every learning method keeps: one test per promise, run over every class in
``lightning_ebm.methods.__all__``. A new method inherits these tests by being listed there and having an entry in
``METHODS`` below (a tiny model from Python, and a recipe with small overrides for the command line)."""

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

import lightning_ebm.methods as methods
from lightning_ebm.methods import EBMModule
from tests.conftest import DEBUG, ROOT, TINY, run_cli, run_dirs
from tests.methods import (
    test_alternating_backprop,
    test_contrastive_divergence,
    test_coopnets,
    test_generative_convnet,
    test_generative_gradient,
    test_multigrid,
)
from tests.probes import SyncProbe

RECIPES = ROOT / "conf" / "experiments"
TONES = "tones"  # placeholder in a command line for the folder of generated sounds


def sounds(folder: Path) -> Path:
    """Four 0.27 s tones at 11,025 Hz, one WAV file each."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(3000) / 11025
    for i, freq in enumerate((220, 330, 440, 660)):
        soundfile.write(folder / f"tone{i}.wav", 0.5 * np.sin(2 * np.pi * freq * t), 11025)
    return folder


def recipe(name: str, options: str = "") -> list[str]:
    """``--config <recipe>`` and whitespace-separated overrides."""
    return ["--config", str(RECIPES / f"{name}.yaml"), *options.split()]


# name: (a tiny model, the command line of a 2-step fit of a recipe)
METHODS = {
    "GenerativeConvNet": (
        test_generative_convnet.make_model,
        # 2 chains, then new ones from U[-1, 1]: repeated chains would stand out as near copies
        [*recipe("texture", "--model.chain_init=uniform --model.init_args.fresh_steps=3"), *TINY],
    ),
    "ContrastiveDivergence": (
        test_contrastive_divergence.make_model,
        [*recipe("cd_texture", "--model.init_args.fresh_steps=3"), *TINY],
    ),
    "CoopNets": (test_coopnets.make_model, recipe("coopnets_digits", "--model.n_chains=8 --data.batch_size=8")),
    "MultigridMCD": (
        test_multigrid.make_model,
        recipe("multigrid_digits", "--data.batch_size=8 --model.langevin_steps=2 --model.descriptor.width=0.1"),
    ),
    "GenerativeGradient": (
        test_generative_gradient.make_model,
        recipe("generative_gradient_digits", "--model.hmc_steps=2 --data.batch_size=16"),
    ),
    "AlternatingBackprop": (  # a 1-D model: sounds (1, T) from an 8-number latent (1000 / 5^3)
        test_alternating_backprop.make_model,
        recipe(
            "abp_sound",
            f"--data.root={TONES} --data.clip_length=1000 --data.batch_size=4 --data.val_fraction=0.5 "
            "--model.generator.channels=[8,4] --model.generator.factor=5 --model.generator_steps=2",
        ),
    ),
}

CLASSES = [
    name
    for name in methods.__all__
    if isinstance(getattr(methods, name), type)
    and issubclass(getattr(methods, name), EBMModule)
    and getattr(methods, name) is not EBMModule
]


def test_every_method_has_a_contract_entry():
    missing = sorted(set(CLASSES) - set(METHODS))
    assert not missing, f"add a tiny model and a recipe command line for {missing} to METHODS"


def tiny(name: str) -> EBMModule:
    model = METHODS[name][0]()
    assert type(model) is getattr(methods, name)
    return model


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """``fitted(name)``: the run directory of a 2-step CLI fit of the method's recipe (made once per module)."""
    runs: dict[str, Path] = {}

    def fit(name: str) -> Path:
        if name not in runs:
            root = tmp_path_factory.mktemp(name)
            tones = str(sounds(root / "tones"))
            args = [a.replace(f"={TONES}", f"={tones}") for a in METHODS[name][1]]
            args += ["--config", DEBUG, "--trainer.max_steps=2", "--trainer.log_every_n_steps=2"]
            cli = run_cli("fit", *args, "--trainer.callbacks+=tests.probes.SyncProbe", root=root / "runs")
            (runs[name],) = run_dirs(root / "runs")
            fit.reads[name] = next(c for c in cli.trainer.callbacks if isinstance(c, SyncProbe)).reads
        return runs[name]

    fit.reads = {}  # name: values read back from the device per training step (SyncProbe)
    return fit


def draws(model: EBMModule, n: int, mode: str) -> torch.Tensor:
    modes = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad, "neither": torch.enable_grad}
    with modes[mode]():
        return model.sample(n, rng=torch.Generator(device=model.device).manual_seed(3))


def check_samples(model: EBMModule, n: int = 5) -> None:
    """``sample(n)``: its shape, finite, in [-1, 1], detached, the same in every grad mode, no gradient touched."""
    marks = {p: torch.full_like(p, 0.5) for p in list(model.parameters())[::2]}  # half have a .grad, half none
    for p, mark in marks.items():
        p.grad = mark.clone()
    results = {mode: draws(model, n, mode) for mode in ("neither", "no_grad", "inference_mode")}
    x = results["neither"]
    assert x.shape == (n, *model.sample_shape)
    assert torch.isfinite(x).all() and x.abs().max() <= 1
    assert not x.requires_grad and x.grad_fn is None
    for mode, other in results.items():
        torch.testing.assert_close(other, x, msg=f"sample() under {mode} differs from sample() with grad on")
    for p in model.parameters():
        if p in marks:
            assert torch.equal(p.grad, marks[p]), "sample() changed a parameter's .grad"
        else:
            assert p.grad is None, "sample() left a .grad on a parameter"


@pytest.mark.parametrize("name", CLASSES)
def test_sample_keeps_the_contract_before_training(name):
    check_samples(tiny(name))


@pytest.mark.parametrize("name", CLASSES)
def test_sample_stages_end_with_the_samples(name):
    model = tiny(name)
    stages = model.sample_stages(4, rng=torch.Generator().manual_seed(1))
    final = list(stages.values())[-1]
    torch.testing.assert_close(final, model.sample(4, rng=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("name", CLASSES)
def test_checkpoint_round_trips_with_weights_only(name, fitted):
    ckpt = fitted(name) / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    model = getattr(methods, name).load_from_checkpoint(ckpt, weights_only=True)
    assert model.checkpoint_step == saved["global_step"] == 2
    state = model.state_dict()
    assert state.keys() == saved["state_dict"].keys()
    for key, value in saved["state_dict"].items():
        assert torch.equal(state[key], value), key
    check_samples(model)  # and a trained model keeps the sampling contract


def near_copies(samples: torch.Tensor, threshold: float = 0.99) -> list[tuple[int, int, float]]:
    """Pairs of samples ``(N, ...)`` whose centred correlation exceeds ``threshold``."""
    flat = samples.flatten(1).double()
    flat = flat - flat.mean(1, keepdim=True)
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    corr = flat @ flat.T
    n = len(samples)
    return [(i, j, float(corr[i, j])) for i in range(n) for j in range(i) if corr[i, j] > threshold]


@pytest.mark.parametrize("name", CLASSES)
def test_validate_test_and_predict_through_the_cli(name, fitted):
    run = fitted(name)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    root = run.parent.parent
    for command in ("validate", "test"):
        cli = run_cli(command, "--ckpt_path", ckpt, "--trainer.logger=false", root=root)
        stage = "val" if command == "validate" else "test"
        metrics = {k: v for k, v in cli.trainer.callback_metrics.items() if k.startswith(f"{stage}/")}
        assert metrics and all(math.isfinite(float(v)) for v in metrics.values()), (command, metrics)

    n = 7  # more than the persistent chains or kept starts of any tiny recipe
    run_cli("predict", "--ckpt_path", ckpt, "--trainer.logger=false", f"--data.n_predict={n}", root=root)
    (folder,) = run.glob("predict-*/predictions")
    samples = torch.load(folder / "samples_rank0.pt", weights_only=True)
    model = getattr(methods, name).load_from_checkpoint(ckpt, weights_only=True)
    assert samples.shape == (n, *model.sample_shape) and samples.abs().max() <= 1
    if len(model.sample_shape) == 2:  # sounds (C, T): WAV files at the data's rate
        files = sorted(folder.glob("sample_*.wav"))
        assert len(files) == n and not list(folder.glob("sample_*.png"))
        sound, rate = soundfile.read(files[0])
        assert rate == 11025 and sound.shape == (model.sample_shape[1],)
    else:
        files = sorted(folder.glob("sample_*.png"))
        assert len(files) == n
        c, h, w = model.sample_shape
        assert np.asarray(Image.open(files[0])).shape == ((h, w) if c == 1 else (h, w, c))
        with Image.open(folder / "grid_rank0.png") as grid:  # readable at its natural size
            assert min(grid.size) >= 256
    assert not near_copies(samples), f"{name}: predict gave copies of one sample: {near_copies(samples)}"


@pytest.mark.parametrize("name", CLASSES)
def test_a_training_step_that_logs_nothing_never_waits_for_the_device(name, fitted):
    """Between logging steps an iteration only queues work: its finiteness checks stay on the device (a divergence is
    raised at the next logging step or save) and its diagnostics are measured only when logged. On a GPU every
    value read back (``.item()``, ``bool(t)``) would stall the queue. Step 0 does not log (every 2 steps), step 1
    does and may read."""
    fitted(name)
    reads = fitted.reads[name]
    assert set(reads) == {0, 1}
    assert reads[0] == 0
