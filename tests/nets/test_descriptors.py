"""The published descriptor architectures, layer by layer."""

import pytest
import torch
from torch import nn

from lightning_ebm.nets import LeakyReLU, MultigridDescriptor, ObjectDescriptor, ReLU, TextureDescriptor


def _convs(net):
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)]


def test_texture_descriptor_is_the_icml2016_net():
    net = TextureDescriptor((1, 64, 64))
    convs = _convs(net)
    assert [(c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [
        (100, 15, 3, 7),
        (70, 9, 1, 4),
        (30, 7, 1, 3),
    ]
    assert sum(isinstance(m, nn.ReLU) for m in net.modules()) == 3
    weights = torch.cat([c.weight.flatten() for c in convs])
    assert abs(weights.std().item() - 0.01) < 0.001 and all(c.bias.abs().max() == 0 for c in convs)


def test_texture_score_is_the_sum_over_positions_and_channels():
    net = TextureDescriptor((3, 32, 32), channels=(4, 2), kernel_sizes=(3, 3), strides=(1, 1), init_std=None)
    x = torch.randn(5, 3, 32, 32)
    f = net(x)
    assert f.shape == (5,)
    torch.testing.assert_close(f, net.body(x).sum((1, 2, 3)))
    assert net(torch.randn(2, 3, 48, 40)).shape == (2,)  # fully convolutional: any size


def test_texture_descriptor_names_a_channel_mismatch():
    with pytest.raises(ValueError, match=r"\(1, 64, 64\).*'RGB'"):
        TextureDescriptor((1, 64, 64))(torch.randn(2, 3, 64, 64))


def test_object_descriptor_is_the_tf_coopnets_net():
    net = ObjectDescriptor((3, 64, 64))
    convs = _convs(net)
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (64, 5, 2),
        (128, 3, 2),
        (256, 3, 1),
    ]
    assert net.fc.in_features == 256 * 16 * 16 and net.fc.out_features == 100
    assert all(
        isinstance(m, LeakyReLU) and m.negative_slope == 0.2 for m in net.modules() if isinstance(m, nn.LeakyReLU)
    )
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(net(x), net.fc(net.body(x).flatten(1)).sum(1))


def test_object_descriptor_names_a_size_mismatch():
    with pytest.raises(ValueError, match=r"\(3, 64, 64\).*\(2, 3, 32, 32\)"):
        ObjectDescriptor((3, 64, 64))(torch.randn(2, 3, 32, 32))


def test_object_descriptor_with_paddings_is_the_matconvnet_object_net():
    """convNet_object.m: 4x4/2 pad 2 -> 64, 2x2/1 pad 2 -> 128 (ReLU), a full-size layer -> 2: 64 -> 33 -> 36."""
    net = ObjectDescriptor(
        (3, 64, 64), channels=[64, 128], kernel_sizes=[4, 2], strides=[2, 1], paddings=[2, 2], n_out=2,
        activation=ReLU,
    )  # fmt: skip
    assert [(c.kernel_size[0], c.stride[0], c.padding[0]) for c in _convs(net)] == [(4, 2, 2), (2, 1, 2)]
    assert net.body(torch.zeros(1, 3, 64, 64)).shape == (1, 128, 36, 36)
    assert net.fc.in_features == 128 * 36 * 36 and net.fc.out_features == 2
    assert [type(m) for m in net.body if not isinstance(m, nn.Conv2d)] == [ReLU, ReLU]


def test_object_descriptor_refuses_layers_that_do_not_fit():
    with pytest.raises(ValueError, match=r"one kernel size, stride and padding per layer.*paddings=\[1\]"):
        ObjectDescriptor((1, 16, 16), channels=[4, 4], kernel_sizes=[3, 3], strides=[2, 2], paddings=[1])
    with pytest.raises(ValueError, match=r"layer 2 \(kernel 9, stride 1, padding 0\) leaves no output"):
        ObjectDescriptor((1, 16, 16), channels=[4, 4], kernel_sizes=[3, 9], strides=[2, 1], paddings=[1, 0])


def test_multigrid_descriptors_are_the_released_code_per_grid():
    convs = {
        side: [
            (m.out_channels, m.kernel_size[0], m.stride[0])
            for m in MultigridDescriptor((3, side, side)).modules()
            if isinstance(m, nn.Conv2d)
        ]
        for side in (4, 16, 64)
    }
    assert convs[4] == [(96, 5, 2), (128, 3, 1), (256, 3, 1)]
    assert convs[16] == [(96, 5, 2), (128, 3, 1), (256, 3, 1), (512, 3, 1)]
    assert convs[64] == [(64, 5, 2), (128, 5, 2), (256, 5, 2), (512, 5, 2)]
    narrow = MultigridDescriptor((1, 16, 16), width=0.25)
    assert [m.out_channels for m in narrow.modules() if isinstance(m, nn.Conv2d)] == [24, 32, 64, 128]
    assert narrow(torch.randn(5, 1, 16, 16)).shape == (5,)


def test_multigrid_batch_norm_always_uses_the_batch_statistics():
    """As the TF code (training=True everywhere): eval mode changes nothing, and a sample's f depends on its batch."""
    net = MultigridDescriptor((1, 4, 4), width=0.1)
    x = torch.randn(6, 1, 4, 4)
    train = net(x)
    torch.testing.assert_close(net.eval()(x), train)
    assert not torch.allclose(net(x[:3]), train[:3])
    assert not MultigridDescriptor((1, 4, 4), batch_norm=False)(x[:1]).isnan().any()
