"""One Langevin step of the framework against a plain PyTorch loop, and peak memory against the number of steps.

    python bench/sampler.py [--net texture|object] [--batch N] [--size S] [--device cpu|cuda]

Both sides run the same net, batch, device and update rule (Xie et al. 2016):
``x ← x − (δ²/2)(x/σ² − ∂f/∂x) + δ ε``. The plain loop is what a paper's code does: a fresh tensor each step,
``autograd.grad`` with respect to x, parameters left trainable. The framework is measured twice: the pure
``langevin`` function, and a method's ``self.langevin`` (the mixin, which freezes the parameters while sampling).
Timings interleave the contenders and report medians; memory is the peak measured in a fresh process.
"""

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from functools import partial

import torch
from torch import nn

from lightning_ebm.methods import GenerativeConvNet
from lightning_ebm.nets import ObjectDescriptor, TextureDescriptor
from lightning_ebm.samplers import langevin

DELTA, SIGMA = 0.0046, 0.0154


def plain_langevin(net: nn.Module, x: torch.Tensor, n_steps: int, generator: torch.Generator) -> torch.Tensor:
    """The loop as the released codes write it."""
    for _ in range(n_steps):
        x = x.detach().requires_grad_(True)
        grad = torch.autograd.grad(net(x).sum(), x)[0]
        x = (
            x
            - 0.5 * DELTA**2 * (x / SIGMA**2 - grad)
            + DELTA * torch.randn(x.shape, generator=generator, device=x.device)
        )
    return x.detach()


def build(args: argparse.Namespace) -> tuple[GenerativeConvNet, torch.Tensor]:
    """The method (its net is the one both sides use) and the starting batch."""
    channels = 1 if args.net == "texture" else 3
    shape = (channels, args.size, args.size)
    net = TextureDescriptor if args.net == "texture" else partial(ObjectDescriptor, init_std=0.01)
    model = GenerativeConvNet(net=net, sample_shape=shape, langevin_step_size=DELTA, langevin_sigma=SIGMA)
    model = model.to(args.device)
    x0 = 0.1 * torch.randn(args.batch, *shape, generator=torch.Generator().manual_seed(0)).to(args.device)
    return model, x0


def contenders(model: GenerativeConvNet, x0: torch.Tensor, device: str):
    """name -> callable(n_steps) running that many Langevin steps from x0."""
    gen = lambda: torch.Generator(device=device).manual_seed(0)  # noqa: E731
    f = model.net
    return {
        "plain loop": lambda n: plain_langevin(f, x0, n, gen()),
        "langevin()": lambda n: langevin(lambda x: f(x), x0, n_steps=n, step_size=DELTA, sigma=SIGMA, generator=gen()),
        "mixin (frozen)": lambda n: model.langevin(x0, n_steps=n, rng=gen()),
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(args: argparse.Namespace) -> dict[str, float]:
    """Median milliseconds per Langevin step for each contender, measured interleaved."""
    model, x0 = build(args)
    runs = contenders(model, x0, args.device)
    for run in runs.values():  # warm-up, denormals flushed as the CLI does
        run(3)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            sync(args.device)
            start = time.perf_counter()
            run(args.steps)
            sync(args.device)
            times[name].append((time.perf_counter() - start) / args.steps * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_memory_child(args: argparse.Namespace) -> None:
    """In a fresh process: run one contender for ``--memory-steps`` steps and print its peak memory in MiB above
    what the process held before (CUDA: the allocator's peak; CPU: resident memory polled every millisecond)."""
    model, x0 = build(args)
    run = contenders(model, x0, args.device)[args.contender]
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run(args.memory_steps)
        print(json.dumps({"peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20}))
        return
    base, peak, done = _rss_mib(), [0.0], threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.001)

    thread = threading.Thread(target=poll)
    thread.start()
    run(args.memory_steps)
    done.set()
    thread.join()
    print(json.dumps({"peak_mib": max(peak[0], _rss_mib()) - base}))


def peak_memory(args: argparse.Namespace, contender: str, steps: int) -> float:
    """Peak memory (MiB above the warmed-up process) of ``steps`` steps, in a fresh process."""
    cmd = [sys.executable, __file__, "--child", "--contender", contender, "--memory-steps", str(steps)]
    cmd += ["--net", args.net, "--batch", str(args.batch), "--size", str(args.size), "--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", choices=["texture", "object"], default="texture")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per contender")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contender", default="mixin (frozen)", help=argparse.SUPPRESS)
    parser.add_argument("--memory-steps", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    if args.child:
        peak_memory_child(args)
        return

    print(f"# Langevin step: {args.net} descriptor, batch {args.batch}, {args.size}x{args.size}, {args.device}")
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    ms = time_steps(args)
    print("\n| sampler | ms / step | ratio to the plain loop |\n| --- | ---: | ---: |")
    for name, value in ms.items():
        print(f"| {name} | {value:.2f} | {value / ms['plain loop']:.3f} |")
    print("\n| sampler | peak MiB, 10 steps | peak MiB, 200 steps | ratio 200/10 |\n| --- | ---: | ---: | ---: |")
    for name in ("plain loop", "mixin (frozen)"):
        short, long = peak_memory(args, name, 10), peak_memory(args, name, 200)
        print(f"| {name} | {short:.1f} | {long:.1f} | {long / max(short, 1e-9):.2f} |")


if __name__ == "__main__":
    main()
