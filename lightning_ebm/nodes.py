"""Nodes of a trained model's score networks, as score functions to sample: generative visualisation.

Dai, Lu and Wu (ICLR 2015) visualise any node of a ConvNet, a class score or an intermediate filter, by sampling
``p(x) ∝ exp(f_node(x)) N(x; 0, σ² I)``. A node is named by a string:

- ``score``: the method's own score ``f(x)`` (a descriptor's; ``log Σ_k exp f_k`` of a classifier; the finest grid's
  descriptor of a multi-grid model);
- ``class:<k>``: the k-th output of a net with one output per class;
- ``layer:<module>:<channel>``: the response of one channel of a layer, summed over positions, where ``<module>`` is
  the layer's name in the model (``net.features.0``; ``python -m lightning_ebm visualize --ckpt_path CKPT --node
  list`` prints them all with their channel ranges).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_ebm.errors import UsageError
from lightning_ebm.methods.base import EBMModule


@dataclass
class ScoreNet:
    """A net whose nodes can be sampled: its name in the model, the module and the shape of one input."""

    name: str
    net: nn.Module
    input_shape: tuple[int, ...]


def score_nets(model: EBMModule) -> list[ScoreNet]:
    """The model's score networks (descriptors, classifiers), coarsest first; empty for a generator-only method."""
    return [ScoreNet(name, net, tuple(shape)) for name, (net, shape) in model.score_nets().items()]


def probe(entry: ScoreNet) -> Tensor:
    """The net's output for a batch of two zero inputs, on the net's device, without gradients."""
    param = next(entry.net.parameters(), None)
    with torch.no_grad():
        return entry.net(torch.zeros(2, *entry.input_shape, device=None if param is None else param.device))


def layer_shapes(entry: ScoreNet) -> dict[str, tuple[int, ...]]:
    """Output shape ``(C, ...)`` of every sub-module of ``entry.net`` that returns a tensor, keyed by its name in the
    model, from one forward pass of a zero input."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, module in entry.net.named_modules():
        if not name:
            continue

        def record(_m: nn.Module, _i: object, out: object, key: str = f"{entry.name}.{name}") -> None:
            if isinstance(out, Tensor) and out.dim() >= 2:
                shapes[key] = tuple(out.shape[1:])

        hooks.append(module.register_forward_hook(record))
    try:
        probe(entry)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def describe_nodes(model: EBMModule) -> str:
    """Every node name the model offers, one per line, with channel ranges."""
    lines = ["score"]
    for entry in score_nets(model):
        out = probe(entry)
        if out.dim() == 2:
            lines.append(f"class:0 … class:{out.shape[1] - 1}   ({entry.name}'s {out.shape[1]} outputs)")
        for name, shape in layer_shapes(entry).items():
            lines.append(f"layer:{name}:<0..{shape[0] - 1}>   output {'x'.join(str(s) for s in shape)}")
    return "\n".join(lines)


def node_function(model: EBMModule, node: str) -> tuple[Callable[[Tensor], Tensor], tuple[int, ...]]:
    """``f_node: (B, *input_shape) -> (B,)`` for the node named ``node``, and the input shape it samples.

    Raises:
        UsageError: the model has no score network, or the node does not exist (the message lists those that do).
    """
    nets = score_nets(model)
    if not nets:
        raise UsageError(
            f"{type(model).__name__} has no score network (a generator only), so it has no node to visualise: "
            "visualize takes a classifier (GenerativeGradient) or a descriptor (GenerativeConvNet, "
            "ContrastiveDivergence, CoopNets, MultigridMCD)"
        )
    kind, _, rest = node.partition(":")
    if kind == "score" and not rest:
        return model.score, model.sample_shape
    if kind == "class" and rest.isdigit():
        k = int(rest)
        entry = nets[-1]
        out = probe(entry)
        if out.dim() == 2 and k < out.shape[1]:
            return (lambda x: entry.net(x)[:, k]), entry.input_shape
        classes = f"class:0 … class:{out.shape[1] - 1}" if out.dim() == 2 else "none (it has one score per sample)"
        raise UsageError(f"unknown node {node!r}: the classes of {type(model).__name__} are {classes}")
    if kind == "layer":
        name, _, channel = rest.rpartition(":")
        for entry in nets:
            shapes = layer_shapes(entry)
            if name in shapes and channel.isdigit() and int(channel) < shapes[name][0]:
                return _channel_response(model, entry, name, int(channel)), entry.input_shape
    nodes = "; ".join(" ".join(line.split()) for line in describe_nodes(model).splitlines())
    raise UsageError(f"unknown node {node!r}; the nodes of {type(model).__name__} are: {nodes}")


def _channel_response(model: EBMModule, entry: ScoreNet, name: str, channel: int) -> Callable[[Tensor], Tensor]:
    """The sum over positions of one channel of the layer ``name`` (a name in the model) of ``entry.net``."""
    layer = dict(model.named_modules())[name]

    def f(x: Tensor) -> Tensor:
        seen: list[Tensor] = []
        hook = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
        try:
            entry.net(x)
        finally:
            hook.remove()
        return seen[0][:, channel].flatten(1).sum(1)

    return f
