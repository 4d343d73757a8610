"""Generator nets ``g(z): (B, *latent_shape) -> (B, C, H, W)`` in [-1, 1], for ``x = g(z) + N(0, s² I)``.

Layers follow the authors' TensorFlow and MatConvNet codes (docs/methods.md, CoopNets and AlternatingBackprop).
Transposed convolutions with kernel 5, stride 2, padding 2 and output padding 1 double the size exactly (the
MatConvNet crop [1, 2, 1, 2] and TF's SAME do the same).
"""

from collections.abc import Callable, Sequence
from functools import partial

from torch import Tensor, nn

from lightning_ebm.nets.activations import Activation, LeakyReLU, ReLU
from lightning_ebm.nets.descriptors import init_gaussian


def _up_block(c_in: int, c_out: int, activation: Activation | None, batch_norm: bool) -> list[nn.Module]:
    """A ×2 transposed convolution, then (batch norm and) the activation."""
    layers: list[nn.Module] = [nn.ConvTranspose2d(c_in, c_out, 5, stride=2, padding=2, output_padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out, track_running_stats=False))
    if activation is not None:
        layers.append(activation())
    return layers


def _up_stack(
    c_in: int, channels: Sequence[int], c_image: int, activation: Activation, batch_norm: bool
) -> list[nn.Module]:
    """One ×2 block per entry of ``channels``, then a last ×2 transposed convolution to the image and tanh."""
    layers: list[nn.Module] = []
    for c_out in channels:
        layers += _up_block(c_in, c_out, activation, batch_norm)
        c_in = c_out
    return [*layers, *_up_block(c_in, c_image, None, False), nn.Tanh()]


class Generator(nn.Module):
    """Base of generator nets: ``forward(z: (B, *latent_shape)) -> (B, *sample_shape)``.

    Args:
        sample_shape: ``(C, H, W)`` of one generated image.
        latent_shape: shape of one latent vector ``z ~ N(0, I)``.
    """

    def __init__(self, sample_shape: Sequence[int], latent_shape: Sequence[int]) -> None:
        super().__init__()
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.latent_shape = tuple(int(s) for s in latent_shape)


GeneratorFactory = Callable[[Sequence[int]], Generator]
"""What methods take to build a generator: a class or partial called with the sample shape."""


class SceneGenerator(Generator):
    """The DCGAN-like generator of the TensorFlow CoopNets code (Xie et al., AAAI 2018; 64×64 scenes by default).

    ``z (z_dim)`` → 4×4 transposed convolution to ``channels[0]`` at 4×4 → a 5×5 stride-2 transposed convolution per
    further entry of ``channels`` → a last one to the image channels, then tanh; batch norm and LeakyReLU(0.2) after
    every hidden layer; weights N(0, 0.005²). The output side is ``4 · 2^len(channels)`` (64 for the default). Batch
    norm always uses the batch's statistics, in training and in sampling alike, as the TF code does
    (``is_training=True`` everywhere, moving averages never used).

    Args:
        sample_shape: ``(C, S, S)`` with ``S = 4 · 2^len(channels)``.
        z_dim: latent dimension.
        channels: hidden channels, from the 4×4 layer up.
        activation: the hidden nonlinearity (a class, or a callable making one).
        batch_norm: batch normalisation (with batch statistics) after every hidden layer.
        init_std: standard deviation of the Gaussian weight initialisation; ``None`` for PyTorch's default.
    """

    def __init__(
        self,
        sample_shape: Sequence[int],
        *,
        z_dim: int = 100,
        channels: Sequence[int] = (512, 256, 128, 64),
        activation: Activation = LeakyReLU,
        batch_norm: bool = True,
        init_std: float | None = 0.005,
    ) -> None:
        super().__init__(sample_shape, (z_dim,))
        c, h, w = self.sample_shape
        side = 4 * 2 ** len(channels)
        if h != side or w != side:
            raise ValueError(
                f"SceneGenerator with {len(channels)} hidden layers makes {side}x{side} images, but the data is "
                f"{h}x{w}: give one channel entry per doubling from 4x4 to {h}x{w}, or set the data's image_size to "
                f"{side}"
            )
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim, channels[0], 4)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(channels[0], track_running_stats=False))
        layers.append(activation())
        layers += _up_stack(channels[0], channels[1:], c, activation, batch_norm)
        self.body = nn.Sequential(*layers)
        init_gaussian(self, init_std)

    def forward(self, z: Tensor) -> Tensor:
        """``z: (B, z_dim) -> (B, C, S, S)`` in [-1, 1]."""
        return self.body(z.reshape(z.shape[0], -1, 1, 1))


