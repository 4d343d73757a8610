"""ContrastiveDivergence: CD-k starts at the observed batch; PCD keeps a bank filled once from the data."""

import torch
from lightning.pytorch import Trainer

from datamodules import TextureDataModule
from lightning_ebm.methods import ContrastiveDivergence
from tests.conftest import tiny_model


def make_model(**kwargs) -> ContrastiveDivergence:
    return tiny_model(ContrastiveDivergence, **{"langevin_steps": 2, **kwargs})


def test_cd_starts_every_chain_at_the_observed_batch():
    model = make_model(langevin_noise=False)
    batch = torch.randn(4, 1, 16, 16)
    starts = []
    original = model.langevin
    model.langevin = lambda x0, **kw: (starts.append(x0.clone()), original(x0, **kw))[1]
    out = model.training_step(batch, 0)
    assert torch.equal(starts[0], batch)
    expected = original(batch)
    torch.testing.assert_close(out["loss"], model.score(expected).mean() - model.score(batch).mean())
    # CD-k keeps no chains, only the observed images (newest first) that samples start from
    assert torch.equal(model.chains.get(), batch[:3])


def test_cd_samples_start_at_distinct_kept_images():
    model = make_model(n_chains=3, sample_steps=0, fresh_steps=2)
    model.training_step(torch.randn(2, 1, 16, 16), 0)  # the bank holds 2 distinct images, cycled to 3 rows
    kept = model.chain_starts()
    assert kept.shape == (2, 1, 16, 16)
    samples = model.sample(4)
    torch.testing.assert_close(samples[:2], kept.clamp(-1, 1))  # 0 sample steps: the kept images themselves
    assert not any(torch.equal(samples[i], samples[j]) for i in range(4) for j in range(i))


def test_cd_zero_steps_gives_zero_loss_and_gradient():
    model = make_model(langevin_steps=0)
    out = model.training_step(torch.randn(3, 1, 16, 16), 0)
    out["loss"].backward()
    assert out["loss"].item() == 0
    assert all(p.grad.abs().max() == 0 for p in model.parameters())


def test_pcd_fills_the_bank_from_data_once_then_continues():
    model = make_model(persistent=True, n_chains=5)
    batch = torch.randn(2, 1, 16, 16)
    starts = []
    original = model.langevin
    model.langevin = lambda x0, **kw: (starts.append(x0.clone()), original(x0, **kw))[1]
    model.training_step(batch, 0)
    after = model.chains.get().clone()
    model.training_step(torch.randn(2, 1, 16, 16), 1)
    assert torch.equal(starts[0], batch[torch.tensor([0, 1, 0, 1, 0])])  # cycled to 5 chains
    assert torch.equal(starts[1], after)


def test_fit_sample_and_resume_with_the_bank(tmp_path):
    model = make_model(persistent=True, n_chains=3)
    dm = TextureDataModule("grass", image_size=16, batch_size=2)
    kw = {
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "limit_val_batches": 0,
    }
    t = Trainer(max_steps=2, default_root_dir=tmp_path, **kw)
    t.fit(model, dm)
    t.save_checkpoint(tmp_path / "pcd.ckpt")
    loaded = ContrastiveDivergence.load_from_checkpoint(tmp_path / "pcd.ckpt")
    assert loaded.hparams.persistent and torch.equal(loaded.chains.get(), model.chains.get())
    assert model.sample(3).shape == (3, 1, 16, 16)
    cd = make_model()
    Trainer(max_steps=1, default_root_dir=tmp_path, **kw).fit(cd, dm)
    assert cd.sample(1).shape == (1, 1, 16, 16)  # from the one distinct observed image kept (the whole image)
