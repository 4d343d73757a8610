"""What makes a sampler step fast without changing what it computes: a compiled score network, CUDA graphs, a
lower-precision forward and backward with the chain kept in float32, and the channels-last memory layout.

An EBM spends nearly all its time in the sampler, whose step is ``f(x)``, ``∂f/∂x`` and an element-wise update.
``torch.compile`` cannot take the whole step (it graph-breaks at ``autograd.grad``; docs/engineering.md,
"torch.compile"), so it compiles the score function and autograd differentiates through the compiled graph. The net's
parameters must be frozen while sampling (the mixins do it): the compiled backward is one autograd node, which computes
the weight gradients too when they require grad. Inductor keeps what it compiled in its cache folder
(``TORCHINDUCTOR_CACHE_DIR``, default ``/tmp/torchinductor_<user>``), so a later run of the same net and shape starts in
about a second instead of compiling again.

CUDA graphs (``cuda_graphs=True``) are ``torch.compile``'s ``mode="reduce-overhead"``: the compiled forward and its
backward are recorded once per input shape and replayed, so a step costs a few graph launches instead of one launch
per kernel, which is what limits small nets on fast GPUs. The chains keep one shape for a whole run, so the graphs
are recorded once. A replay overwrites the previous call's outputs; the samplers use them before the next call and
hand callbacks copies.
"""

import warnings
import weakref
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, Literal

import torch
from torch import Tensor

Precision = Literal["bf16", "fp16"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_compiled: "weakref.WeakKeyDictionary[Any, dict[Any, Callable]]" = weakref.WeakKeyDictionary()
_warned_no_graphs = False  # the CPU fallback's warning is given once per process


def compiled(f: Callable[[Tensor], Tensor], mode: str | None = None) -> Callable[[Tensor], Tensor]:
    """``torch.compile(f, mode=mode)``, made once per function (or per module and method for a bound method) and
    mode, and reused."""
    owner = getattr(f, "__self__", None)
    key, name = (owner, f.__func__) if owner is not None else (f, None)
    cache = _compiled.setdefault(key, {})
    if (name, mode) not in cache:
        cache[name, mode] = torch.compile(f, mode=mode)
    return cache[name, mode]


def graphs_on(x: Tensor, cuda_graphs: bool) -> bool:
    """Whether CUDA graphs can be used for chains ``x``: only on a CUDA device; elsewhere a warning says that the
    score is compiled without them (so a GPU recipe still runs a short test on the CPU)."""
    global _warned_no_graphs
    if cuda_graphs and x.device.type != "cuda":
        if _warned_no_graphs:  # once: Lightning's warning filters would show it again at every step
            return False
        _warned_no_graphs = True
        warnings.warn(
            f"cuda_graphs needs chains on a CUDA device, these are on {x.device.type}: the score network is compiled "
            "without CUDA graphs; set cuda_graphs off (compile on) to silence this",
            stacklevel=3,
        )
        return False
    return cuda_graphs


def autocast(device: torch.device, precision: Precision | None) -> Any:
    """The autocast context for the score's forward (and so its backward) in ``precision``; a no-op for ``None``."""
    if precision is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def fast_score(
    f: Callable[[Tensor], Tensor],
    *,
    compile: bool = False,
    precision: Precision | None = None,
    cuda_graphs: bool = False,
) -> Callable[[Tensor], Tensor]:
    """``f`` compiled (with CUDA graphs) and/or under autocast, returning float32 scores ``(B,)``; ``f`` itself when
    nothing is asked. Each call under ``cuda_graphs`` starts a new replay, which overwrites the last one's outputs."""
    if precision is not None and precision not in _DTYPES:
        raise ValueError(f"precision must be 'bf16', 'fp16' or None, got {precision!r}")
    if not compile and precision is None and not cuda_graphs:
        return f
    inner = compiled(f, "reduce-overhead") if cuda_graphs else compiled(f) if compile else f

    def score(x: Tensor) -> Tensor:
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(x.device, precision):
            out = inner(x)
        return out.float()

    return score
