"""GenerativeConvNet against the published update rule, and the behaviour a run relies on."""

import math
from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer

from callbacks import RunCheckpoint
from datamodules import TextureDataModule
from lightning_ebm.errors import UsageError
from lightning_ebm.methods import DivergenceError, GenerativeConvNet
from tests.conftest import tiny_model


def make_model(**kwargs) -> GenerativeConvNet:
    return tiny_model(GenerativeConvNet, **kwargs)


def trainer(tmp_path, max_steps: int, **kwargs) -> Trainer:
    args = {
        "max_steps": max_steps,
        "default_root_dir": tmp_path,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
    }
    return Trainer(**{**args, **kwargs})


def test_loss_gradient_is_the_maximum_likelihood_gradient():
    """∂loss/∂θ = mean_j ∂f(x̃_j)/∂θ − mean_i ∂f(x_i)/∂θ, with 3 chains against a batch of 5."""
    model = make_model(langevin_steps=0)  # the chains stay where the bank holds them
    chains = torch.randn(3, 1, 16, 16)
    model.chains.set(chains)
    batch = torch.randn(5, 1, 16, 16)
    out = model.training_step(batch, 0)
    params = list(model.parameters())
    got = torch.autograd.grad(out["loss"], params)

    def mean_grad(x):
        grads = [torch.autograd.grad(model.score(xi[None]).sum(), params) for xi in x]
        return [torch.stack(g).mean(0) for g in zip(*grads)]

    expected = [s - d for s, d in zip(mean_grad(chains), mean_grad(batch))]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out["loss"], model.score(chains).mean() - model.score(batch).mean())


def test_chains_persist_across_iterations():
    model = make_model()
    starts = []
    original = model.langevin

    def spy(x0, **kwargs):
        starts.append(x0.clone())
        return original(x0, **kwargs)

    model.langevin = spy
    batch = torch.randn(2, 1, 16, 16)
    first = model.training_step(batch, 0)
    after_first = model.chains.get().clone()
    model.training_step(batch, 1)
    assert torch.equal(starts[0], torch.zeros(3, 1, 16, 16))  # the paper: chains start at the zero image
    assert torch.equal(starts[1], after_first)  # and continue from where they stopped
    assert first["f_data"].shape == () and first["grad_norm"] > 0


@pytest.mark.parametrize("init", ["zeros", "reference", "uniform"])
def test_chain_init(init):
    model = make_model(chain_init=init, langevin_sigma=0.3)
    x = model.initial_chains(4000, torch.Generator().manual_seed(0))
    expected_std = {"zeros": 0.0, "reference": 0.3, "uniform": 1 / math.sqrt(3)}[init]
    assert x.std().item() == pytest.approx(expected_std, abs=0.01)


def test_reconstruct_is_sigma_squared_times_the_score_gradient():
    model = make_model(langevin_sigma=0.5)
    x = torch.randn(2, 1, 16, 16)
    with torch.enable_grad():
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.score(xr).sum(), xr)
    torch.testing.assert_close(model.reconstruct(x), 0.25 * grad)
    with torch.inference_mode():
        assert model.reconstruct(x).shape == x.shape


def test_fit_then_sample(tmp_path):
    model = make_model()
    dm = TextureDataModule("brick", image_size=16, batch_size=2)
    trainer(tmp_path, 3).fit(model, dm)
    assert model.global_step == 3 and model.chains.initialized
    before = model.chains.get().clone()
    samples = model.sample(3)
    assert samples.shape == (3, 1, 16, 16) and samples.min() >= -1 and samples.max() <= 1
    assert torch.equal(model.chains.get(), before)  # sampling does not move the training chains
    torch.testing.assert_close(model.sample(3), samples)  # and is reproducible


def test_a_model_has_as_many_samples_as_chains_unless_new_chains_are_asked_for():
    model = make_model(sample_steps=0, chain_init="uniform")
    model.training_step(torch.rand(2, 1, 16, 16) * 2 - 1, 0)
    chains = model.chains.get().clone()
    torch.testing.assert_close(model.sample(3), chains.clamp(-1, 1))  # the 3 chains, 0 more steps
    with pytest.raises(UsageError, match=r"has 3 distinct chain\(s\).*4 were asked for.*fresh_steps"):
        model.sample(4)  # it used to repeat chain 0
    model.hparams.fresh_steps = 2
    x = model.sample(6)
    torch.testing.assert_close(x[:3], chains.clamp(-1, 1))
    assert not any(torch.allclose(x[i], x[j], atol=0.1) for i in range(6) for j in range(i))
    still = make_model(langevin_noise=False, fresh_steps=2)  # zeros moved without noise: one sample, not 5
    with pytest.raises(UsageError, match="would all be one sample"):
        still.sample(5)


def test_predict_numbers_each_rank_s_samples_from_zero():
    model = make_model()
    model._world_size = lambda: 2  # rank 1 of 2 gets the indices 1, 3, 5 of n_predict = 6
    assert model.sample_numbers(torch.tensor([1, 3, 5])).tolist() == [0, 1, 2]
    assert model.sample_numbers([{"image": 0}, {"image": 1}]).tolist() == [0, 1]


