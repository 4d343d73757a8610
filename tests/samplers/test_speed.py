"""The speed options of the samplers change how fast they run, not what they compute."""

import copy
import warnings

import pytest
import torch
from torch import nn

from lightning_ebm.samplers import hmc, langevin, posterior_langevin
from lightning_ebm.samplers.speed import compiled, fast_score

torch.manual_seed(0)
NET = nn.Sequential(
    nn.Conv2d(1, 4, 3, stride=2), nn.SiLU(), nn.Conv2d(4, 2, 3), nn.SiLU(), nn.Flatten(), nn.LazyLinear(1)
)
X0 = 0.1 * torch.randn(3, 1, 12, 12, generator=torch.Generator().manual_seed(1))
NET(X0)  # materialise the lazy layer


def score(x: torch.Tensor) -> torch.Tensor:
    return NET(x).squeeze(1)


def run(**options) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return langevin(score, X0, n_steps=5, step_size=0.05, sigma=0.3, generator=g, **options)


def test_channels_last_chains_are_the_same_chains():
    eager = run()
    fast = run(channels_last=True)
    assert fast.is_contiguous(memory_format=torch.channels_last) and fast.dtype == torch.float32
    torch.testing.assert_close(fast, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_score_keeps_a_float32_chain(precision):
    eager = run()
    fast = run(precision=precision)
    assert fast.dtype == torch.float32 and torch.isfinite(fast).all()
    # the update (x/σ² and the noise) is exact; only ∂f/∂x carries the rounding of the score's net
    torch.testing.assert_close(fast, eager, rtol=0, atol=5e-3)
    with pytest.raises(ValueError, match="precision must be"):
        fast_score(score, precision="int8")


@pytest.mark.slow
def test_compiled_score_gives_the_eager_chains_and_is_compiled_once():
    eager = run()
    fast = run(compile=True)
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-5)
    assert compiled(score) is compiled(score)
    assert compiled(NET.forward) is compiled(NET.forward)  # bound methods: one per module and method


@pytest.mark.slow
def test_cuda_graphs_on_a_cpu_warn_once_and_compile_without_them(monkeypatch):
    from lightning_ebm.samplers import speed

    monkeypatch.setattr(speed, "_warned_no_graphs", False)
    eager = run()
    with pytest.warns(UserWarning, match="cuda_graphs needs chains on a CUDA device, these are on cpu"):
        fast = run(cuda_graphs=True)
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not again: a training run would print it at every step
        run(cuda_graphs=True)
    # the code a GPU runs (reduce-overhead compile, a new replay per call), on the CPU where inductor skips the graphs
    g = torch.Generator().manual_seed(2)
    graphed = fast_score(score, cuda_graphs=True)
    fast = langevin(graphed, X0, n_steps=5, step_size=0.05, sigma=0.3, generator=g)
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-5)


def test_the_mixins_pass_cuda_graphs_to_their_samplers(monkeypatch):
    from functools import partial

    from lightning_ebm import mixins
    from lightning_ebm.methods import AlternatingBackprop, GenerativeGradient
    from lightning_ebm.nets import ConvClassifier, TextureDescriptor, TextureGenerator

    seen = {}

    def record(name):
        def sampler(f, x, *args, **kwargs):
            seen[name] = kwargs["cuda_graphs"]
            return x if name != "posterior_langevin" else args[0]

        return sampler

    for name in ("langevin", "posterior_langevin", "hmc"):
        monkeypatch.setattr(mixins, name, record(name))
    net = partial(TextureDescriptor, channels=(4,), kernel_sizes=(3,), strides=(1,))
    from lightning_ebm.methods import GenerativeConvNet

    GenerativeConvNet(net, sample_shape=(1, 8, 8), langevin_cuda_graphs=True).langevin(torch.zeros(2, 1, 8, 8))
    abp = AlternatingBackprop(partial(TextureGenerator, channels=(4,)), sample_shape=(1, 8, 8),
                              generator_cuda_graphs=True)  # fmt: skip
    abp.infer_latent(torch.zeros(2, 1, 8, 8), torch.zeros(2, *abp.generator.latent_shape))
    gg = GenerativeGradient(partial(ConvClassifier, num_classes=3, channels=(4,)), sample_shape=(1, 8, 8),
                            hmc_cuda_graphs=True)  # fmt: skip
    gg.hmc(torch.zeros(2, 1, 8, 8), f=lambda x: x.flatten(1).sum(1))
    assert seen == {"langevin": True, "posterior_langevin": True, "hmc": True}


