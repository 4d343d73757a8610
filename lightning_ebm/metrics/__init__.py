"""Sample-quality measures: SWD needs no pretrained network; FID and KID take the Inception network or any
feature extractor, in one process (``fid``, ``kid``) or pooled over DDP processes (``PooledFeatureScores``)."""

from lightning_ebm.metrics.fid import PooledFeatureScores, fid, kid, share
from lightning_ebm.metrics.swd import laplacian_pyramid, sliced_wasserstein, swd

__all__ = ["PooledFeatureScores", "fid", "kid", "laplacian_pyramid", "share", "sliced_wasserstein", "swd"]
