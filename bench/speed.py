"""Speed of the framework against plain PyTorch and against the machine, written to ``bench/RESULTS.md``.

    python bench/speed.py [--quick] [--out bench/RESULTS.md]
    python bench/speed.py --langevin-only --device cuda     # table 1 on a GPU, with the CUDA-graph variants
    python bench/speed.py --only iteration startup          # measure these tables, keep the others in the file

One table per question, all measured in this run on this machine:

1. **Langevin step, framework against a plain loop**: the papers' ReLU texture descriptor, the LeakyReLU object
   descriptor of CoopNets, and the same object descriptor with SiLU; the plain loop as the released codes write it
   (a fresh tensor per step, parameters trainable) against the framework's mixin, eager, with ``compile``, with
   channels-last, both, and ``precision="bf16"`` (the net under bf16 autocast, the chain in float32); on a GPU also
   with CUDA graphs. The plain loop is also timed twice: the ratio of the two is the measurement's own spread.
2. **Achieved GFLOP/s** of each step (FLOPs counted by ``torch.utils.flop_counter`` over one step: forward and the
   input gradient) against the machine's float32 matmul rate (a 2048² ``torch.mm``, the physical limit here).
3. **Peak memory against the number of Langevin steps** (10 against 200 steps, each in a fresh process).
4. **Training iterations per second** of every CPU recipe (two fits of different lengths through the CLI; the
   difference cancels start-up) and the sampler steps per second that implies.
5. **DataLoader images per second** of the ImageNet DataModule on the same files, streamed from them (per worker)
   and preloaded into memory (with the time of decoding them once), against plain Pillow (``bench/dataloader.py``).
6. **One training iteration of each method** through the framework (the recipe through the CLI, the Lightning loop,
   the recipe's callbacks) against a hand-written plain PyTorch loop doing the same arithmetic on preloaded tensors,
   the plain loop timed twice (``bench/iteration.py``).
7. **Start-up**: seconds from the command to the first training step of the main job, against ``import torch``
   alone (``bench/startup.py``).
"""

import argparse
import datetime
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
import yaml
from budget import ROOT, train_for
from sampler import DELTA, SIGMA, peak_memory, plain_langevin
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_ebm.methods import GenerativeConvNet
from lightning_ebm.nets import ObjectDescriptor, TextureDescriptor

NETS = {
    "texture descriptor (ReLU; ICML 2016)": (TextureDescriptor, (1, 64, 64), 4),
    "object descriptor (LeakyReLU; CoopNets)": (partial(ObjectDescriptor, init_std=0.01), (3, 64, 64), 16),
    "object descriptor with SiLU": (partial(ObjectDescriptor, init_std=0.01, activation=nn.SiLU), (3, 64, 64), 16),
    "object descriptor with SiLU, strides 2-2-2": (
        partial(ObjectDescriptor, init_std=0.01, activation=nn.SiLU, strides=(2, 2, 2)),
        (3, 64, 64),
        16,
    ),
}

RECIPES = {  # recipe: (shorter fit, longer fit) in iterations; the difference takes 10-20 s
    "texture": (5, 45),
    "cd_texture": (5, 155),
    "coopnets_digits": (5, 105),
    "coopnets_texture": (5, 65),
    "multigrid_digits": (5, 45),
    "abp_faces": (10, 160),
    "abp_texture": (10, 610),
    "generative_gradient_digits": (20, 1020),
}


def matmul_gflops(device: str = "cpu", repeats: int = 10) -> float:
    """The device's float32 matmul rate: the best over square products of 1024, 2048 and 4096."""
    rates = []
    for n in (1024, 2048, 4096):
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        torch.mm(a, b)
        rates.append(2 * n**3 / min(_timed(lambda a=a, b=b: torch.mm(a, b)) for _ in range(repeats)) / 1e9)
    return max(rates)


