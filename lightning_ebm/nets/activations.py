"""The nets' rectifiers: torch's own in eager mode, and a mask-free form of the same function under ``torch.compile``.

Inductor on the CPU (torch 2.13) saves a ReLU's or LeakyReLU's backward mask as a bool tensor in the contiguous
layout while the convolution before it runs channels-last, and transposes between them: one conv + LeakyReLU,
forward and input gradient, took 11.8 ms compiled against 3.5 ms eager (16 images of 3 × 64², 2 CPU cores).
``max(x, s·x)`` (slope 0 ≤ s ≤ 1) and ``(x + |x|)/2`` are the same numbers (bit for bit: the larger of x and the
rounded s·x; 2x halved) and compile to kernels without a mask: 2.95 and 3.5 ms. Only the derivative at exactly 0
differs (a half of each side instead of the left one), a set of measure zero that sampling never depends on.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Activation = Callable[[], nn.Module]
"""What the nets take as ``activation``: a class (``lightning_ebm.nets.ReLU``) or, in a config, a class with
arguments (``{class_path: lightning_ebm.nets.LeakyReLU, init_args: {negative_slope: 0.01}}``)."""


class LeakyReLU(nn.LeakyReLU):
    """``nn.LeakyReLU`` with the papers' default slope 0.2 (torch's is 0.01); compiled as ``max(x, s·x)``."""

    def __init__(self, negative_slope: float = 0.2, inplace: bool = False) -> None:
        super().__init__(negative_slope, inplace)

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling() and 0 <= self.negative_slope <= 1 and not self.inplace:
            return torch.maximum(x, x * self.negative_slope)
        return F.leaky_relu(x, self.negative_slope, self.inplace)


class ReLU(nn.ReLU):
    """``nn.ReLU``, compiled as ``(x + |x|) / 2``."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling() and not self.inplace:
            return 0.5 * (x + x.abs())
        return F.relu(x, self.inplace)
