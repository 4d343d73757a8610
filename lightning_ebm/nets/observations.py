"""Linear observation operators ``y = A x`` for learning a generator from indirect data.

Han et al. (AAAI 2017) learn the generator from compressed observations of the images instead of the images: the model
becomes ``y = A g(z) + N(0, s² I)`` and alternating back-propagation runs unchanged on it, with ``A g`` in place of
``g`` (docs/methods.md, AlternatingBackprop). Which operator the paper used is not known to us, so both common kinds are
here: a random Gaussian projection (compressed sensing) and block averaging (down-sampling). Both are fixed: built from
the sample shape (and a seed), identical on every process and in every run, so nothing about them needs to be
checkpointed.
"""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class Observation(nn.Module):
    """Base of the operators: ``forward(x: (B, *sample_shape)) -> (B, *observed_shape)``, linear in ``x``."""

    def __init__(self, sample_shape: Sequence[int], observed_shape: Sequence[int]) -> None:
        super().__init__()
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.observed_shape = tuple(int(s) for s in observed_shape)


ObservationFactory = Callable[[Sequence[int]], Observation]


class RandomProjection(Observation):
    """``y = A vec(x)`` with a fixed ``m × d`` matrix of independent N(0, 1/d) entries, ``m = round(ratio · d)``.

    With entries of variance 1/d each measurement has the spread of one pixel, so the observation noise ``s`` keeps
    its meaning. The matrix is drawn from ``seed`` when the operator is built (the same on every process).

    Args:
        sample_shape: ``(C, H, W)`` (or any shape) of one image.
        ratio: measurements per pixel, in (0, 1].
        seed: seed of the matrix.
    """

    def __init__(self, sample_shape: Sequence[int], *, ratio: float = 0.25, seed: int = 0) -> None:
        d = 1
        for s in sample_shape:
            d *= int(s)
        m = round(ratio * d)
        if not 0 < ratio <= 1 or m < 1:
            raise ValueError(
                f"RandomProjection needs a ratio in (0, 1] that leaves at least one measurement of the {d} pixels; "
                f"got ratio={ratio}"
            )
        super().__init__(sample_shape, (m,))
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("matrix", torch.randn(m, d, generator=g) / d**0.5, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, *sample_shape) -> (B, m)``."""
        return x.flatten(1) @ self.matrix.T


class BlockAverage(Observation):
    """The mean of every ``factor × factor`` block of pixels: a ``factor``-times down-sampled image.

    Args:
        sample_shape: ``(C, H, W)``, both sides multiples of ``factor``.
        factor: side of the averaged blocks.
    """

    def __init__(self, sample_shape: Sequence[int], *, factor: int = 4) -> None:
        c, h, w = (int(s) for s in sample_shape)
        if factor < 1 or h % factor or w % factor:
            raise ValueError(
                f"BlockAverage needs image sides that are multiples of factor; got {h}x{w} and factor={factor}: choose "
                "a factor that divides both"
            )
        super().__init__(sample_shape, (c, h // factor, w // factor))
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, C, H, W) -> (B, C, H/factor, W/factor)``."""
        return F.avg_pool2d(x, self.factor)
