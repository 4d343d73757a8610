"""CoopNets against the published MCMC-teaching update, and what a run relies on."""

import copy
from functools import partial

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from datamodules import TextureDataModule
from lightning_ebm.methods import CoopNets
from lightning_ebm.nets import ObjectDescriptor, SceneGenerator


def make_model(**kwargs) -> CoopNets:
    args = {
        "descriptor": partial(ObjectDescriptor, channels=(8, 8), kernel_sizes=(3, 3), strides=(2, 2), n_out=4),
        "generator": partial(SceneGenerator, z_dim=8, channels=(16, 8)),
        "sample_shape": (1, 16, 16),
        "n_chains": 5,
        "langevin_steps": 3,
        "langevin_step_size": 0.05,
        "langevin_sigma": 0.5,
        "optimizer": partial(torch.optim.SGD, lr=0.1),
        "generator_optimizer": partial(torch.optim.SGD, lr=0.05),
    }
    return CoopNets(**{**args, **kwargs})


def data() -> TextureDataModule:
    return TextureDataModule("brick", image_size=16, batch_size=2)  # whole image: the same batch every step


def trainer(tmp_path, max_steps, **kwargs) -> Trainer:
    args = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "limit_val_batches": 0}
    return Trainer(max_steps=max_steps, default_root_dir=tmp_path, **{**args, **kwargs})


def test_one_iteration_is_the_published_update(tmp_path):
    """Descriptor: θ −= lr ∇θ [mean f(x̃) − mean f(x)]; generator: α −= lr ∇α mean ‖x̃ − g(z)‖²/(2s²), with the same
    x̃ = Langevin from g(z) and the original z (no latent inference)."""
    torch.manual_seed(0)
    model = make_model()
    reference = copy.deepcopy(model)
    trainer(tmp_path, 1).fit(model, data())

    x = next(iter(data().train_dataloader()))["image"]
    z = reference.latents(5, reference.rng)
    with torch.no_grad():
        proposal = reference.generate(z)
    revised = reference.langevin(proposal)
    d_loss = reference.score(revised).mean() - reference.score(x).mean()
    g_loss = (revised - reference.generate(z)).pow(2).flatten(1).sum(1).mean() / (2 * 0.3**2)
    d_params, g_params = list(reference.descriptor.parameters()), list(reference.generator.parameters())
    d_grads = torch.autograd.grad(d_loss, d_params)
    g_grads = torch.autograd.grad(g_loss, g_params)
    for p, old, grad in zip(model.descriptor.parameters(), d_params, d_grads):
        torch.testing.assert_close(p, old - 0.1 * grad, rtol=1e-4, atol=1e-6)
    for p, old, grad in zip(model.generator.parameters(), g_params, g_grads):
        torch.testing.assert_close(p, old - 0.05 * grad, rtol=1e-4, atol=1e-6)


def test_max_steps_counts_iterations_and_both_nets_step_each_time(tmp_path):
    model = make_model(optimizer=torch.optim.Adam, generator_optimizer=torch.optim.Adam)
    t = trainer(tmp_path, 3)
    t.fit(model, data())
    assert t.global_step == 3
    for opt in t.optimizers:
        assert all(state["step"] == 3 for state in opt.state.values())


def test_latent_inference_when_asked(tmp_path):
    model = make_model(generator_steps=2)
    calls = []
    original = model.infer_latent
    model.infer_latent = lambda x, z, **kw: (calls.append(z.clone()), original(x, z, **kw))[1]
    trainer(tmp_path, 2).fit(model, data())
    assert len(calls) == 2 and calls[0].shape == (5, 8)


