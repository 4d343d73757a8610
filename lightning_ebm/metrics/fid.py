"""FID and KID through torchmetrics, with the Inception network or any feature extractor.

Fréchet Inception Distance (Heusel et al., NeurIPS 2017) and Kernel Inception Distance (Bińkowski et al., ICLR
2018) compare the feature statistics of two image sets. The default features are those of the FID Inception-v3
(torchmetrics through ``torch-fidelity``, whose weights are downloaded once or read from ``weights_path``); any
``nn.Module`` mapping ``(N, C, H, W)`` images in [-1, 1] to ``(N, d)`` features can be used instead, offline.
"""

from collections.abc import Iterator

import torch
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
    """FID between image sets ``a: (N, C, H, W)`` and ``b: (M, C, H, W)`` in [-1, 1]; lower is better.

    Args:
        a: one set, e.g. samples.
        b: the other, e.g. held-out data.
        feature: an Inception feature size (64, 192, 768, 2048) or an ``nn.Module`` feature extractor.
        weights_path: a local copy of the FID Inception weights (offline use).
        batch_size: images per forward pass of the extractor.
    """
    metric = _metric("fid", feature, weights_path, a.shape[1:]).to(a.device)
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
    metric = _metric("kid", feature, weights_path, a.shape[1:], subset_size=size, subsets=subsets).to(a.device)
    for chunk in _batches(b, batch_size):
        metric.update(_inputs(chunk, feature), real=True)
    for chunk in _batches(a, batch_size):
        metric.update(_inputs(chunk, feature), real=False)
    mean, std = metric.compute()
    return float(mean), float(std)
