"""What makes a sampler step fast without changing what it computes: a compiled score network, a lower-precision
forward and backward with the chain kept in float32, and the channels-last memory layout.

An EBM spends nearly all its time in the sampler, whose step is ``f(x)``, ``∂f/∂x`` and an element-wise update.
``torch.compile`` cannot take the whole step (it graph-breaks at ``autograd.grad``, ``reference/environment.md`` §8),
so it compiles the score function and autograd differentiates through the compiled graph. Inductor keeps what it
compiled in its cache folder (``TORCHINDUCTOR_CACHE_DIR``, default ``/tmp/torchinductor_<user>``), so a later run of
the same net and shape starts in about a second instead of compiling again.
"""

import weakref
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, Literal

import torch
from torch import Tensor

Precision = Literal["bf16", "fp16"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_compiled: "weakref.WeakKeyDictionary[Any, dict[Any, Callable]]" = weakref.WeakKeyDictionary()


def compiled(f: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``torch.compile(f)``, made once per function (or per module and method for a bound method) and reused."""
    owner = getattr(f, "__self__", None)
    key, name = (owner, f.__func__) if owner is not None else (f, None)
    cache = _compiled.setdefault(key, {})
    if name not in cache:
        cache[name] = torch.compile(f)
    return cache[name]


def autocast(device: torch.device, precision: Precision | None) -> Any:
    """The autocast context for the score's forward (and so its backward) in ``precision``; a no-op for ``None``."""
    if precision is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def fast_score(
    f: Callable[[Tensor], Tensor], *, compile: bool = False, precision: Precision | None = None
) -> Callable[[Tensor], Tensor]:
    """``f`` compiled and/or under autocast, returning float32 scores ``(B,)``; ``f`` itself when neither is asked."""
    if precision is not None and precision not in _DTYPES:
        raise ValueError(f"precision must be 'bf16', 'fp16' or None, got {precision!r}")
    if not compile and precision is None:
        return f
    inner = compiled(f) if compile else f

    def score(x: Tensor) -> Tensor:
        with autocast(x.device, precision):
            out = inner(x)
        return out.float()

    return score