def test_gradients_are_clipped_per_net_by_hand(tmp_path):
    seen = {}

    class Norms(Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            params = [p for g in optimizer.param_groups for p in g["params"]]
            key = "d" if params[0] is next(pl_module.descriptor.parameters()) else "g"
            seen[key] = torch.nn.utils.get_total_norm([p.grad for p in params]).item()

    model = make_model(descriptor_clip_val=1e-3, generator_clip_val=2e-3)
    trainer(tmp_path, 1, callbacks=[Norms()]).fit(model, data())
    assert seen["d"] == pytest.approx(1e-3, rel=1e-3) and seen["g"] == pytest.approx(2e-3, rel=1e-3)


def test_samples_show_proposals_and_revisions():
    model = make_model(sample_steps=4)
    stages = model.sample_stages(6)
    assert list(stages) == ["generator", "descriptor"] and all(s.shape == (6, 1, 16, 16) for s in stages.values())
    assert not torch.equal(stages["generator"], stages["descriptor"])
    torch.testing.assert_close(model.sample(6), stages["descriptor"])
    assert model.sample(6).abs().max() <= 1


def test_checkpoint_loads_alone_and_resumes_exactly(tmp_path):
    torch.manual_seed(0)
    straight = make_model(optimizer=torch.optim.Adam, generator_optimizer=torch.optim.Adam)
    trainer(tmp_path / "a", 4).fit(straight, data())
    torch.manual_seed(0)
    first = make_model(optimizer=torch.optim.Adam, generator_optimizer=torch.optim.Adam)
    t = trainer(tmp_path / "b", 2)
    t.fit(first, data())
    t.save_checkpoint(tmp_path / "half.ckpt")
    loaded = CoopNets.load_from_checkpoint(tmp_path / "half.ckpt")
    assert loaded.hparams.n_chains == 5 and loaded.generator.latent_shape == (8,)
    torch.manual_seed(99)
    resumed = make_model(optimizer=torch.optim.Adam, generator_optimizer=torch.optim.Adam)
    trainer(tmp_path / "c", 4).fit(resumed, data(), ckpt_path=tmp_path / "half.ckpt")
    assert resumed.global_step == 4
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_generator_size_mismatch_is_named():
    with pytest.raises(ValueError, match=r"makes 16x16 images, but the data is 32x32"):
        make_model(sample_shape=(1, 32, 32))


def test_recipe_fit_validate_predict_through_the_cli(tmp_path):
    from tests.conftest import DEBUG, ROOT, run_cli, run_dirs

    recipe = str(ROOT / "conf" / "experiments" / "coopnets_digits.yaml")
    small = ["--model.n_chains=8", "--data.batch_size=8", "--trainer.max_steps=3"]
    cli = run_cli("fit", "--config", recipe, "--config", DEBUG, *small, root=tmp_path)
    assert cli.trainer.global_step == 3
    (run,) = run_dirs(tmp_path)
    grid = next((run / "samples").glob("*.png"))
    assert grid.stat().st_size > 0
    ckpt = str(run / "checkpoints" / "last.ckpt")
    metrics = run_cli("validate", "--ckpt_path", ckpt, "--trainer.logger=false", root=tmp_path).trainer.callback_metrics
    assert {"val/f_data", "val/energy_gap", "val/revision"} <= set(metrics)
    with_recipe = ["--config", recipe, "--config", DEBUG, *small, "--ckpt_path", ckpt]
    metrics = run_cli("validate", *with_recipe, root=tmp_path).trainer.callback_metrics  # the recipe's callbacks
    assert torch.isfinite(metrics["val/swd"])
    run_cli("predict", "--ckpt_path", ckpt, "--trainer.logger=false", "--data.n_predict=5", root=tmp_path)
    samples = torch.load(next(run.glob("predict-*/predictions/samples_rank0.pt")), weights_only=True)
    assert samples.shape == (5, 1, 16, 16) and samples.abs().max() <= 1


@pytest.mark.parametrize(("generator_steps", "forwards"), [(0, 1), (2, 2 + 2)])
def test_an_iteration_runs_the_generator_forward_once_unless_it_infers_z(tmp_path, generator_steps, forwards):
    """With z as drawn (the papers' MCMC teaching) one forward gives both the proposal and the generator's loss; latent
    inference (``generator_steps``) adds one forward per inference step and one at the inferred z."""
    model = make_model(generator_steps=generator_steps)
    calls = []
    model.generator.register_forward_hook(lambda *_: calls.append(1))
    trainer(tmp_path, 1).fit(model, data())
    assert len(calls) == forwards
