"""Pure sampling functions (descriptor and generator-posterior Langevin, HMC) and the persistent state they continue
from."""

from lightning_ebm.samplers.banks import Bank, ChainBank, LatentBank
from lightning_ebm.samplers.hmc import hmc
from lightning_ebm.samplers.langevin import langevin, posterior_langevin

__all__ = ["Bank", "ChainBank", "LatentBank", "hmc", "langevin", "posterior_langevin"]
