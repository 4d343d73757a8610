"""The generative gradient against its importance-sampling formula, the schedule, class-conditional sampling, and
generative visualisation of any node through the command line."""

import copy
from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn
from torch.utils.data import DataLoader

from lightning_ebm.methods import GenerativeGradient
from lightning_ebm.methods.generative_gradient import generative_loss
from lightning_ebm.nets import ConvClassifier

X = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
Y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])


def make_model(**kwargs) -> GenerativeGradient:
    args = {
        "net": partial(ConvClassifier, num_classes=3, channels=(4,), hidden=8),
        "sample_shape": (1, 8, 8),
        "optimizer": partial(torch.optim.SGD, lr=0.1),
    }
    return GenerativeGradient(**{**args, **kwargs})


def data(batch_size: int = 6) -> DataLoader:
    return DataLoader([{"image": X[i], "label": Y[i], "index": i} for i in range(len(X))], batch_size=batch_size)


def trainer(tmp_path, max_steps: int) -> Trainer:
    return Trainer(
        max_steps=max_steps, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, enable_checkpointing=False,
    )  # fmt: skip


def test_generative_gradient_is_the_importance_sampled_model_expectation():
    """∇ = −mean_i [∂f_{k_i}(x_i) − Σ_j ω_ij ∂f_{k_i}(x_j)], ω_ij = exp f_{k_i}(x_j) / Σ_l exp f_{k_i}(x_l)."""
    torch.manual_seed(0)
    net = ConvClassifier((1, 8, 8), num_classes=3, channels=(4,), hidden=8)
    params = list(net.parameters())
    got = torch.autograd.grad(generative_loss(net(X), Y), params)
    with torch.no_grad():
        weights = net(X)[:, Y].softmax(0)  # column i: ω_·i over the batch, for class k_i
    expected = [torch.zeros_like(p) for p in params]
    for i in range(len(X)):
        k = int(Y[i])
        own = torch.autograd.grad(net(X[i : i + 1])[0, k], params)
        for j in range(len(X)):
            other = torch.autograd.grad(net(X[j : j + 1])[0, k], params)
            for e, o in zip(expected, other):
                e += weights[j, i] * o / len(X)
        for e, o in zip(expected, own):
            e -= o / len(X)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_step_follows_the_schedule_mix_of_generative_and_discriminative_gradients(tmp_path):
    torch.manual_seed(0)
    model = make_model(generative_schedule=[[0, 0.25], [10, 0.25]])
    reference = copy.deepcopy(model)
    trainer(tmp_path, 1).fit(model, data())
    scores = reference.class_scores(X[:6])
    loss = 0.25 * generative_loss(scores, Y[:6]) + 0.75 * nn.functional.cross_entropy(scores, Y[:6])
    grads = torch.autograd.grad(loss, list(reference.net.parameters()))
    for p, old, grad in zip(model.net.parameters(), reference.net.parameters(), grads):
        torch.testing.assert_close(p, old - 0.1 * grad, rtol=1e-4, atol=1e-6)


def test_schedule_is_piecewise_linear_with_jumps():
    model = make_model(generative_schedule=[[0, 1.0], [100, 1.0], [100, 0.0]])
    assert [model.generative_weight(s) for s in (0, 99, 100, 5000)] == [1.0, 1.0, 0.0, 0.0]
    ramp = make_model(generative_schedule=[[10, 1.0], [30, 0.0]])
    assert [ramp.generative_weight(s) for s in (0, 20, 40)] == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="non-decreasing steps and weights in"):
        make_model(generative_schedule=[[10, 1.0], [5, 0.0]])


def test_unlabelled_batches_are_refused(tmp_path):
    with pytest.raises(ValueError, match="batches need labels"):
        trainer(tmp_path, 1).fit(make_model(), DataLoader(X, batch_size=4))


class Linear(nn.Module):
    """f_k(x) = ⟨w_k, x⟩: p(x | k) ∝ exp(f_k(x)) N(0, σ² I) is exactly N(σ² w_k, σ² I)."""

    def __init__(self, sample_shape, *, num_classes: int = 3) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(num_classes, *sample_shape, generator=torch.Generator().manual_seed(5)))

    def forward(self, x):
        return torch.einsum("bchw,kchw->bk", x, self.w)


@pytest.mark.parametrize("sampler", ["hmc", "langevin"])
def test_class_conditional_samples_follow_the_tilted_gaussian(sampler):
    sigma = 0.3
    model = make_model(
        net=Linear, sampler=sampler, hmc_sigma=sigma, hmc_steps=40, hmc_step_size=0.1, langevin_sigma=sigma,
        langevin_step_size=0.05, langevin_steps=400,
    )  # fmt: skip
    labels = torch.tensor([2] * 3000)
    x = model.sample_classes(labels, rng=torch.Generator().manual_seed(0)).double()
    mean = sigma**2 * model.net.w[2].detach().double()
    se = sigma / 3000**0.5
    assert (x.mean(0) - mean).abs().max() < 5 * se  # means within [-1, 1], so the clamp is rarely active
    assert abs(x.std(0).mean().item() - sigma) < 0.02


