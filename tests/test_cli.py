"""The command line as a user runs it: help, configs that stack, the run directory, every subcommand."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from PIL import Image

from lightning_ebm.errors import ResumedElsewhereWarning, UsageError
from lightning_ebm.methods import DivergenceError
from tests.conftest import DEBUG, ROOT, TEXTURE, TINY, run_cli, run_dirs

RECIPES = sorted(str(p) for p in (ROOT / "conf" / "experiments").glob("*.yaml"))
PRESETS = sorted(str(p) for p in (ROOT / "conf" / "trainer").glob("*.yaml"))


def test_help_runs_from_the_shell():
    out = subprocess.run([sys.executable, "-m", "lightning_ebm", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert all(sub in out.stdout for sub in ("fit", "validate", "test", "predict"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: Path(p).stem)
@pytest.mark.parametrize("preset", [None, *PRESETS], ids=lambda p: "alone" if p is None else Path(p).stem)
def test_every_recipe_parses_alone_and_with_every_preset(recipe, preset, capsys):
    stacked = ["--config", recipe] + (["--config", preset] if preset else [])
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", *stacked, "--print_config", root=Path("runs"))
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: lightning_ebm.methods." in printed and "class_path: datamodules." in printed


def test_print_config_and_model_help(capsys):
    with pytest.raises(SystemExit):
        run_cli("fit", "--config", TEXTURE, "--print_config", root=Path("runs"))
    printed = capsys.readouterr().out
    assert "langevin_steps: 30" in printed and "lightning_ebm.nets.TextureDescriptor" in printed
    with pytest.raises(SystemExit):
        run_cli("fit", "--model.help", "GenerativeConvNet", root=None)
    assert "--model.langevin_step_size" in capsys.readouterr().out


def test_unknown_key_fails_before_any_work(tmp_path):
    with pytest.raises(UsageError, match=r"GenerativeConvNet takes no option 'langevin_stepsize'.*langevin_step_size"):
        run_cli("fit", "--config", TEXTURE, "--model.langevin_stepsize=0.1", root=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_interpolation_follows_command_line_overrides(tmp_path, capsys):
    recipe = tmp_path / "tied.yaml"
    recipe.write_text(
        Path(TEXTURE)
        .read_text()
        .replace("chain_init: zeros", "chain_init: zeros\n    sample_steps: ${.langevin_steps}")
    )
    with pytest.raises(SystemExit):
        run_cli("fit", "--config", str(recipe), "--model.langevin_steps=7", "--print_config", root=tmp_path)
    printed = capsys.readouterr().out
    assert "sample_steps: 7" in printed and "langevin_steps: 7" in printed


def test_fit_then_validate_test_predict_from_the_checkpoint(tmp_path, capsys):
    """The inference-mode trap: validate/test/predict run under torch.inference_mode in one process."""
    root = tmp_path / "out"
    cli = run_cli("fit", "--config", TEXTURE, "--config", DEBUG, *TINY, root=root)
    assert cli.trainer.global_step == 4
    (run,) = run_dirs(root)
    assert run.parent == root / "texture"  # <root>/<recipe>/<time>
    assert (run / "checkpoints" / "last.ckpt").is_file() and list((run / "samples").glob("step_*.png"))
    ckpt = str(run / "checkpoints" / "last.ckpt")

    for subcommand, stage in (("validate", "val"), ("test", "test")):
        cli = run_cli(subcommand, "--ckpt_path", ckpt, "--trainer.logger=false", root=root)
        metrics = cli.trainer.callback_metrics
        assert torch.isfinite(metrics[f"{stage}/f_data"]) and f"{stage}/energy_gap" in metrics
        assert "the checkpoint of step 4" in capsys.readouterr().err  # not the trainer's step 0
        assert cli.model.checkpoint_step == 4

    with pytest.raises(UsageError, match=r"has 2 distinct chain\(s\).*Ask for at most 2"):  # not 6 copies of 2
        run_cli("predict", "--ckpt_path", ckpt, "--trainer.logger=false", "--data.n_predict=6", root=root)
    assert not list(run.glob("predict-*"))  # the refused command left nothing behind
    run_cli("predict", "--ckpt_path", ckpt, "--trainer.logger=false", root=root)  # the recipe's n_predict: 2
    (predicted,) = run.glob("predict-*/predictions")
    samples = torch.load(predicted / "samples_rank0.pt", weights_only=True)
    assert samples.shape == (2, 1, 16, 16) and samples.min() >= -1 and samples.max() <= 1
    assert len(list(predicted.glob("sample_*.png"))) == 2 and (predicted / "grid_rank0.png").is_file()


def test_configs_stack_and_default_root_dir_moves_everything(tmp_path):
    root = tmp_path / "elsewhere"
    run_cli("fit", "--config", TEXTURE, "--config", DEBUG, *TINY, "--trainer.max_steps=2", root=root)
    (run,) = run_dirs(root)
    written = {p.relative_to(run).parts[0] for p in run.rglob("*") if p.is_file()}
    assert written == {"config.yaml", "checkpoints", "samples"}
    assert not [p for p in Path.cwd().iterdir() if p.name not in ("elsewhere",)]  # nothing outside the root
    saved = (run / "config.yaml").read_text()
    assert "max_steps: 2" in saved and "logger: false" in saved and "channels:\n        - 8" in saved


def test_an_integer_batch_limit_is_a_number_of_batches_and_a_fraction_a_fraction(tmp_path):
    digits = str(ROOT / "conf" / "experiments" / "coopnets_digits.yaml")
    flags = ["--trainer.max_steps=2", "--trainer.limit_test_batches=0.5", "--trainer.limit_predict_batches=2"]
    cli = run_cli("fit", "--config", digits, "--config", DEBUG, "--data.batch_size=8", *flags, root=tmp_path)
    trainer = cli.trainer
    # the debug preset's `limit_val_batches: 1` is one batch (it read as 1.0, all of them, through typing's cache)
    assert type(trainer.limit_val_batches) is int and trainer.limit_val_batches == 1
    assert trainer.limit_test_batches == 0.5 and type(trainer.limit_predict_batches) is int


def test_fit_ckpt_path_last_continues_the_newest_run(tmp_path):
    root = tmp_path / "out"
    run_cli("fit", "--config", TEXTURE, "--config", DEBUG, *TINY, "--trainer.max_steps=2", root=root)
    (run,) = run_dirs(root)
    cli = run_cli("fit", "--config", TEXTURE, "--config", DEBUG, *TINY, "--ckpt_path=last", root=root)
    assert cli.trainer.global_step == 4
    assert run_dirs(root) == [run]  # the same run directory
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert len(list(run.glob("config*.yaml"))) == 2  # the first config is kept


def test_a_run_continued_past_max_steps_reads_the_rest_of_the_epoch(tmp_path):
    """fit 3 steps, then --ckpt_path last to 6: the batches of 6 straight steps, though an epoch is 56 batches (the
    final checkpoint is written within the epoch, not after Lightning's loop has counted it as completed)."""
    digits = str(ROOT / "conf" / "experiments" / "coopnets_digits.yaml")
    args = ["fit", "--config", digits, "--config", DEBUG, "--data.batch_size=8", "--model.n_chains=8"]
    args += ["--trainer.callbacks+=tests.probes.IndexProbe"]

    def indices(*more: str, root: Path) -> list[int]:
        cli = run_cli(*args, *more, root=root)
        return torch.load(Path(cli.trainer.default_root_dir) / "indices_rank0.pt").tolist()

    straight = indices("--trainer.max_steps=6", root=tmp_path / "straight")
    first = indices("--trainer.max_steps=3", root=tmp_path / "resumed")
    again = indices("--trainer.max_steps=6", "--ckpt_path=last", root=tmp_path / "resumed")
    assert first + again == straight and len(straight) == 48


def test_a_resume_with_more_chains_continues_every_saved_chain_and_says_so(tmp_path):
    root = tmp_path / "out"
    run_cli(
        "fit", "--config", TEXTURE, "--config", DEBUG, *TINY, "--model.n_chains=2", "--trainer.max_steps=2", root=root
    )
    (run,) = run_dirs(root)
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["ebm_state"]["bank.chains"][0]
    more = [*TINY, "--model.n_chains=3", "--trainer.max_steps=2", "--ckpt_path=last"]
    with pytest.warns(
        ResumedElsewhereWarning,
        match=r"holds other numbers of chains than this run asks for: .*the 2 saved chains \(2 per process x 1 "
        r"process\) .* 3 per process to 1 process \(1 of them continue",
    ):
        cli = run_cli("fit", "--config", TEXTURE, "--config", DEBUG, *more, root=root)
    assert torch.equal(cli.model.chains.get()[[0, 1, 2]], saved[[0, 1, 0]])  # no step taken: dealt out, cycling


def test_divergence_keeps_the_last_good_checkpoint_and_says_what_to_lower(tmp_path):
    root = tmp_path / "out"
    run_cli("fit", "--config", TEXTURE, "--config", DEBUG, *TINY, "--trainer.max_steps=2", root=root)
    (run,) = run_dirs(root)
    last = run / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    with pytest.raises(DivergenceError, match=r"training step 2.*langevin_step_size=1e\+06.*lr=0.001\b"):
        run_cli(
            "fit",
            "--ckpt_path",
            str(last),
            "--model.langevin_step_size=1e6",
            "--trainer.max_steps=6",
            "--trainer.logger=false",
            root=root,
        )
    assert last.read_bytes() == good
    assert {p.parent for p in run_dirs(root)} == {root / "texture"}  # the resumed run is filed under its recipe
    for ckpt in root.rglob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values())


