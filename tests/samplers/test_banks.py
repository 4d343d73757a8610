"""ChainBank: persistent chains per rank, restored per rank, re-sharded with a warning."""

import pytest
import torch

from lightning_ebm.samplers import ChainBank


def test_set_get_and_shape_check():
    bank = ChainBank(3, (1, 4, 4))
    assert not bank.initialized and bank.rank_state() is None
    x = torch.randn(3, 1, 4, 4, requires_grad=True)
    bank.set(x)
    assert bank.initialized and not bank.get().requires_grad
    torch.testing.assert_close(bank.get(), x.detach())
    with pytest.raises(ValueError, match=r"\(3, 1, 4, 4\)"):
        bank.set(torch.randn(2, 1, 4, 4))


def test_empty_bank_says_so():
    with pytest.raises(RuntimeError, match="empty"):
        ChainBank(2, (3,)).get()
    with pytest.raises(ValueError, match="n_chains"):
        ChainBank(0, (3,))


def test_restore_gives_each_rank_its_own_chains():
    gathered = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)  # 2 ranks, 3 chains, shape (2,)
    for rank in range(2):
        bank = ChainBank(3, (2,))
        bank.restore(gathered, rank=rank, world_size=2)
        assert torch.equal(bank.get(), gathered[rank])


def test_restore_reshards_when_the_world_changes():
    gathered = torch.arange(2 * 3, dtype=torch.float32).reshape(2, 3, 1)  # 6 chains saved by 2 ranks
    bank = ChainBank(4, (1,))
    note = bank.restore(gathered, rank=1, world_size=2)
    assert bank.get().flatten().tolist() == [4.0, 5.0, 0.0, 1.0]  # chains 4..7 of the pool, cycled
    assert note == (
        "the 6 saved chains (3 per process x 2 processes) were pooled in rank order and dealt out again, 4 per "
        "process to 2 processes (2 of them continue a saved chain a second time)"
    )
    assert ChainBank(3, (1,)).restore(gathered, rank=0, world_size=2) is None  # each rank's own: nothing to say
    assert "4 saved chains are left out" in ChainBank(2, (1,)).restore(gathered, rank=0, world_size=1)


def test_restore_refuses_another_sample_shape():
    with pytest.raises(ValueError, match="sample shape"):
        ChainBank(2, (1, 8, 8)).restore(torch.zeros(1, 2, 1, 4, 4), rank=0, world_size=1)
