"""Sample-quality measures: SWD needs no pretrained network; FID and KID take the Inception network or any
feature extractor."""

from lightning_ebm.metrics.fid import fid, kid
from lightning_ebm.metrics.swd import laplacian_pyramid, sliced_wasserstein, swd

__all__ = ["fid", "kid", "laplacian_pyramid", "sliced_wasserstein", "swd"]