def test_sample_cycles_through_the_classes():
    model = make_model(net=Linear, hmc_sigma=0.5, hmc_steps=30, hmc_step_size=0.2)
    x = model.sample(300, rng=torch.Generator().manual_seed(1)).double()
    assert 0.4 < model.sampler_stats["hmc_acceptance"] < 0.9  # adapted towards 0.65, and reported
    for k in range(3):
        mean = 0.25 * model.net.w[k].detach().double()
        assert (x[k::3].mean(0) - mean).abs().mean() < 0.05


def test_recipe_fit_validate_and_visualize_any_node_through_the_cli(tmp_path, capsys):
    from lightning_ebm.visualize import main
    from tests.conftest import DEBUG, ROOT, run_cli, run_dirs

    def visualize(args):
        return main(args, "lightning-ebm")

    recipe = str(ROOT / "conf" / "experiments" / "generative_gradient_digits.yaml")
    small = ["--trainer.max_steps=4", "--model.hmc_steps=2", "--data.batch_size=16"]
    run_cli("fit", "--config", recipe, "--config", DEBUG, *small, root=tmp_path)
    (run,) = run_dirs(tmp_path)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    metrics = run_cli("validate", "--ckpt_path", ckpt, "--trainer.logger=false", root=tmp_path).trainer.callback_metrics
    assert 0 <= float(metrics["val/accuracy"]) <= 1 and torch.isfinite(metrics["val/cross_entropy"])

    out = visualize(["--ckpt_path", ckpt, "--node", "class:3", "--n", "4", "--steps", "3"])
    assert out == run / "visualize" / "class-3.png" and out.stat().st_size > 0
    assert "HMC acceptance" in capsys.readouterr().out
    # tempered, from the class's mean training digit: the picture says so, and how many the model calls a 3
    out = visualize(["--ckpt_path", ckpt, "--node", "class:3", "--n", "4", "--steps", "0", "--start", "mean",
                     "--temperature", "0.5", "--out", str(tmp_path / "mean.png")])  # fmt: skip
    printed = capsys.readouterr().out
    assert "T = 0.5, 0 steps from mean" in printed and " of 4 classified as class 3 by the model" in printed
    from PIL import Image

    from datamodules import DigitsDataModule
    from lightning_ebm.visualize import mean_image

    assert min(Image.open(out).size) >= 256  # enlarged to be judged by eye, not 16x16 cells
    train = DigitsDataModule(image_size=16, val_fraction=0.2).train_set
    threes = torch.stack([d["image"] for d in map(train.__getitem__, range(len(train))) if d["label"] == 3])
    assert torch.allclose(mean_image(ckpt, "class:3", 2, (1, 16, 16)), threes.mean(0).expand(2, 1, 16, 16))
    layer = tmp_path / "layer.png"
    visualize(["--ckpt_path", ckpt, "--node", "layer:net.features.0:7", "--sampler", "langevin",
              "--steps", "3", "--out", str(layer)])  # fmt: skip
    assert layer.stat().st_size > 0
    with pytest.raises(ValueError, match=r"(?s)unknown node 'layer:net.conv9:1'.*layer:net.features.0:<0..31>"):
        visualize(["--ckpt_path", ckpt, "--node", "layer:net.conv9:1"])
    with pytest.raises(ValueError, match=r"the classes of GenerativeGradient are class:0 … class:9"):
        visualize(["--ckpt_path", ckpt, "--node", "class:10"])


def test_visualize_takes_a_descriptor_and_refuses_a_generator(tmp_path):
    from lightning_ebm.methods import AlternatingBackprop, GenerativeConvNet
    from lightning_ebm.nets import SceneGenerator, TextureDescriptor
    from lightning_ebm.visualize import visualize

    descriptor = GenerativeConvNet(partial(TextureDescriptor, channels=(4,), kernel_sizes=(3,), strides=(1,)),
                                   sample_shape=(1, 8, 8))  # fmt: skip
    path = _save(descriptor, tmp_path / "descriptor.ckpt")
    out = visualize(str(path), node="score", n=2, steps=2)
    assert out.stat().st_size > 0

    generator = AlternatingBackprop(partial(SceneGenerator, z_dim=2, channels=(4,)), sample_shape=(1, 8, 8))
    path = _save(generator, tmp_path / "generator.ckpt")
    with pytest.raises(ValueError, match="has no score network"):
        visualize(str(path), node="score")


def _save(model, path):
    """A checkpoint as Lightning writes one: weights, portable hyper-parameters, version."""
    import lightning

    from lightning_ebm.methods.base import portable_hparams

    hparams = portable_hparams(type(model), model.hparams)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": hparams,
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    return path


def test_sampling_under_inference_mode_as_predict_runs_it():
    """Regression: ``predict`` (inference mode) crashed with "Inference tensors cannot be saved for backward": the
    labels made inside ``sample`` were captured by the HMC score closure."""
    model = make_model(hmc_steps=2, hmc_leapfrog_steps=2).eval()

    def draw(mode):
        with mode():
            return model.sample(4, rng=torch.Generator().manual_seed(0))

    plain = draw(torch.enable_grad)
    for mode in (torch.inference_mode, torch.no_grad):
        x = draw(mode)
        assert not x.requires_grad and torch.equal(x, plain), mode.__name__
    with torch.inference_mode():
        labels = torch.tensor([0, 1, 2])  # an inference tensor from the caller
        x = model.sample_classes(labels, rng=torch.Generator().manual_seed(0))
    assert x.shape == (3, *model.sample_shape)
    assert all(p.grad is None for p in model.parameters())