def test_the_mixin_passes_its_speed_options_to_the_sampler():
    from functools import partial

    from lightning_ebm.methods import GenerativeConvNet
    from lightning_ebm.nets import TextureDescriptor

    net = partial(TextureDescriptor, channels=(4,), kernel_sizes=(3,), strides=(1,))
    plain = GenerativeConvNet(net, sample_shape=(1, 8, 8), langevin_steps=3)
    fast = GenerativeConvNet(net, sample_shape=(1, 8, 8), langevin_steps=3, langevin_channels_last=True,
                             langevin_precision="bf16")  # fmt: skip
    fast.load_state_dict(plain.state_dict())
    x0 = torch.zeros(2, 1, 8, 8)
    a = plain.langevin(x0, rng=torch.Generator().manual_seed(0))
    b = fast.langevin(x0, rng=torch.Generator().manual_seed(0))
    assert b.is_contiguous(memory_format=torch.channels_last) and b.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "options", [{"precision": "bf16"}, {"channels_last": True}, {"compile": True}, {"cuda_graphs": True}]
)
def test_gpu_options_keep_the_chains(options):
    net = copy.deepcopy(NET).to("cuda")
    x0 = X0.to("cuda")
    g = lambda: torch.Generator(device="cuda").manual_seed(0)  # noqa: E731
    f = lambda x: net(x).squeeze(1)  # noqa: E731
    eager = langevin(f, x0, n_steps=5, step_size=0.05, sigma=0.3, generator=g())
    fast = langevin(f, x0, n_steps=5, step_size=0.05, sigma=0.3, generator=g(), **options)
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, eager, rtol=0, atol=5e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graphs_keep_every_sampler_exact_and_hand_callbacks_copies():
    net = copy.deepcopy(NET).to("cuda")
    x0 = X0.to("cuda")
    f = lambda x: net(x).squeeze(1)  # noqa: E731

    def chains(sampler, *args, **options):
        kept = []
        g = torch.Generator(device="cuda").manual_seed(0)
        out = sampler(*args, n_steps=6, step_size=0.05, sigma=0.3, generator=g, callback=kept.append, **options)
        return out, kept

    eager, eager_kept = chains(langevin, f, x0)
    fast, fast_kept = chains(langevin, f, x0, cuda_graphs=True)
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-5)
    for a, b in zip(eager_kept, fast_kept):  # kept after later replays: not overwritten
        torch.testing.assert_close(b["f"], a["f"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b["grad"], a["grad"], rtol=1e-4, atol=1e-5)

    eager, _ = chains(hmc, f, x0, leapfrog_steps=3)
    fast, _ = chains(hmc, f, x0, leapfrog_steps=3, cuda_graphs=True)
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-5)

    gen = nn.Sequential(nn.Linear(4, 144), nn.Tanh(), nn.Unflatten(1, (1, 12, 12))).to("cuda")
    z0 = torch.randn(3, 4, device="cuda")
    eager, eager_kept = chains(posterior_langevin, gen, x0, z0)
    fast, fast_kept = chains(posterior_langevin, gen, x0, z0, cuda_graphs=True)
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast_kept[0]["grad"], eager_kept[0]["grad"], rtol=1e-4, atol=1e-5)
