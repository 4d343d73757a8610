"""FID and KID through torchmetrics, with the Inception network or any feature extractor.

Fréchet Inception Distance (Heusel et al., NeurIPS 2017) and Kernel Inception Distance (Bińkowski et al., ICLR
2018) compare the feature statistics of two image sets. The default features are those of the FID Inception-v3
(torchmetrics through ``torch-fidelity``, whose weights are downloaded once or read from ``weights_path``); any
``nn.Module`` mapping ``(N, C, H, W)`` images in [-1, 1] to ``(N, d)`` features can be used instead, offline.

:func:`fid` and :func:`kid` score two image sets in one process, even inside a DDP run. :class:`PooledFeatureScores`
scores the samples of all DDP processes together: each process adds its own samples, torchmetrics gathers the
feature statistics, and every process gets the score of the pooled samples.
"""

import math
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

Feature = int | nn.Module


def _batches(x: Tensor, size: int) -> Iterator[Tensor]:
    for start in range(0, len(x), size):
        yield x[start : start + size]


def _metric(kind: str, feature: Feature, weights_path: str | None, image_shape: tuple[int, ...], **kwargs):
    """A torchmetrics FID or KID object; the Inception network needs torch-fidelity and its weights."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    cls = FrechetInceptionDistance if kind == "fid" else KernelInceptionDistance
    if isinstance(feature, nn.Module):
        # FID probes a module without ``num_features`` with a float image of the data's shape (normalize=True)
        probe = {"input_img_size": tuple(image_shape)} if kind == "fid" else {}
        return cls(feature=feature, normalize=True, **probe, **kwargs)
    try:
        if weights_path is None:
            return cls(feature=feature, **kwargs)
        if kind == "fid":
            return cls(feature=feature, feature_extractor_weights_path=weights_path, **kwargs)
        from torchmetrics.image.fid import NoTrainInceptionV3  # KID takes no weights path: build the network here

        inception = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=[str(feature)], feature_extractor_weights_path=weights_path
        )
        return cls(feature=inception, **kwargs)
    except (ModuleNotFoundError, ImportError) as err:
        raise ImportError(
            f"{kind.upper()} with the Inception network needs torch-fidelity (pip install torch-fidelity): {err}. "
            "Or pass feature=<an nn.Module feature extractor>."
        ) from err
    except (OSError, RuntimeError) as err:  # the weights could not be downloaded or read
        raise RuntimeError(
            f"the FID Inception weights could not be loaded ({err}): download pt_inception-2015-12-05-6726825d.pth "
            "once and pass weights_path=..., or pass feature=<an nn.Module feature extractor>"
        ) from err


def _inputs(x: Tensor, feature: Feature) -> Tensor:
    """Images in [-1, 1] as the extractor takes them: unchanged for a module, uint8 RGB for the Inception network."""
    if isinstance(feature, nn.Module):
        return x.float()
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@torch.no_grad()
def fid(
    a: Tensor, b: Tensor, *, feature: Feature = 2048, weights_path: str | None = None, batch_size: int = 64
) -> float:
    """FID between image sets ``a: (N, C, H, W)`` and ``b: (M, C, H, W)`` in [-1, 1]; lower is better. The sets of
    this process only: nothing is gathered from other DDP processes (see :class:`PooledFeatureScores`).

    Args:
        a: one set, e.g. samples.
        b: the other, e.g. held-out data.
        feature: an Inception feature size (64, 192, 768, 2048) or an ``nn.Module`` feature extractor.
        weights_path: a local copy of the FID Inception weights (offline use).
        batch_size: images per forward pass of the extractor.
    """
    metric = _metric("fid", feature, weights_path, a.shape[1:], sync_on_compute=False).to(a.device)
    for chunk in _batches(b, batch_size):
        metric.update(_inputs(chunk, feature), real=True)
    for chunk in _batches(a, batch_size):
        metric.update(_inputs(chunk, feature), real=False)
    return float(metric.compute())


@torch.no_grad()
def kid(
    a: Tensor,
    b: Tensor,
    *,
    feature: Feature = 2048,
    weights_path: str | None = None,
    subset_size: int = 1000,
    subsets: int = 100,
    batch_size: int = 64,
) -> tuple[float, float]:
    """KID (mean, standard deviation over subsets) between image sets in [-1, 1]; lower is better.

    ``subset_size`` is lowered to the size of the smaller set, so small validation sets work (torchmetrics raises
    otherwise).
    """
    size = min(subset_size, len(a), len(b))
    kwargs = {"subset_size": size, "subsets": subsets, "sync_on_compute": False}
    metric = _metric("kid", feature, weights_path, a.shape[1:], **kwargs).to(a.device)
    for chunk in _batches(b, batch_size):
        metric.update(_inputs(chunk, feature), real=True)
    for chunk in _batches(a, batch_size):
        metric.update(_inputs(chunk, feature), real=False)
    mean, std = metric.compute()
    return float(mean), float(std)


def share(total: int, rank: int, world_size: int) -> int:
    """How many of ``total`` items process ``rank`` of ``world_size`` takes: items ``rank, rank + world_size, …``."""
    return len(range(rank, total, world_size))


def _rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the number of processes of the default group (0 and 1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class PooledFeatureScores:
    """FID and KID of the samples of all DDP processes together, against one fixed set of real images.

    Each process feeds its own shard of the real images once (:meth:`add_real`: images ``rank, rank + world_size,
    …``, so the pooled real set is the set itself, each image once, whatever the number of processes; feeding the
    whole set on every process would count each image ``world_size`` times, which shrinks FID's covariance
    estimate and biases KID's unbiased MMD²) and its own samples at every :meth:`score`. The torchmetrics objects
    keep feature sums (FID) and feature lists (KID) per process and gather them over ``torch.distributed`` (any
    backend, gloo included) in ``compute``, so every process gets the score of the pooled samples, the number one
    process would compute from all of them. ``score`` then forgets the samples and keeps the real features.
    Both methods must run on every process at the same points: ``score`` is a collective.

    Args:
        kinds: ``"fid"``, ``"kid"`` or both.
        feature: an Inception feature size (64, 192, 768, 2048) or an ``nn.Module`` feature extractor.
        weights_path: a local copy of the FID Inception weights.
        image_shape: ``(C, H, W)`` of the images.
        n_real: real images in all; every process holds all of them.
        n_fake: samples per score, all processes together; process ``rank`` brings ``share(n_fake, rank,
            world_size)`` of them.
        subset_size: KID's subset size, lowered to ``min(n_real, n_fake)``.
        subsets: KID's number of random subsets.
        batch_size: about this many images per forward pass of the extractor.
        seed: seeds KID's random subsets, so that every process computes the same value.
    """

    def __init__(
        self,
        kinds: Sequence[str],
        feature: Feature,
        weights_path: str | None,
        image_shape: Sequence[int],
        n_real: int,
        n_fake: int,
        *,
        subset_size: int = 1000,
        subsets: int = 100,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        self.rank, self.world_size = _rank_and_world_size()
        least = max(2, self.world_size)
        if min(n_real, n_fake) < least or batch_size < 1 or not set(kinds) <= {"fid", "kid"} or not kinds:
            raise ValueError(
                f"FID and KID over {self.world_size} process(es) need at least {least} real images and {least} "
                f"samples (two in all, one per process), batch_size >= 1 and kinds among fid, kid; got {n_real} real "
                f"images, {n_fake} samples, batch_size {batch_size}, kinds {list(kinds)}: hold out more images or "
                "draw more samples"
            )
        self.feature, self.n_real, self.n_fake = feature, n_real, n_fake
        self.batch_size, self.seed = batch_size, seed
        self.metrics = {}
        for kind in kinds:
            kwargs = {"subset_size": min(subset_size, n_real, n_fake), "subsets": subsets} if kind == "kid" else {}
            self.metrics[kind] = _metric(
                kind, feature, weights_path, tuple(image_shape), reset_real_features=False, **kwargs
            )
        self.has_real = False

    def to(self, device: torch.device | str) -> "PooledFeatureScores":
        """Move the extractor and the feature statistics to ``device``; returns ``self``."""
        for metric in self.metrics.values():
            metric.to(device)
        return self

    def _update(self, x: Tensor, total: int, real: bool) -> None:
        """Feed ``x`` in the same number of pieces on every process: KID gathers its feature lists entry by entry, so
        a process with one piece more would wait forever. ``total // world_size`` is every process's least share."""
        device = next(iter(self.metrics.values())).device
        pieces = max(1, math.ceil(total // self.world_size / self.batch_size))
        for piece in torch.tensor_split(x.to(device), pieces):
            for metric in self.metrics.values():
                metric.update(_inputs(piece, self.feature), real=real)

    @torch.no_grad()
    def add_real(self, real: Tensor) -> None:
        """Feed this process's shard of the real images ``real: (n_real, C, H, W)`` in [-1, 1], the whole set (the
        same on every process); once."""
        if self.has_real or len(real) != self.n_real:
            raise ValueError(
                f"add_real takes the {self.n_real} real images once; got {len(real)} images"
                + (" after they were already added" if self.has_real else "")
            )
        self._update(real[self.rank :: self.world_size], self.n_real, real=True)
        self.has_real = True

    @torch.no_grad()
    def score(self, fake: Tensor) -> dict[str, float]:
        """``{"fid": …, "kid": …}`` (KID: its mean over subsets) of the samples of all processes against the real
        images. ``fake: (share, C, H, W)`` in [-1, 1] are this process's ``share(n_fake, rank, world_size)`` samples.
        A collective: every process calls it."""
        expected = share(self.n_fake, self.rank, self.world_size)
        if not self.has_real or len(fake) != expected:
            raise ValueError(
                f"score needs add_real first and this process's {expected} of the {self.n_fake} samples; got "
                f"{len(fake)} samples" + ("" if self.has_real else " before add_real")
            )
        self._update(fake, self.n_fake, real=False)
        scores = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for kind, metric in self.metrics.items():
                value = metric.compute()
                scores[kind] = float(value[0] if kind == "kid" else value)
                metric.reset()
        return scores
