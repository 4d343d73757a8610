"""Alternating back-propagation against the published update, with its per-example latents."""

import copy
from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from lightning_ebm.methods import AlternatingBackprop
from lightning_ebm.nets import SceneGenerator
from lightning_ebm.samplers import LatentBank

IMAGES = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


def make_model(**kwargs) -> AlternatingBackprop:
    args = {
        "generator": partial(SceneGenerator, z_dim=3, channels=(8, 4), activation=torch.nn.ReLU),
        "sample_shape": (1, 16, 16),
        "generator_steps": 4,
        "generator_step_size": 0.1,
        "optimizer": partial(torch.optim.SGD, lr=0.01),
    }
    return AlternatingBackprop(**{**args, **kwargs})


def data(batch_size: int = 4, mask: torch.Tensor | None = None) -> DataLoader:
    """The eight images as dict batches with their dataset indices (and a mask), in order."""
    items = [{"image": IMAGES[i], "index": i} for i in range(len(IMAGES))]
    if mask is not None:
        items = [{**item, "mask": mask[i]} for i, item in enumerate(items)]
    return DataLoader(items, batch_size=batch_size)


def trainer(tmp_path, max_steps, **kwargs) -> Trainer:
    args = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "limit_val_batches": 0}
    return Trainer(max_steps=max_steps, default_root_dir=tmp_path, **{**args, **kwargs})


def test_latent_bank_gives_each_example_the_same_start_in_any_order():
    a, b = LatentBank((2, 3)), LatentBank((2, 3))
    first = a.get(torch.tensor([5, 2000]))
    second = b.get(torch.tensor([2000, 7, 5]))
    torch.testing.assert_close(first, second[[2, 0]])
    assert LatentBank((4,), "zeros").get(torch.tensor([3])).abs().sum() == 0
    a.set(torch.tensor([5]), torch.ones(1, 2, 3))
    assert torch.equal(a.get(torch.tensor([5])), torch.ones(1, 2, 3))
    restored = LatentBank((2, 3))
    restored.restore(a.rank_state().unsqueeze(0).repeat(2, 1, 1, 1), rank=1, world_size=3)
    assert torch.equal(restored.get(torch.tensor([5, 2000])), a.get(torch.tensor([5, 2000])))
    with pytest.raises(ValueError, match="indices must be >= 0"):
        a.get(torch.tensor([-1]))


def test_one_iteration_is_the_published_update(tmp_path):
    """z ← Langevin on log p(x, z) from the example's stored latent (parameters untouched), then one step of
    α −= lr ∇α mean Σ (x − g(z))² / (2s²), and the inferred z is stored for the example."""
    torch.manual_seed(0)
    model = make_model()
    reference = copy.deepcopy(model)
    trainer(tmp_path, 1).fit(model, data())

    x, index = IMAGES[:4], torch.arange(4)
    z = reference.infer_latent(x, reference.latents.get(index))
    loss = reference.reconstruction_loss(x, z, None)
    params = list(reference.generator.parameters())
    grads = torch.autograd.grad(loss, params)
    for p, old, grad in zip(model.generator.parameters(), params, grads):
        torch.testing.assert_close(p, old - 0.01 * grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.latents.get(index), z)
    torch.testing.assert_close(model.latents.get(torch.arange(4, 8)), reference.latents.get(torch.arange(4, 8)))


def test_latents_are_warm_started_across_epochs(tmp_path):
    model = make_model()
    calls = []
    original = model.infer_latent

    def spy(x, z, **kwargs):
        out = original(x, z, **kwargs)
        calls.append((z.clone(), out.clone()))
        return out

    model.infer_latent = spy
    trainer(tmp_path, 4).fit(model, data())  # two epochs of two batches: indices 0-3, 4-7, 0-3, 4-7
    assert torch.equal(calls[2][0], calls[0][1]) and torch.equal(calls[3][0], calls[1][1])  # not redrawn


def test_hidden_pixels_change_nothing_and_are_scored_as_recovery(tmp_path):
    mask = torch.ones_like(IMAGES)
    mask[:, :, 4:10, 4:10] = 0
    runs = []
    for fill in (0.0, 0.9):
        torch.manual_seed(0)
        model = make_model()
        images = IMAGES.clone()
        images[mask == 0] = fill
        items = [{"image": images[i], "index": i, "mask": mask[i]} for i in range(8)]
        trainer(tmp_path / str(fill), 2).fit(model, DataLoader(items, batch_size=4))
        runs.append(model)
    for a, b in zip(runs[0].parameters(), runs[1].parameters()):
        torch.testing.assert_close(a, b)
    metrics = runs[0].evaluate(IMAGES[:4], mask=mask[:4])
    assert set(metrics) == {"recon_error", "recovery_error"} and torch.isfinite(metrics["recovery_error"])


