"""Descriptor nets: bottom-up ConvNets whose output is the score ``f(x): (B, C, H, W) -> (B,)``.

The model they define is ``p(x) ∝ exp(f(x)) N(x; 0, σ² I)`` (Xie, Lu, Zhu, Wu, ICML 2016). A net with several top
outputs sums them per sample; sums over the batch happen at the call site, never here. Layers follow the authors'
MatConvNet and TensorFlow codes (docs/methods.md, GenerativeConvNet, CoopNets and MultigridMCD).
"""

import inspect
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from lightning_ebm.nets.activations import Activation, LeakyReLU, ReLU


class Descriptor(nn.Module):
    """Base of descriptor nets: ``forward(x: (B, *sample_shape)) -> (B,)``, one score per sample.

    Args:
        sample_shape: shape of one input sample, ``(C, H, W)``.
    """

    def __init__(self, sample_shape: Sequence[int]) -> None:
        super().__init__()
        self.sample_shape = tuple(int(s) for s in sample_shape)

    def _check_channels(self, x: Tensor) -> None:
        if x.dim() != len(self.sample_shape) + 1 or x.shape[1] != self.sample_shape[0]:
            raise ValueError(
                f"{type(self).__name__} was built for samples of shape {self.sample_shape} "
                f"(batch, channels, ...), got a tensor of shape {tuple(x.shape)}: check the data's mode "
                "(grayscale 'L' or 'RGB') against the net"
            )


DescriptorFactory = Callable[[Sequence[int]], nn.Module]
"""What methods take to build a descriptor: a class, partial or function called with the sample shape ``(C, H, W)``
that returns any ``nn.Module`` scoring ``(B, C, H, W) -> (B,)``. Subclassing :class:`Descriptor` is not needed: from a
config, ``class_path`` names any ``nn.Module`` class whose constructor takes the sample shape first and ``init_args``
its other arguments. Methods build it with :func:`build_descriptor`, which checks the output shape."""


def build_descriptor(factory: DescriptorFactory, sample_shape: Sequence[int]) -> nn.Module:
    """``factory(sample_shape)``, checked by one forward pass of a batch of two zero samples: it must return ``(2,)``.

    The check runs under ``no_grad`` on the device the net was built on (the CPU, in a method's ``__init__``), with
    every submodule in eval mode so that batch-norm running statistics are left untouched; the modes are restored.

    Args:
        factory: builds the net from the sample shape (see :data:`DescriptorFactory`).
        sample_shape: shape of one sample, ``(C, H, W)`` for images.

    Returns:
        The net, mapping ``(B, *sample_shape) -> (B,)``.

    Raises:
        ValueError: the factory returned no ``nn.Module``, the net failed on the dummy batch, or its output is not
            one score per sample.
    """
    shape = tuple(int(s) for s in sample_shape)
    net = factory(shape)
    if not isinstance(net, nn.Module):
        raise ValueError(f"a descriptor must be a torch.nn.Module; {factory!r} returned a {type(net).__name__}")
    name = type(net).__name__
    param = next((p for p in net.parameters() if p.is_floating_point()), None)
    x = torch.zeros((2, *shape)) if param is None else torch.zeros((2, *shape), device=param.device, dtype=param.dtype)
    modes = {m: m.training for m in net.modules()}
    try:
        net.eval()
        with torch.no_grad():
            out = net(x)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(
            f"{name} built for samples of shape {shape} fails on a batch of shape {tuple(x.shape)}: {err}"
        ) from err
    finally:
        for m, training in modes.items():
            m.training = training
    got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
    if got != (2,):
        raise ValueError(
            f"{name} returned {got} for a batch of 2 samples of shape {shape}; a descriptor must return one score "
            "per sample: (B,), e.g. by summing over the other dimensions (x.flatten(1).sum(1))"
        )
    return net