class TextureGenerator(Generator):
    """The spatial-latent texture generator of the MatConvNet CoopNets and ABP codes (``frame_gan.m``).

    A ``z_channels × (H/2^k) × (W/2^k)`` latent (7×7×1 for 224×224 images, k = ``len(channels) + 1``) → one 5×5
    stride-2 transposed convolution per entry of ``channels`` and a last one to the image channels; batch norm and
    LeakyReLU(0.2) after every hidden layer, tanh at the end. Being fully convolutional, it makes textures of any
    size that is a multiple of ``2^k``.

    Args:
        sample_shape: ``(C, H, W)``, each side a multiple of ``2^(len(channels) + 1)``.
        z_channels: channels of the spatial latent (1 in CoopNets, 5 in ABP's texture config).
        channels: hidden channels.
        activation: the hidden nonlinearity (a class, or a callable making one).
        batch_norm: batch normalisation (with batch statistics) after every hidden layer.
        init_std: standard deviation of the Gaussian weight initialisation; ``None`` for PyTorch's default.
    """

    def __init__(
        self,
        sample_shape: Sequence[int],
        *,
        z_channels: int = 1,
        channels: Sequence[int] = (512, 256, 128, 64),
        activation: Activation = LeakyReLU,
        batch_norm: bool = True,
        init_std: float | None = 0.005,
    ) -> None:
        c, h, w = (int(s) for s in sample_shape)
        factor = 2 ** (len(channels) + 1)
        if h % factor or w % factor:
            raise ValueError(
                f"TextureGenerator with {len(channels) + 1} upsampling layers needs image sides that are multiples of "
                f"{factor}, got {h}x{w}: change the data's image or crop size, or the number of channel entries"
            )
        super().__init__(sample_shape, (z_channels, h // factor, w // factor))
        self.body = nn.Sequential(*_up_stack(z_channels, channels, c, activation, batch_norm))
        init_gaussian(self, init_std)

    def forward(self, z: Tensor) -> Tensor:
        """``z: (B, z_channels, h, w) -> (B, C, H, W)`` in [-1, 1]."""
        return self.body(z)


class SoundGenerator(Generator):
    """The 1-D sound generator of the ABP code (``audioGeneratorNet_60.m``; Han et al., AAAI 2017).

    A ``(1, T / factor^k)`` latent (1×60 for 60,000 samples) → one transposed convolution with kernel 25 and stride
    ``factor`` (×10) per entry of ``channels`` (256, 128), batch norm and ReLU after each, then a last one to one
    channel and tanh. Padding 8 and output padding 1 make each layer exactly ×``factor`` for kernel 25 and factor 10
    (the MatConvNet crop [0, 0, 7, 8]).

    Args:
        sample_shape: ``(1, T)``, T a multiple of ``factor^(len(channels) + 1)``.
        channels: hidden channels.
        kernel_size: temporal kernel of every layer.
        factor: upsampling of every layer.
        activation: the hidden nonlinearity (a class, or a callable making one).
        init_std: standard deviation of the Gaussian weight initialisation; ``None`` for PyTorch's default.
    """

    def __init__(
        self,
        sample_shape: Sequence[int],
        *,
        channels: Sequence[int] = (256, 128),
        kernel_size: int = 25,
        factor: int = 10,
        activation: Activation = ReLU,
        init_std: float | None = 0.005,
    ) -> None:
        c, length = (int(s) for s in sample_shape)
        total = factor ** (len(channels) + 1)
        if length % total:
            raise ValueError(
                f"SoundGenerator with {len(channels) + 1} layers of x{factor} needs a clip length that is a multiple "
                f"of {total}, got {length}: change the data's clip_length or the number of channel entries"
            )
        super().__init__(sample_shape, (1, length // total))
        crop = kernel_size - factor  # (L - 1)·factor + kernel - crop = L·factor
        up = partial(nn.ConvTranspose1d, kernel_size=kernel_size, stride=factor)
        up = partial(up, padding=(crop + 1) // 2, output_padding=(crop + 1) // 2 * 2 - crop)
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in channels:
            layers += [up(c_in, c_out), nn.BatchNorm1d(c_out, track_running_stats=False), activation()]
            c_in = c_out
        layers += [up(c_in, c), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        init_gaussian(self, init_std)

    def forward(self, z: Tensor) -> Tensor:
        """``z: (B, 1, T / factor^k) -> (B, C, T)`` in [-1, 1]."""
        return self.body(z)