def test_checkpoint_resumes_exactly_with_the_latents(tmp_path):
    torch.manual_seed(0)
    straight = make_model(optimizer=torch.optim.Adam)
    trainer(tmp_path / "a", 4).fit(straight, data(8))
    torch.manual_seed(0)
    first = make_model(optimizer=torch.optim.Adam)
    t = trainer(tmp_path / "b", 2)
    t.fit(first, data(8))
    t.save_checkpoint(tmp_path / "half.ckpt")
    loaded = AlternatingBackprop.load_from_checkpoint(tmp_path / "half.ckpt")
    assert torch.equal(loaded.latents.get(torch.arange(8)), first.latents.get(torch.arange(8)))
    torch.manual_seed(99)
    resumed = make_model(optimizer=torch.optim.Adam)
    trainer(tmp_path / "c", 4).fit(resumed, data(8), ckpt_path=tmp_path / "half.ckpt")
    assert torch.equal(straight.latents.get(torch.arange(8)), resumed.latents.get(torch.arange(8)))
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_batches_without_indices_are_refused(tmp_path):
    with pytest.raises(ValueError, match="dataset 'index'"):
        trainer(tmp_path, 1).fit(make_model(), DataLoader(IMAGES, batch_size=4))


def test_recipe_fit_validate_predict_through_the_cli(tmp_path):
    from tests.conftest import DEBUG, ROOT, run_cli, run_dirs

    recipe = str(ROOT / "conf" / "experiments" / "abp_faces.yaml")
    small = ["--data.batch_size=8", "--trainer.max_steps=3", "--model.generator_steps=2", "--data.image_size=16"]
    small += ["--model.generator.channels=[8, 4]"]
    cli = run_cli("fit", "--config", recipe, "--config", DEBUG, *small, root=tmp_path)
    assert cli.trainer.global_step == 3
    (run,) = run_dirs(tmp_path)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    metrics = run_cli("validate", "--ckpt_path", ckpt, "--trainer.logger=false", root=tmp_path).trainer.callback_metrics
    assert "val/recon_error" in metrics
    run_cli("predict", "--ckpt_path", ckpt, "--trainer.logger=false", "--data.n_predict=5", root=tmp_path)
    samples = torch.load(next(run.glob("predict-*/predictions/samples_rank0.pt")), weights_only=True)
    assert samples.shape == (5, 1, 16, 16) and samples.abs().max() <= 1


def test_sound_recipe_learns_from_generated_tones_and_writes_wav_files(tmp_path):
    import numpy as np
    import soundfile

    from tests.conftest import ROOT, run_cli, run_dirs

    sounds = tmp_path / "sounds"
    sounds.mkdir()
    t = np.arange(3000) / 11025
    for i, freq in enumerate((220, 330, 440, 660)):
        soundfile.write(sounds / f"tone{i}.wav", 0.5 * np.sin(2 * np.pi * freq * t), 11025)
    recipe = str(ROOT / "conf" / "experiments" / "abp_sound.yaml")
    small = [f"--data.root={sounds}", "--data.clip_length=1000", "--data.batch_size=4", "--trainer.max_steps=3"]
    small += ["--model.generator.channels=[8, 4]", "--model.generator_steps=2"]
    small += ["--trainer.enable_progress_bar=false"]  # and the default logger: wandb, offline here
    cli = run_cli("fit", "--config", recipe, *small, root=tmp_path / "out")
    assert cli.trainer.global_step == 3 and cli.model.generator.latent_shape == (1, 1)
    (run,) = run_dirs(tmp_path / "out")
    wavs = sorted((run / "audio").glob("*.wav"))
    assert len(wavs) == 4 and next((run / "audio").glob("*.png")).stat().st_size > 0
    sound, rate = soundfile.read(wavs[0])
    assert rate == 11025 and sound.shape == (1000,) and np.abs(sound).max() <= 1
    logged = list(run.glob("wandb/offline-run-*/files/media/audio/*.wav"))
    assert len(logged) == 4 and soundfile.read(logged[0])[0].shape == (1000,)

    # predict writes sounds as WAV files (it crashed writing a (1, T) waveform as a PNG)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    run_cli("predict", "--ckpt_path", ckpt, f"--data.root={sounds}", "--data.n_predict=3", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", root=tmp_path / "out")  # fmt: skip
    (predicted,) = run.glob("predict-*/predictions")
    wavs = sorted(predicted.glob("sample_*.wav"))
    assert len(wavs) == 3 and not list(predicted.glob("sample_*.png"))
    sound, rate = soundfile.read(wavs[0])
    assert rate == 11025 and sound.shape == (1000,) and np.abs(sound).max() <= 1
    assert (predicted / "grid_rank0.png").stat().st_size > 0
    assert torch.load(predicted / "samples_rank0.pt", weights_only=True).shape == (3, 1, 1000)


