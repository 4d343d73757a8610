"""The gradient handling of the original MatConvNet descriptor codes (docs/methods.md, GenerativeConvNet).

``process_epoch_dual.m::accumulate_gradients1`` divides each layer's gradient by the number of spatial positions of
that layer's output (``net.numFilters(l) = H·W``), then, where the largest absolute entry of a weight or bias
gradient exceeds ``cap1`` (20/255 for textures, 8 for objects), rescales that whole tensor so that its largest
entry is ``cap1`` (a max-norm rescaling, not an element-wise clamp), before momentum SGD with weight decay; biases
learn at twice the rate. The TF and
PyTorch ports use plain Adam instead; the paper recipes use this family.
"""

from collections.abc import Sequence

import torch
from torch import nn


@torch.no_grad()
def output_positions(net: nn.Module, sample_shape: Sequence[int]) -> dict[nn.Parameter, int]:
    """Map every parameter of each Conv/Linear layer of ``net`` to the number of spatial positions of its output.

    Runs one forward pass on a zero input of ``sample_shape`` to read the output sizes.
    """
    sizes: dict[nn.Module, int] = {}
    hooks = [
        m.register_forward_hook(lambda mod, _, out: sizes.__setitem__(mod, int(out[0, 0].numel())))
        for m in net.modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
    ]
    try:
        p = next(net.parameters())
        net(torch.zeros(1, *sample_shape, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
    return {param: n for module, n in sizes.items() for param in module.parameters(recurse=False)}


def parameter_layers(net: nn.Module) -> list[nn.Module]:
    """The modules of ``net`` that hold parameters themselves (its layers: convolutions, linear maps), in the order
    of ``net.modules()``: what MatConvNet's per-layer ``learningRate`` is indexed by."""
    return [m for m in net.modules() if next(m.parameters(recurse=False), None) is not None]


@torch.no_grad()
def scale_and_cap_gradients(positions: dict[nn.Parameter, int], cap: float | None) -> None:
    """Divide each gradient by its layer's output positions, then rescale any whose max-abs entry exceeds ``cap``."""
    for param, n in positions.items():
        if param.grad is None:
            continue
        param.grad.div_(n)
        if cap is not None:  # on the device: min(1, cap / max|g|), no host synchronisation
            param.grad.mul_((cap / param.grad.abs().max()).clamp(max=1.0))