def test_load_from_checkpoint_alone(tmp_path):
    model = make_model(optimizer=partial(torch.optim.SGD, lr=0.01, momentum=0.5), chain_init="reference")
    dm = TextureDataModule("brick", image_size=16)
    fit = trainer(tmp_path, 2)
    fit.fit(model, dm)
    path = tmp_path / "model.ckpt"
    fit.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)  # no pickled classes or partials
    assert ckpt["hyper_parameters"]["net"]["init_args"]["channels"] == [8, 4]
    loaded = GenerativeConvNet.load_from_checkpoint(path)
    assert loaded.hparams.chain_init == "reference" and loaded.hparams.n_chains == 3
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(loaded.chains.get(), model.chains.get())
    assert isinstance(loaded.configure_optimizers(), torch.optim.SGD)
    # a loaded model trains on and saves a checkpoint that loads again
    again = tmp_path / "again.ckpt"
    more = trainer(tmp_path, 3)
    more.fit(loaded, dm, ckpt_path=path)
    more.save_checkpoint(again)
    reloaded = GenerativeConvNet.load_from_checkpoint(again)
    assert torch.load(again, weights_only=True)["global_step"] == 3
    for a, b in zip(loaded.state_dict().values(), reloaded.state_dict().values()):
        assert torch.equal(a, b)


def test_resumed_run_continues_exactly(tmp_path):
    """5 steps in one go equal a run resumed from its periodic step-2 checkpoint: chains, noise, weights and crops,
    even when the resuming process's global RNG is seeded differently."""

    def dm():
        return TextureDataModule("brick", image_size=24, crop_size=16, batch_size=2)

    torch.manual_seed(0)
    straight = make_model()
    trainer(tmp_path / "a", 5).fit(straight, dm())

    torch.manual_seed(0)
    periodic = RunCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    trainer(tmp_path / "b", 5, callbacks=[periodic]).fit(make_model(), dm())
    (step2,) = (tmp_path / "ckpt").glob("*step=2.ckpt")

    torch.manual_seed(123)
    resumed = make_model()
    trainer(tmp_path / "c", 5).fit(resumed, dm(), ckpt_path=step2)

    assert resumed.global_step == 5
    assert torch.equal(resumed.chains.get(), straight.chains.get())
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_divergence_stops_before_saving(tmp_path):
    model = make_model(langevin_step_size=1e6)
    t = trainer(tmp_path, 5, enable_checkpointing=True)
    with pytest.raises(
        DivergenceError,
        match=r"became NaN or infinite at training step 0.*langevin_step_size=1e\+06.*lr=0.001",
    ):
        t.fit(model, TextureDataModule("brick", image_size=16))
    assert not list(tmp_path.rglob("*.ckpt"))


def test_matconvnet_gradient_family():
    """MatConvNet: gradients divided by the layer's output positions, max-abs rescaled to the cap; biases at 2x."""
    sgd = partial(torch.optim.SGD, lr=0.1, momentum=0.5)
    model = make_model(grad_scaling="positions", grad_cap=1e-3, bias_lr_multiplier=2.0, optimizer=sgd)
    optimizer = model.configure_optimizers()
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.2]
    model.training_step(torch.randn(2, 1, 16, 16), 0)["loss"].backward()
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.on_before_optimizer_step(optimizer)
    convs = [model.net.body[0], model.net.body[2]]
    positions = [8 * 8, 8 * 8]  # 16x16 input, stride 2 then stride 1
    for conv, n, name in zip(convs, positions, ["net.body.0", "net.body.2"]):
        scaled = raw[f"{name}.weight"] / n
        assert scaled.abs().max() > 1e-3  # the cap applies: the whole tensor is rescaled, not clamped
        torch.testing.assert_close(conv.weight.grad, scaled * (1e-3 / scaled.abs().max()))


def test_layer_learning_rate_multipliers_as_the_matconvnet_object_code():
    """convNet_object.m: layers at 1, 0.5 and 0.2857 of the rate, each layer's biases at twice its weights'."""
    from lightning_ebm.nets import ObjectDescriptor

    net = partial(ObjectDescriptor, channels=[4, 8], kernel_sizes=[4, 2], strides=[2, 1], paddings=[2, 2], n_out=2)
    sgd = partial(torch.optim.SGD, lr=0.1, momentum=0.5)
    model = make_model(net=net, bias_lr_multiplier=2.0, layer_lr_multipliers=[1.0, 0.5, 0.25], optimizer=sgd)
    optimizer = model.configure_optimizers()
    layers = [model.net.body[0], model.net.body[2], model.net.fc]
    expected = [(layer.weight, lr) for layer, lr in zip(layers, [0.1, 0.05, 0.025])]
    expected += [(layer.bias, 2 * lr) for layer, lr in zip(layers, [0.1, 0.05, 0.025])]
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert len(lr_of) == len(list(model.parameters()))
    for param, lr in expected:
        assert lr_of[id(param)] == pytest.approx(lr)


def test_layer_learning_rate_multipliers_need_one_per_layer():
    layers = len([m for m in make_model().net.modules() if next(m.parameters(recurse=False), None) is not None])
    wrong = [1.0] * (layers + 1)
    with pytest.raises(UsageError, match=rf"has {layers + 1} entries, but the descriptor has {layers} layers with"):
        make_model(layer_lr_multipliers=wrong)


def test_the_gradient_cap_waits_for_no_device_value(tmp_path):
    """The MatConvNet scaling and cap act on the device: a training step that logs nothing reads nothing back."""
    from tests.probes import SyncProbe

    probe = SyncProbe()
    model = make_model(grad_scaling="positions", grad_cap=1e-6, bias_lr_multiplier=2.0)
    t = trainer(tmp_path, 3, callbacks=[probe], log_every_n_steps=50, enable_checkpointing=False)
    t.fit(model, TextureDataModule("brick", image_size=16))
    assert probe.reads == {0: 0, 1: 0, 2: 0}
