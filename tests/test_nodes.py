"""Nodes of every kind of score network: what ``visualize`` samples."""

from functools import partial

import pytest
import torch

from lightning_ebm.methods import CoopNets, MultigridMCD
from lightning_ebm.nets import MultigridDescriptor, ObjectDescriptor, SceneGenerator
from lightning_ebm.nodes import describe_nodes, node_function


def test_multigrid_layers_sample_at_their_own_grid_size():
    model = MultigridMCD(partial(MultigridDescriptor, width=0.05), grids=(4, 16), sample_shape=(1, 16, 16))
    listing = describe_nodes(model)
    coarse = next(line.split()[0] for line in listing.splitlines() if line.startswith("layer:descriptors.0."))
    name = coarse.rsplit(":", 1)[0]
    f, shape = node_function(model, f"{name}:0")
    assert shape == (1, 4, 4) and f(torch.randn(3, 1, 4, 4)).shape == (3,)
    f, shape = node_function(model, "score")
    assert shape == (1, 16, 16) and f(torch.randn(3, 1, 16, 16)).shape == (3,)
    with pytest.raises(ValueError, match="none \\(it has one score per sample\\)"):
        node_function(model, "class:0")


def test_a_channel_node_is_that_channels_summed_response():
    model = CoopNets(
        partial(ObjectDescriptor, channels=(4, 6), kernel_sizes=(3, 3), strides=(2, 2), n_out=2),
        partial(SceneGenerator, z_dim=2, channels=(4, 4)),
        sample_shape=(1, 16, 16),
    )
    x = torch.randn(2, 1, 16, 16)
    seen = []
    layer = dict(model.named_modules())["descriptor.body.0"]
    hook = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    f, _ = node_function(model, "layer:descriptor.body.0:3")
    value = f(x)
    hook.remove()
    torch.testing.assert_close(value, seen[-1][:, 3].flatten(1).sum(1))
