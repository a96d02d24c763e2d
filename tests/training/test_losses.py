"""InfoNCE against a hand-written softmax."""

import pytest
import torch

from pipeline.training.losses import InfoNCE


def manual(q, p, tau):
    logits = q @ p.T / tau
    logp = logits - logits.logsumexp(dim=1, keepdim=True)
    rows = torch.arange(q.shape[0])
    return -logp[rows, rows].mean()


@pytest.mark.parametrize("extra", [0, 5])
@pytest.mark.parametrize("tau", [1.0, 0.05])
def test_matches_manual_softmax(extra, tau):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, 8, generator=g)
    p = torch.randn(4 + extra, 8, generator=g)
    torch.testing.assert_close(InfoNCE(tau)(q, p), manual(q, p, tau))


def test_extra_columns_are_negatives_only():
    q = torch.eye(3)
    p_plain = torch.eye(3)
    p_more = torch.cat([torch.eye(3), torch.ones(2, 3)])
    loss = InfoNCE(1.0)
    assert loss(q, p_more) > loss(q, p_plain)


def test_rejects_fewer_passages_than_queries_and_bad_temperature():
    with pytest.raises(ValueError):
        InfoNCE(1.0)(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError):
        InfoNCE(0.0)