def test_inpainting_recipe_learns_from_occluded_faces_and_scores_the_recovery(tmp_path):
    from tests.conftest import DEBUG, ROOT, run_cli, run_dirs

    recipes = ["--config", str(ROOT / "conf" / "experiments" / "abp_inpainting.yaml")]
    small = ["--data.batch_size=8", "--trainer.max_steps=2", "--model.generator_steps=2", "--data.image_size=16"]
    small += ["--model.generator.channels=[8, 4]", "--data.occlusion.size=6"]
    run_cli("fit", *recipes, "--config", DEBUG, *small, root=tmp_path)
    (run,) = run_dirs(tmp_path)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    metrics = run_cli("validate", "--ckpt_path", ckpt, "--trainer.logger=false", root=tmp_path).trainer.callback_metrics
    assert torch.isfinite(metrics["val/recovery_error"]) and torch.isfinite(metrics["val/recon_error"])


def test_compressed_observations_are_all_the_method_sees_and_update_by_the_published_rule(tmp_path):
    """With y = A x: z ← Langevin on log p(y, z) for y = A g(z) + noise, then one step on Σ (y − A g(z))² / (2s²);
    images with the same block averages train the same generator."""
    from lightning_ebm.nets import BlockAverage

    observe = partial(BlockAverage, factor=4)
    torch.manual_seed(0)
    model = make_model(observation=observe)
    reference = copy.deepcopy(model)
    trainer(tmp_path / "a", 1).fit(model, data())
    x, index = IMAGES[:4], torch.arange(4)
    y = reference.observe(x)
    assert y.shape == (4, 1, 4, 4)
    z = reference.infer_latent(y, reference.latents.get(index), g=reference.observed_generate)
    grads = torch.autograd.grad(reference.reconstruction_loss(y, z, None), list(reference.generator.parameters()))
    for p, old, grad in zip(model.generator.parameters(), reference.generator.parameters(), grads):
        torch.testing.assert_close(p, old - 0.01 * grad, rtol=1e-4, atol=1e-6)

    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(8, 8) * 0.3  # zero mean in every 4x4 block
    same_view = DataLoader([{"image": IMAGES[i] + checker, "index": i} for i in range(8)], batch_size=4)
    torch.manual_seed(0)
    other = make_model(observation=observe)
    trainer(tmp_path / "b", 1).fit(other, same_view)
    for a, b in zip(model.parameters(), other.parameters()):
        torch.testing.assert_close(a, b)
    metrics = model.evaluate(IMAGES[4:])
    assert set(metrics) == {"recon_error", "observed_error"} and metrics["observed_error"] < metrics["recon_error"]


def test_a_mask_with_an_observation_operator_is_refused(tmp_path):
    from lightning_ebm.nets import RandomProjection

    model = make_model(observation=partial(RandomProjection, ratio=0.5))
    with pytest.raises(ValueError, match="occluded or from indirect data, not both"):
        trainer(tmp_path, 1).fit(model, data(mask=torch.ones_like(IMAGES)))


def test_texture_recipe_learns_one_image_with_one_latent(tmp_path):
    from tests.conftest import DEBUG, ROOT, run_cli

    recipe = str(ROOT / "conf" / "experiments" / "abp_texture.yaml")
    small = ["--data.image_size=32", "--trainer.max_steps=3", "--model.generator_steps=2"]
    cli = run_cli("fit", "--config", recipe, "--config", DEBUG, *small, root=tmp_path)
    assert cli.trainer.global_step == 3 and cli.model.generator.latent_shape == (5, 2, 2)
    bank, first = cli.model.latents, torch.tensor([0])
    assert len(bank) == 1024 and not torch.equal(bank.get(first), LatentBank(bank.shape, seed=bank.seed).get(first))
    samples = cli.model.sample(2)
    assert samples.shape == (2, 1, 32, 32)
