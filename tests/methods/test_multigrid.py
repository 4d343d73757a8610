"""Multi-grid minimal contrastive divergence against the published update, and what a run relies on."""

import copy
from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from lightning_ebm.methods import MultigridMCD
from lightning_ebm.methods.multigrid import pool_to, replicate_to
from lightning_ebm.nets import MultigridDescriptor


def make_model(**kwargs) -> MultigridMCD:
    args = {
        "descriptor": partial(MultigridDescriptor, width=0.05),
        "grids": (2, 4, 16),
        "sample_shape": (1, 16, 16),
        "langevin_steps": 3,
        "langevin_step_size": 0.05,
        "n_starts": 6,
        "optimizer": partial(torch.optim.SGD, lr=0.01),
    }
    return MultigridMCD(**{**args, **kwargs})


IMAGES = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


def data(batch_size: int = 4) -> DataLoader:
    """Fixed batches of the eight images, in order."""
    return DataLoader(IMAGES, batch_size=batch_size)


def trainer(tmp_path, max_steps, **kwargs) -> Trainer:
    args = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "limit_val_batches": 0}
    return Trainer(max_steps=max_steps, default_root_dir=tmp_path, **{**args, **kwargs})


def test_pooling_is_block_averaging_and_replication_its_right_inverse():
    x = torch.randn(3, 2, 16, 16)
    assert torch.allclose(pool_to(x, 4)[:, :, 1, 2], x[:, :, 4:8, 8:12].mean((-2, -1)))
    assert torch.allclose(pool_to(x, 1), x.mean((-2, -1), keepdim=True))
    coarse = torch.randn(3, 2, 4, 4)
    fine = replicate_to(coarse, 16)
    assert fine.shape == (3, 2, 16, 16) and torch.equal(
        fine[:, :, 4:8, 8:12], coarse[:, :, 1:2, 2:3].expand(-1, -1, 4, 4)
    )
    torch.testing.assert_close(pool_to(fine, 4), coarse)


def test_chains_start_from_the_mean_of_a_training_image_and_pass_through_every_grid():
    model = make_model(langevin_steps=0)
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    grids = model.synthesize(pool_to(x, 1))
    assert [g.shape[-1] for g in grids] == [2, 4, 16]
    for g in grids:  # no Langevin step: every grid is the flat mean of its training image
        torch.testing.assert_close(g, x.mean((-2, -1), keepdim=True).expand_as(g))


def test_one_iteration_is_the_published_update(tmp_path):
    """Each grid k: θ_k −= lr ∇θ_k [mean f_k(x̃_k) − mean f_k(Q_k x)], x̃ from the 1×1 start through grids 2, 4, 16."""
    torch.manual_seed(0)
    model = make_model()
    reference = copy.deepcopy(model)
    trainer(tmp_path, 1).fit(model, data())

    x = IMAGES[:4]
    synthesized = reference.synthesize(pool_to(x, 1))
    for side, net, new_net, syn in zip((2, 4, 16), reference.descriptors, model.descriptors, synthesized):
        loss = net(syn).mean() - net(pool_to(x, side)).mean()
        grads = torch.autograd.grad(loss, list(net.parameters()))
        for p, old, grad in zip(new_net.parameters(), net.parameters(), grads):
            torch.testing.assert_close(p, old - 0.01 * grad, rtol=1e-4, atol=1e-6)
        assert any(g.abs().sum() > 0 for g in grads)  # every grid learned something


def test_each_grid_has_its_own_optimiser_and_max_steps_counts_iterations(tmp_path):
    model = make_model(optimizer=torch.optim.Adam)
    t = trainer(tmp_path, 3)
    t.fit(model, data())
    assert t.global_step == 3 and len(t.optimizers) == 3
    for opt, net in zip(t.optimizers, model.descriptors):
        assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in net.parameters()}
        assert all(state["step"] == 3 for state in opt.state.values())