def _timed(fn) -> float:
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def step_flops(net: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one Langevin step's net work: ``f(x)`` and ``∂f/∂x`` (weights frozen)."""
    for p in net.parameters():
        p.requires_grad_(False)
    with FlopCounterMode(display=False) as counter:
        x = x.detach().requires_grad_(True)
        net(x).sum().backward()  # the FLOPs of autograd.grad(., x): only x needs a gradient
    for p in net.parameters():
        p.requires_grad_(True)
    return counter.get_total_flops()


VARIANTS = {  # column: the mixin's settings
    "eager": {},
    "compile": {"langevin_compile": True},
    "channels_last": {"langevin_channels_last": True},
    "compile + channels_last": {"langevin_compile": True, "langevin_channels_last": True},
    "bf16": {"langevin_precision": "bf16"},
}
CUDA_VARIANTS = {  # added on a GPU
    "cuda graphs": {"langevin_cuda_graphs": True},
    "bf16 + channels_last + cuda graphs": {
        "langevin_precision": "bf16", "langevin_channels_last": True, "langevin_cuda_graphs": True
    },
}  # fmt: skip


def langevin_row(
    name: str, factory, shape: tuple[int, ...], batch: int, repeats: int, steps: int, machine: float, device: str
) -> str:
    """One net: median ms per step of the plain loop, the framework's ratio to it in every variant, and GFLOP/s."""
    torch.manual_seed(0)
    x0 = 0.1 * torch.randn(batch, *shape, device=device)
    models = {}
    for variant, settings in variants(device).items():
        models[variant] = GenerativeConvNet(
            net=factory, sample_shape=shape, langevin_step_size=DELTA, langevin_sigma=SIGMA, **settings
        ).to(device)
        models[variant].load_state_dict(models["eager"].state_dict())

    def gen() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(0)

    plain = lambda n: plain_langevin(models["eager"].net, x0, n, gen())  # noqa: E731
    runs = {"plain": plain, "plain again": plain}  # the same loop twice: the measurement's own spread
    runs.update({v: lambda n, m=m: m.langevin(x0, n_steps=n, rng=gen()) for v, m in models.items()})
    for run in runs.values():
        run(3)  # warm-up (and the compile)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):  # interleaved, medians
        for k, run in runs.items():
            times[k].append(_timed(lambda run=run: run(steps)) / steps * 1e3)
    ms = {k: statistics.median(v) for k, v in times.items()}
    gflop = step_flops(models["eager"].net, x0) / 1e9
    best = min((v for v in models if "bf16" not in v), key=ms.__getitem__)
    ratios = " | ".join(f"{ms[v] / ms['plain']:.3f}" for v in models)
    return (
        f"| {name} ({batch}) | {ms['plain']:.2f} | {ms['plain again'] / ms['plain']:.3f} | {ratios} "
        f"| {gflop / (ms['eager'] / 1e3) / machine:.0%} "
        f"| {best}: {gflop / (ms[best] / 1e3) / machine:.0%} |"
    )


def variants(device: str) -> dict[str, dict]:
    """The framework's variants measured on ``device``: CUDA graphs only on a GPU."""
    return VARIANTS | (CUDA_VARIANTS if device.startswith("cuda") else {})


def langevin_table(repeats: int, steps: int, machine: float, device: str = "cpu") -> list[str]:
    """Tables 1 and 2 for every net."""
    names = variants(device)
    rows = ["| net (batch) | plain loop ms/step | plain again / plain (noise) | "
            + " | ".join(f"{v} / plain" for v in names)
            + " | float32 GFLOP/s eager / matmul | the fastest float32 variant / matmul |",
            "| --- |" + " ---: |" * (len(names) + 4)]  # fmt: skip
    for name, (factory, shape, batch) in NETS.items():
        rows.append(langevin_row(name, factory, shape, batch, repeats, steps, machine, device))
    return rows


def memory_table() -> list[str]:
    """Table 3: peak memory of the plain loop and the framework after 10 and 200 steps."""
    args = argparse.Namespace(net="texture", batch=4, size=64, device="cpu")
    rows = ["| sampler (texture descriptor, 4 chains of 64²) | peak MiB, 10 steps | 200 steps | ratio |",
            "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for contender in ("plain loop", "mixin (frozen)"):
        short, long = peak_memory(args, contender, 10), peak_memory(args, contender, 200)
        rows.append(f"| {contender} | {short:.1f} | {long:.1f} | {long / max(short, 1e-9):.2f} |")
    return rows


def sampler_steps(recipe: Path) -> tuple[int, str]:
    """Sampler steps per training iteration of a recipe, and what they are."""
    init = yaml.safe_load(recipe.read_text())["model"]["init_args"]
    if "grids" in init or "Multigrid" in recipe.read_text():
        grids = init.get("grids", [4, 16])
        return init.get("langevin_steps", 30) * len(grids), f"Langevin, {len(grids)} grids"
    if "langevin_steps" in init:
        return init["langevin_steps"], "Langevin"
    if "generator_steps" in init:
        return init["generator_steps"], "latent Langevin"
    return 0, "none"


def method_table(quick: bool) -> list[str]:
    """Table 4: training iterations per second of every CPU recipe."""
    rows = [
        "| recipe | iterations / s | sampler steps / iteration | sampler steps / s |",
        "| --- | ---: | ---: | ---: |",
    ]
    extra = ["--trainer.callbacks=[]", "--trainer.limit_val_batches=0", "--checkpoint.every_n_train_steps=100000"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, (short, long) in RECIPES.items():
            if quick:
                short, long = short, short + max(2, (long - short) // 5)
            recipe = ROOT / "conf" / "experiments" / f"{name}.yaml"
            walls = [train_for(recipe, f"{name}-{n}", extra, None, Path(tmp), steps=n)[1] for n in (short, long)]
            its = (long - short) / max(walls[1] - walls[0], 1e-9)
            per, kind = sampler_steps(recipe)
            rows.append(f"| {name} | {its:.2f} | {per} ({kind}) | {its * per:.0f} |")
    return rows


def dataloader_table() -> list[str]:
    """Table 5: ``bench/dataloader.py``'s table: streamed and preloaded images per second, and plain Pillow's."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "dataloader.py")], capture_output=True, text=True)
    return out.stdout.strip().splitlines() if out.returncode == 0 else [f"bench/dataloader.py failed: {out.stderr}"]


def imagenet_index_table(quick: bool) -> list[str]:
    """Table 8: ``bench/imagenet_index.py``: indexing 1.28 M ImageNet files, its memory, and 8 ranks' first batches."""
    sizes = ["10000"] if quick else ["10000", "100000", "1281167"]
    cmd = [sys.executable, str(ROOT / "bench" / "imagenet_index.py"), "--together", "--sizes", *sizes]
    out = subprocess.run(cmd, capture_output=True, text=True)
    return out.stdout.strip().splitlines() if out.returncode == 0 else [f"bench/imagenet_index.py failed: {out.stderr}"]


def iteration_table(quick: bool) -> list[str]:
    """Table 6: one training iteration of each method through the framework against a plain PyTorch loop
    (``bench/iteration.py``; the multi-grid paper size only with ``--device cuda`` there: minutes per iteration on a
    CPU)."""
    from iteration import tables  # bench/iteration.py

    configs = None if quick else ["descriptor", "coopnets", "cd", "multigrid_digits", "abp", "generative_gradient"]
    return tables(quick=quick, configs=configs).splitlines()


def startup_table(quick: bool) -> list[str]:
    """Table 7: from the command to the first training step of the main job, and its phases (``bench/startup.py``)."""
    import startup  # bench/startup.py

    rows = startup.table(startup.measure(1 if quick else 3)).splitlines()
    return [*rows, "", "Where the `fit` row's time goes (one more process, `python bench/startup.py --phases`):", "",
            *startup.phase_table(startup.phases()).splitlines()]  # fmt: skip


SECTIONS = {  # name: (heading, table(quick, machine))
    "langevin": (
        "Langevin step: framework against a plain PyTorch loop, and against the machine",
        lambda quick, machine: langevin_table(3 if quick else 7, 5 if quick else 20, machine),
    ),
    "memory": ("Peak memory against the number of Langevin steps", lambda quick, machine: memory_table()),
    "recipes": ("Training speed of the CPU recipes", lambda quick, machine: method_table(quick)),
    "dataloader": ("DataLoader", lambda quick, machine: dataloader_table()),
    "iteration": ("Whole training iteration against plain PyTorch", lambda quick, machine: iteration_table(quick)),
    "startup": ("Start-up: from the command to the first training step", lambda quick, machine: startup_table(quick)),
    "imagenet_index": (
        "Full-size ImageNet: indexing 1.28 M files and 8 ranks' first batches",
        lambda quick, machine: imagenet_index_table(quick),
    ),
}


def merged(old: str, new: dict[str, list[str]]) -> str:
    """``old`` (a RESULTS.md) with the sections of ``new`` (heading: lines) replaced, or appended when missing."""
    parts = old.split("\n## ")
    head, sections = parts[0], {p.split("\n", 1)[0]: p for p in parts[1:]}
    for heading, lines in new.items():
        sections[heading] = "\n".join([heading, "", *lines, ""])
    return "\n## ".join([head, *sections.values()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and iterations (a smoke run)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--langevin-only", action="store_true", help="only the Langevin-step table, printed")
    parser.add_argument("--device", default="cpu", help="the Langevin table's device, e.g. cuda (with --langevin-only)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(SECTIONS),
        help="measure these tables and replace them in --out, keeping the others (each says when it was measured)",
    )
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    if args.langevin_only:
        machine = matmul_gflops(args.device)
        print(f"{args.device}: float32 matmul {machine:.1f} GFLOP/s; torch {torch.__version__}")
        print("\n".join(langevin_table(3 if args.quick else 7, 5 if args.quick else 20, machine, args.device)))
        return
    machine = matmul_gflops()
    cpu = platform.processor() or platform.machine()
    about = (
        f"{datetime.date.today()}; torch {torch.__version__}; {cpu}, {torch.get_num_threads()} threads; "
        f"float32 matmul {machine:.1f} GFLOP/s (torch.mm of 1024², 2048² and 4096², the best)."
    )
    names = args.only or list(SECTIONS)
    tables = {}
    for name in names:
        heading, table = SECTIONS[name]
        tables[heading] = ([f"Measured {about}", ""] if args.only else []) + table(args.quick, machine)
    out = Path(args.out)
    if args.only and out.is_file():
        text = merged(out.read_text(), tables)
    else:
        title = "# Speed of lightning_ebm (written by `python bench/speed.py`, `make bench`)"
        text = merged("\n".join([title, "", about, ""]), tables)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
