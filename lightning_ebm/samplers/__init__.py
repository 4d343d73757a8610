"""Pure sampling functions and the persistent state they continue from."""

from lightning_ebm.samplers.banks import Bank, ChainBank
from lightning_ebm.samplers.langevin import langevin

__all__ = ["Bank", "ChainBank", "langevin"]
