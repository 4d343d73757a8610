"""Classification ConvNets ``f(x): (B, C, H, W) -> (B, K)``, the class scores (logits) of Dai, Lu and Wu (ICLR 2015).

Each class score defines a generative model ``p(x | k) ∝ exp(f_k(x)) q(x)``; the scores are the pre-softmax
outputs, so the same net is a softmax classifier and K descriptors.
"""

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from lightning_ebm.nets.activations import ReLU


class ConvClassifier(nn.Module):
    """Blocks of ``kernel × kernel`` convolution, ReLU and 2×2 max-pooling, then a hidden fully connected layer.

    With ``channels=(32, 64)`` and 8×8 or 16×16 inputs it is a digit classifier for the CPU; with
    ``channels=(96, 256, 384, 384, 256)``, ``hidden=4096`` and 224×224 inputs it has the depth and widths of the
    AlexNet-style net the paper pre-trains on ImageNet (max-pooling after every block instead of AlexNet's three).

    Args:
        sample_shape: ``(C, H, W)``, each side divisible by ``2^len(channels)``.
        num_classes: K.
        channels: output channels of the convolution blocks.
        kernel: convolution kernel size (padding keeps the size).
        hidden: units of the hidden fully connected layer; 0 for none.
        dropout: dropout before the last layer.
    """

    def __init__(
        self,
        sample_shape: Sequence[int],
        *,
        num_classes: int = 10,
        channels: Sequence[int] = (32, 64),
        kernel: int = 3,
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c, h, w = (int(s) for s in sample_shape)
        factor = 2 ** len(channels)
        if h % factor or w % factor or num_classes < 2:
            raise ValueError(
                f"ConvClassifier with {len(channels)} pooling blocks needs image sides divisible by {factor} and at "
                f"least 2 classes; got {h}x{w} and num_classes={num_classes}: change the image size or the channels"
            )
        self.sample_shape, self.num_classes = (c, h, w), num_classes
        layers: list[nn.Module] = []
        for out in channels:
            layers += [nn.Conv2d(c, out, kernel, padding=kernel // 2), ReLU(), nn.MaxPool2d(2)]
            c = out
        self.features = nn.Sequential(*layers)
        flat = c * (h // factor) * (w // factor)
        head: list[nn.Module] = [nn.Flatten()]
        if hidden:
            head += [nn.Linear(flat, hidden), ReLU()]
            flat = hidden
        head += [nn.Dropout(dropout), nn.Linear(flat, num_classes)]
        self.head = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, C, H, W) -> (B, K)``, the class scores."""
        return self.head(self.features(x))


ClassifierFactory = Callable[[Sequence[int]], ConvClassifier]