def test_langevin_options_follow_the_paper_by_default_and_the_released_code_on_request(tmp_path):
    paper = MultigridMCD(sample_shape=(3, 64, 64))
    assert (paper.hparams.langevin_steps, paper.hparams.langevin_noise, paper.hparams.langevin_clip) == (30, True, None)
    assert paper.hparams.grids == (4, 16, 64) and [n.sample_shape[-1] for n in paper.descriptors] == [4, 16, 64]
    code = make_model(langevin_noise=False, langevin_clip=(-1.0, 1.0), langevin_sigma=float("inf"), sample_steps=40)
    x = torch.full((2, 1, 1, 1), 0.99)
    a, b = code.sample(2, start=x, rng=torch.Generator().manual_seed(1)), code.sample(2, start=x)
    torch.testing.assert_close(a, b)  # no noise: deterministic
    assert a.max() <= 1


def test_samples_show_every_grid_and_start_from_seen_training_images(tmp_path):
    model = make_model(sample_steps=0)
    stages = model.sample_stages(5)
    assert list(stages) == ["1x1", "2x2", "4x4", "16x16"] and stages["16x16"].shape == (5, 1, 16, 16)
    assert torch.equal(stages["1x1"], torch.zeros(5, 1, 1, 1))  # before training: the middle of [-1, 1]
    trainer(tmp_path, 2).fit(model, data())
    kept = model.starts.get()
    assert kept.shape == (6, 1, 1, 1)
    seen = {round(v, 5) for v in kept.flatten().tolist()}
    starts = model.sample(7)[:, 0, 0, 0]  # no Langevin step: the flat image of a kept training mean
    assert {round(v, 5) for v in starts.tolist()} <= seen
    given = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(model.sample(2, start=given), given.mean((-2, -1), keepdim=True).expand(2, 1, 16, 16))


def test_checkpoint_loads_alone_and_resumes_exactly(tmp_path):
    kwargs = {"optimizer": torch.optim.Adam}
    torch.manual_seed(0)
    straight = make_model(**kwargs)
    trainer(tmp_path / "a", 4).fit(straight, data(8))  # one batch per epoch: resumes at an epoch's end
    torch.manual_seed(0)
    first = make_model(**kwargs)
    t = trainer(tmp_path / "b", 2)
    t.fit(first, data(8))
    t.save_checkpoint(tmp_path / "half.ckpt")
    loaded = MultigridMCD.load_from_checkpoint(tmp_path / "half.ckpt")
    assert loaded.grids == [2, 4, 16] and torch.equal(loaded.starts.get(), first.starts.get())
    torch.manual_seed(99)
    resumed = make_model(**kwargs)
    trainer(tmp_path / "c", 4).fit(resumed, data(8), ckpt_path=tmp_path / "half.ckpt")
    assert resumed.global_step == 4 and torch.equal(straight.starts.get(), resumed.starts.get())
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grids": (4, 8)}, r"set the data's image_size to 8 or end grids at 16"),
        ({"grids": (3, 16)}, r"divisible by it"),
        ({"grids": (8, 4, 16)}, r"larger than the one before"),
    ],
)
def test_bad_grids_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_model(**kwargs)


def test_recipe_fit_validate_predict_through_the_cli(tmp_path):
    from tests.conftest import DEBUG, ROOT, run_cli, run_dirs

    recipe = str(ROOT / "conf" / "experiments" / "multigrid_digits.yaml")
    small = ["--data.batch_size=8", "--trainer.max_steps=3", "--model.langevin_steps=2", "--model.descriptor.width=0.1"]
    cli = run_cli("fit", "--config", recipe, "--config", DEBUG, *small, root=tmp_path)
    assert cli.trainer.global_step == 3
    (run,) = run_dirs(tmp_path)
    assert next((run / "samples").glob("*.png")).stat().st_size > 0
    ckpt = str(run / "checkpoints" / "last.ckpt")
    metrics = run_cli("validate", "--ckpt_path", ckpt, "--trainer.logger=false", root=tmp_path).trainer.callback_metrics
    assert {"val/energy_gap", "val/energy_gap_4x4", "val/recon"} <= set(metrics)
    run_cli("predict", "--ckpt_path", ckpt, "--trainer.logger=false", "--data.n_predict=5", root=tmp_path)
    samples = torch.load(next(run.glob("predict-*/predictions/samples_rank0.pt")), weights_only=True)
    assert samples.shape == (5, 1, 16, 16) and samples.abs().max() <= 1
