"""Sample grids and chain animations are pictures to look at: enlarged, captioned, observed beside synthesized."""

import types

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from PIL import Image

from callbacks import ChainAnimation, SampleGrid
from callbacks.images import enlarge, to_uint8
from callbacks.sample_grid import RUN_DIR_ENV, caption_text, panel_names, run_title
from datamodules import TextureDataModule
from lightning_ebm.methods import GenerativeConvNet
from tests.conftest import tiny_model


def test_grids_from_step_0_are_enlarged_captioned_with_the_observed_images_and_the_chains_animated(tmp_path):
    grid = SampleGrid(every_n_steps=100, n_samples=2)
    chain = ChainAnimation(n_chains=2, n_steps=6, n_frames=3)
    model = tiny_model(GenerativeConvNet, n_chains=2, langevin_steps=2)
    trainer = Trainer(
        max_steps=2,
        default_root_dir=tmp_path,
        logger=False,
        callbacks=[grid, chain],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        limit_val_batches=0,
    )
    trainer.fit(model, TextureDataModule("brick", image_size=16))

    samples = tmp_path / "samples"
    assert sorted(p.name for p in samples.glob("*.png")) == ["step_0000000.png", "step_0000002.png"]
    picture = np.asarray(Image.open(samples / "step_0000002.png"))
    # one observed 16x16 image (batch 1) | two samples, each enlarged 16 times: 16 * 16 + 2 * 2 = 260 high
    assert picture.shape[1] == (256 + 4) + 12 + (2 * 258 + 2) and min(picture.shape) >= 256
    band = picture.shape[0] - 260
    assert band > 0 and (picture[:band] < 128).any()  # black text in the white band
    observed = enlarge(to_uint8(grid._observed[0]), 16)[0].numpy()
    np.testing.assert_array_equal(picture[band + 2 : band + 2 + 256, 2 : 2 + 256], observed)

    gif = Image.open(samples / "chain.gif")
    assert gif.n_frames == 2 and min(gif.size) >= 256  # the persistent chains after training steps 1 and 2


def test_the_final_model_s_chains_animated_from_where_its_sampling_starts(tmp_path):
    from lightning_ebm.methods import ContrastiveDivergence

    trainer = Trainer(max_steps=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    model = tiny_model(ContrastiveDivergence, n_chains=2, langevin_steps=2)
    with pytest.raises(ValueError, match="keeps none"):  # CD-k restarts its chains at the data
        ChainAnimation(source="training").setup(trainer, model, "fit")
    chain = ChainAnimation(n_chains=2, n_steps=6, n_frames=3)  # "auto": the final model's chains for CD-k
    chain.setup(trainer, model, "fit")
    model.training_step(torch.rand(2, 1, 16, 16) * 2 - 1, 0)  # keeps the 2 observed images it starts from
    trainer.strategy.connect(model)
    path = chain.write(trainer, model)
    assert path.name == "chain.gif" and Image.open(path).n_frames == 4  # Langevin steps 0, 2, 4, 6
    first = np.asarray(Image.open(path).convert("L"))
    assert first.shape[0] >= 256


def test_captions_name_the_panels_of_every_method():
    names, separators = panel_names(["generator", "descriptor"], observed=True)
    assert caption_text("coopnets_texture", 50, names, separators) == (
        "coopnets_texture - step 50: observed | proposal | revision"
    )
    names, separators = panel_names(["1x1", "4x4", "16x16"], observed=True)
    assert caption_text("multigrid_digits", 0, names, separators) == (
        "multigrid_digits - step 0: observed | 1x1 -> 4x4 -> 16x16"
    )
    assert panel_names(["samples"], observed=False) == (["synthesized"], [])


def test_the_caption_names_the_recipe_only_for_a_run_directory_the_cli_made(tmp_path, monkeypatch):
    from lightning_ebm.cli import RUN_DIR_ENV as CLI_RUN_DIR_ENV

    assert RUN_DIR_ENV == CLI_RUN_DIR_ENV
    run = tmp_path / "texture" / "20260101-000000"
    trainer = types.SimpleNamespace(default_root_dir=str(run))
    model = tiny_model(GenerativeConvNet)
    assert run_title(trainer, model) == "GenerativeConvNet"
    monkeypatch.setenv(RUN_DIR_ENV, str(run))
    assert run_title(trainer, model) == "texture"


def test_chain_animation_refuses_a_method_without_langevin_chains():
    with pytest.raises(ValueError, match=r"LightningModule has no Langevin sampler.*supports GenerativeConvNet"):
        ChainAnimation().setup(Trainer(logger=False), LightningModule(), "fit")
    with pytest.raises(ValueError, match="n_chains"):
        ChainAnimation(n_chains=0)
