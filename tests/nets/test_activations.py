"""The rectifiers compute torch's functions, in eager mode and in their mask-free compiled form."""

import pytest
import torch
import torch.nn.functional as F

from lightning_ebm.nets import LeakyReLU, ReLU

X = torch.cat([torch.randn(4000, generator=torch.Generator().manual_seed(0)), torch.tensor([0.0, -0.0, 1e-40, -1e-40])])


@pytest.mark.parametrize(("module", "reference"), [(LeakyReLU(), lambda x: F.leaky_relu(x, 0.2)), (ReLU(), F.relu)])
@pytest.mark.parametrize("compiling", [False, True])
def test_the_same_values_bit_for_bit_and_the_same_derivative_off_zero(monkeypatch, module, reference, compiling):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling)  # the form torch.compile traces
    x = X.clone().requires_grad_(True)
    y = module(x)
    assert torch.equal(y, reference(X))
    (grad,) = torch.autograd.grad(y.sum(), x)
    (expected,) = torch.autograd.grad(reference(x).sum(), x)
    off_zero = X != 0
    assert torch.equal(grad[off_zero], expected[off_zero])


def test_compiled_nets_give_the_eager_values_and_gradients():
    for act in (LeakyReLU(), ReLU()):
        net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), act, torch.nn.Conv2d(4, 1, 3), act)
        x = torch.randn(3, 2, 9, 9, requires_grad=True)
        eager = net(x).sum()
        compiled = torch.compile(net)(x).sum()
        torch.testing.assert_close(compiled, eager)
        torch.testing.assert_close(torch.autograd.grad(compiled, x)[0], torch.autograd.grad(eager, x)[0])


def test_a_recipe_gives_a_nets_activation_its_arguments():
    """``coopnets_cifar_paper.yaml`` asks for the PyTorch port's slope 0.01 through class_path and init_args."""
    from pathlib import Path

    import yaml
    from jsonargparse import ArgumentParser

    from lightning_ebm.nets.descriptors import DescriptorFactory

    recipe = Path(__file__).parents[2] / "conf" / "experiments" / "coopnets_cifar_paper.yaml"
    parser = ArgumentParser()
    parser.add_argument("--descriptor", type=DescriptorFactory)
    config = {"descriptor": yaml.safe_load(recipe.read_text())["model"]["init_args"]["descriptor"]}
    net = parser.instantiate(parser.parse_object(config)).descriptor((3, 32, 32))
    slopes = [m.negative_slope for m in net.modules() if isinstance(m, LeakyReLU)]
    assert slopes == [0.01, 0.01, 0.01]