def test_texture_by_path(tmp_path, texture_file):
    root = tmp_path / "out"
    cli = run_cli("fit", "--config", TEXTURE, "--config", DEBUG, *TINY, f"--data.textures={texture_file}", root=root)
    assert cli.datamodule.files == [texture_file]
    with pytest.raises(UsageError, match=r"no_such\.png"):
        run_cli("fit", "--config", TEXTURE, "--config", DEBUG, "--data.textures=./no_such.png", root=root)


def test_wandb_logger_is_the_default_offline_and_gets_uint8_images(tmp_path, monkeypatch):
    """No credentials here: the default wandb logger runs offline, under the run directory; a failed run before it
    in the same process does not swallow it."""
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    common = ["--config", TEXTURE, *TINY, "--trainer.max_steps=2", "--trainer.enable_progress_bar=false"]
    with pytest.raises(DivergenceError):
        run_cli("fit", *common, "--model.langevin_step_size=1e6", root=tmp_path / "failed")
    cli = run_cli("fit", *common, root=tmp_path / "good")
    assert os.environ["WANDB_MODE"] == "offline"
    run = Path(cli.trainer.default_root_dir)
    images = list(run.glob("wandb/offline-run-*/files/media/images/samples_*.png"))
    assert images, sorted(str(p) for p in run.rglob("*"))
    pixels = np.asarray(Image.open(images[0]))
    assert pixels.dtype == np.uint8 and pixels.std() > 0  # real pixels, not the all-black float images
    assert list(run.glob("wandb/offline-run-*/run-*.wandb"))