def with_options(factory: DescriptorFactory, options: Mapping[str, Any], what: str = "options") -> DescriptorFactory:
    """``factory`` with keyword arguments ``options`` added or replaced (``functools.partial``), checked by name.

    Args:
        factory: a class, partial or function taking the sample shape first (a ``class_path`` config arrives as
            jsonargparse's partial of the class, whose keywords are its ``init_args``).
        options: keyword arguments of the factory, e.g. ``{"channels": [32, 64, 128, 256]}``.
        what: how the caller names ``options`` in errors (``"grid_options[64]"``).

    Raises:
        ValueError: a key is not a parameter of the factory (unless it takes ``**kwargs``); the message lists them.
    """
    if not options:
        return factory
    names, inner = set(), factory
    while isinstance(inner, partial):
        names |= set(inner.keywords)
        wrapped = [a for a in inner.args if isinstance(a, type)]  # jsonargparse: partial(call, instantiator, cls)
        inner = wrapped[-1] if wrapped else inner.func
    try:
        params = list(inspect.signature(inner).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: let the call itself complain
        params = [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        names |= {p.name for p in named[1:]}  # the first is the sample shape
        unknown = sorted(set(options) - names)
        if unknown:
            raise ValueError(
                f"{what} sets {', '.join(map(repr, unknown))}, which {getattr(inner, '__name__', inner)} does not "
                f"take; its parameters: {', '.join(sorted(names)) or 'none besides the sample shape'}"
            )
    return partial(factory, **options)


def init_gaussian(module: nn.Module, std: float | None) -> None:
    """Weights N(0, std²) and zero biases, as in the released codes; ``None`` keeps PyTorch's default."""
    if std is None:
        return
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class TextureDescriptor(Descriptor):
    """The ICML-2016 texture descriptor: fully convolutional, f summed over all positions and channels.

    Default layers (MatConvNet ``convNet_texture.m``; docs/methods.md, GenerativeConvNet): 15×15 stride 3 → 100,
    9×9 → 70, 7×7 → 30, each with padding k//2 and ReLU; weights N(0, 0.01²), biases 0. Being fully
    convolutional, it scores (and synthesizes) images of any size.

    Args:
        sample_shape: ``(C, H, W)`` of one sample; only ``C`` is used.
        channels: output channels of each layer.
        kernel_sizes: kernel size of each layer.
        strides: stride of each layer.
        activation: the nonlinearity after every layer, the last included (a class, or a callable making one).
        init_std: standard deviation of the Gaussian weight initialisation; ``None`` for PyTorch's default.
    """

    def __init__(
        self,
        sample_shape: Sequence[int],
        *,
        channels: Sequence[int] = (100, 70, 30),
        kernel_sizes: Sequence[int] = (15, 9, 7),
        strides: Sequence[int] = (3, 1, 1),
        activation: Activation = ReLU,
        init_std: float | None = 0.01,
    ) -> None:
        super().__init__(sample_shape)
        if not len(channels) == len(kernel_sizes) == len(strides) > 0:
            raise ValueError(
                f"channels, kernel_sizes and strides need one entry per layer; got {list(channels)}, "
                f"{list(kernel_sizes)}, {list(strides)}"
            )
        layers: list[nn.Module] = []
        c_in = self.sample_shape[0]
        for c_out, k, s in zip(channels, kernel_sizes, strides):
            layers += [nn.Conv2d(c_in, c_out, k, stride=s, padding=k // 2), activation()]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        init_gaussian(self, init_std)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, C, H, W) -> (B,)``: the sum of the top layer's responses."""
        self._check_channels(x)
        return self.body(x).flatten(1).sum(1)


class ObjectDescriptor(Descriptor):
    """The object/scene descriptor of the TensorFlow CoopNets code (Xie et al., AAAI 2018), 64×64 by default.

    Layers (docs/methods.md, CoopNets): 5×5 stride 2 → 64, 3×3 stride 2 → 128, 3×3 stride 1 → 256, each with
    LeakyReLU(0.2), then a full-size ("fc") layer to ``n_out`` = 100 outputs that are summed into f; weights
    N(0, 0.01²), biases 0, no normalisation. Padding is k//2 (TF's SAME pads one more pixel on the right and
    bottom for even sizes and stride 2: the output sizes agree).

    The object descriptor of the MatConvNet code (``convNet_object.m``, which the generative ConvNet and CoopNets
    codes use for object categories at 64×64) is this class with ``channels=[64, 128]``, ``kernel_sizes=[4, 2]``,
    ``strides=[2, 1]``, ``paddings=[2, 2]``, ``activation=ReLU`` and ``n_out=2``: 64×64 → 33×33 → 36×36, then the
    full-size layer (with ``GenerativeConvNet(layer_lr_multipliers=[1, 0.5, 0.2857])``, its per-layer rates).

    Args:
        sample_shape: ``(C, H, W)`` of one sample; the full-size layer is built for this ``H × W``.
        channels: output channels of each convolution.
        kernel_sizes: kernel size of each convolution.
        strides: stride of each convolution.
        paddings: zero padding of each convolution on every side (``None``: ``k // 2`` for kernel size k).
        n_out: number of outputs of the full-size layer (summed).
        activation: the nonlinearity after each convolution (a class, or a callable making one).
        init_std: standard deviation of the Gaussian weight initialisation; ``None`` for PyTorch's default.
    """

    def __init__(
        self,
        sample_shape: Sequence[int],
        *,
        channels: Sequence[int] = (64, 128, 256),
        kernel_sizes: Sequence[int] = (5, 3, 3),
        strides: Sequence[int] = (2, 2, 1),
        paddings: Sequence[int] | None = None,
        n_out: int = 100,
        activation: Activation = LeakyReLU,
        init_std: float | None = 0.01,
    ) -> None:
        super().__init__(sample_shape)
        if len(self.sample_shape) != 3:
            raise ValueError(f"ObjectDescriptor needs a (C, H, W) sample shape, got {self.sample_shape}")
        paddings = [k // 2 for k in kernel_sizes] if paddings is None else list(paddings)
        if not len(channels) == len(kernel_sizes) == len(strides) == len(paddings):
            raise ValueError(
                f"ObjectDescriptor needs one kernel size, stride and padding per layer: channels={list(channels)}, "
                f"kernel_sizes={list(kernel_sizes)}, strides={list(strides)}, paddings={paddings}"
            )
        layers: list[nn.Module] = []
        c_in, h, w = self.sample_shape
        for c_out, k, s, pad in zip(channels, kernel_sizes, strides, paddings):
            layers += [nn.Conv2d(c_in, c_out, k, stride=s, padding=pad), activation()]
            c_in, h, w = c_out, (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
            if h < 1 or w < 1:
                raise ValueError(
                    f"ObjectDescriptor's layer {len(layers) // 2} (kernel {k}, stride {s}, padding {pad}) leaves no "
                    f"output for samples of shape {self.sample_shape}: use larger images, or fewer or smaller layers"
                )
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in * h * w, n_out)
        init_gaussian(self, init_std)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, C, H, W) -> (B,)``: the sum of the full-size layer's outputs."""
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(
                f"ObjectDescriptor was built for samples of shape {self.sample_shape}, got a batch of shape "
                f"{tuple(x.shape)}: set the data's image size to match, or build the net for this size"
            )
        return self.fc(torch.flatten(self.body(x), 1)).sum(1)


# The released multi-grid descriptors (``Multigrid_learning/model.py``; docs/methods.md, MultigridMCD), by grid side:
# (channels, kernel sizes, strides) of the convolutions before the one-output dense layer.
_MULTIGRID_LAYERS = {
    4: ((96, 128, 256), (5, 3, 3), (2, 1, 1)),
    16: ((96, 128, 256, 512), (5, 3, 3, 3), (2, 1, 1, 1)),
    64: ((64, 128, 256, 512), (5, 5, 5, 5), (2, 2, 2, 2)),
}


class MultigridDescriptor(Descriptor):
    """The descriptor of one grid of the multi-grid generative ConvNet (Gao et al., CVPR 2018).

    Convolutions (padding k//2) each followed by batch normalisation and LeakyReLU(0.2), then a dense layer to one
    output; Xavier-uniform weights and zero biases, as in the released TF code. The default layers are the released
    code's for the grid side ``H``: ``des4`` for H ≤ 4 (5×5/2 → 96, 3×3 → 128, 3×3 → 256), ``des16`` for H ≤ 16
    (5×5/2 → 96, 3×3 → 128, 3×3 → 256, 3×3 → 512) and ``des64`` above (four 5×5/2 layers → 64, 128, 256, 512).

    Batch normalisation uses the statistics of the batch it is given, always (the TF code runs it with
    ``training=True`` and momentum 0 in learning and sampling alike, and never uses moving averages): so f of one
    image depends on the batch it is scored in. Observed and synthesized images are scored in separate calls, as in
    the released code; keep the batch size of sampling close to training's (docs/methods.md, MultigridMCD).

    Args:
        sample_shape: ``(C, H, W)`` of this grid's images; the dense layer is built for this size.
        channels: output channels of each convolution (``None``: the released code's for this grid).
        kernel_sizes: kernel size of each convolution (``None``: as ``channels``).
        strides: stride of each convolution (``None``: as ``channels``).
        width: multiplies every default channel count (0.25 makes a CPU-sized net); ignored with ``channels``.
        batch_norm: batch normalisation after every convolution (``False``: plain convolutions).
        activation: the nonlinearity after each convolution (a class, or a callable making one).
    """

    def __init__(
        self,
        sample_shape: Sequence[int],
        *,
        channels: Sequence[int] | None = None,
        kernel_sizes: Sequence[int] | None = None,
        strides: Sequence[int] | None = None,
        width: float = 1.0,
        batch_norm: bool = True,
        activation: Activation = LeakyReLU,
    ) -> None:
        super().__init__(sample_shape)
        if len(self.sample_shape) != 3:
            raise ValueError(f"MultigridDescriptor needs a (C, H, W) sample shape, got {self.sample_shape}")
        c_in, h, w = self.sample_shape
        side = next((s for s in sorted(_MULTIGRID_LAYERS) if h <= s), 64)
        default_channels, default_kernels, default_strides = _MULTIGRID_LAYERS[side]
        if channels is None:
            channels = [max(1, round(c * width)) for c in default_channels]
        kernel_sizes = default_kernels if kernel_sizes is None else kernel_sizes
        strides = default_strides if strides is None else strides
        if not len(channels) == len(kernel_sizes) == len(strides) > 0:
            raise ValueError(
                f"channels, kernel_sizes and strides need one entry per layer; got {list(channels)}, "
                f"{list(kernel_sizes)}, {list(strides)}"
            )
        layers: list[nn.Module] = []
        for c_out, k, s in zip(channels, kernel_sizes, strides):
            layers.append(nn.Conv2d(c_in, c_out, k, stride=s, padding=k // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out, track_running_stats=False))
            layers.append(activation())
            c_in, h, w = c_out, (h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in * h * w, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, C, H, W) -> (B,)``: the dense layer's output."""
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(
                f"MultigridDescriptor was built for images of shape {self.sample_shape}, got a batch of shape "
                f"{tuple(x.shape)}: each grid's descriptor scores that grid's images only"
            )
        return self.fc(torch.flatten(self.body(x), 1)).squeeze(1)
