"""Sample-quality measures."""

from lightning_ebm.metrics.swd import laplacian_pyramid, sliced_wasserstein, swd

__all__ = ["laplacian_pyramid", "sliced_wasserstein", "swd"]