@pytest.fixture
def data_roots(tmp_path) -> dict[str, str]:
    """Tiny stand-ins for the data that recipes point at: a folder of images, CIFAR-10 batches, an ImageNet tree,
    a sound file."""
    from tests.datamodules.test_image_sets import WNIDS, photo, write_cifar, write_variants

    (tmp_path / "scene").mkdir()
    for i in range(6):
        photo(i, size=(80, 72)).save(tmp_path / "scene" / f"{i}.jpg")
    write_cifar(tmp_path / "cifar" / "cifar-10-batches-py", per_batch=4)
    for k, wnid in enumerate(WNIDS):
        write_variants(tmp_path / "imagenet" / "train" / wnid, 10 * k)
    (tmp_path / "sounds").mkdir()
    t = np.arange(11025) / 11025
    soundfile.write(tmp_path / "sounds" / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 11025)
    return {
        "ImageFolderDataModule": str(tmp_path / "scene"),
        "Cifar10DataModule": str(tmp_path / "cifar"),
        "AudioDataModule": str(tmp_path / "sounds"),
        "ImageNetDataModule": str(tmp_path / "imagenet"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: Path(p).stem)
def test_every_recipe_starts_on_the_cpu(recipe, tmp_path, data_roots):
    """Paper-scale recipes are for GPUs; a short run of each must still work here (on stand-in data where the
    recipe points at a dataset on disk, with fewer chains)."""
    text = Path(recipe).read_text()
    extra = [f"--data.root={root}" for name, root in data_roots.items() if f"datamodules.{name}" in text]
    if recipe.endswith("_paper.yaml"):
        n_chains = yaml.safe_load(text)["model"]["init_args"].get("n_chains", 0)
        extra += ["--model.n_chains=4"] if n_chains > 36 else []  # 36 are cheap; fewer would refuse the 6x6 grid
        extra += ["--data.batch_size=4"]
        if "datamodules.ImageNetDataModule" in text:  # 224x224 through an AlexNet-depth net: minutes on the CPU
            extra += ["--data.image_size=64", "--data.resize=72"]
            if "categories:" in text:  # the recipe's category may not be in the stand-in tree
                from tests.datamodules.test_image_sets import WNIDS

                extra += [f"--data.categories=[{next(iter(WNIDS))}]"]
    cli = run_cli(
        "fit",
        "--config",
        recipe,
        "--config",
        DEBUG,
        "--trainer.max_steps=2",
        *[f"--model.{key}=2" for key in ("langevin_steps", "generator_steps", "hmc_steps") if key in text],
        *extra,
        root=tmp_path / "out",
    )
    assert cli.trainer.global_step == 2
    (run,) = run_dirs(tmp_path / "out")
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_wandb_run_keeps_its_id_across_a_resume_and_gets_the_resolved_config(tmp_path):
    """A resumed (or requeued) run continues the same wandb run; the run's config is the resolved one."""
    from lightning_ebm.cli import wandb_run_id

    common = ["--config", TEXTURE, *TINY, "--trainer.enable_progress_bar=false"]
    first = run_cli("fit", *common, "--trainer.max_steps=2", root=tmp_path)
    uploaded = dict(first.trainer.logger.experiment.config)
    assert uploaded["model"]["class_path"] == "lightning_ebm.methods.GenerativeConvNet"
    assert uploaded["model"]["init_args"]["langevin_steps"] == 3 and uploaded["trainer"]["max_steps"] == 2
    run_cli("fit", *common, "--trainer.max_steps=4", "--ckpt_path=last", root=tmp_path)
    (run,) = run_dirs(tmp_path)
    offline = sorted(run.glob("wandb/offline-run-*"))
    assert len(offline) == 2 and all(wandb_run_id(run) in p.name for p in offline)  # "-1" added within a second
    # a sweep agent's run id wins; the agent starts a new process for every run, with WANDB_RUN_ID set
    env = {**os.environ, "WANDB_RUN_ID": "agent-chosen", "WANDB_MODE": "offline"}
    env.pop("LIGHTNING_EBM_RUN_DIR", None)
    cmd = [sys.executable, "-m", "lightning_ebm", "fit", *common, "--trainer.max_steps=1"]
    cmd.append(f"--trainer.default_root_dir={tmp_path / 'agent'}")
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (offline,) = (tmp_path / "agent").glob("*/*/wandb/offline-run-*")
    assert offline.name.endswith("-agent-chosen")
