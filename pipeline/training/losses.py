"""Contrastive losses over a query-by-passage score matrix."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class InfoNCE(nn.Module):
    """InfoNCE (multiple-negatives ranking) loss with the positive of query i in column i:

        S = Q P^T / tau,    L = -(1/R) * sum_{i<R} log softmax_j(S_ij)[j = i]

    Q is (R x d); P is (C x d) with C >= R, so columns past R (hard negatives, banked passages
    that have no query row) act as extra negatives for every row.

    Oord, Li, Vinyals, "Representation Learning with Contrastive Predictive Coding",
    arXiv 1807.03748; in-batch form as in Karpukhin et al., "Dense Passage Retrieval for
    Open-Domain Question Answering", EMNLP 2020.
    """

    def __init__(self, temperature: float = 0.05):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def scores(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return q @ p.T / self.temperature

    def forward(self, q: torch.Tensor, p: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`mask` (bool, R x C, optional): True removes that column from that row's softmax
        (its score becomes -inf), e.g. a known positive of the row's query that sits in another
        column (docs/methods.md#false-negatives). A row's own label column is never removed."""
        if p.shape[0] < q.shape[0]:
            raise ValueError(f"InfoNCE needs at least one passage per query row: Q has {q.shape[0]} "
                             f"rows, P has {p.shape[0]}")
        labels = torch.arange(q.shape[0], device=q.device)
        scores = self.scores(q, p)
        if mask is not None:
            if mask.shape != scores.shape:
                raise ValueError(f"mask shape {tuple(mask.shape)} does not match scores {tuple(scores.shape)}")
            mask = mask.to(scores.device).clone()
            mask[labels, labels] = False
            scores = scores.masked_fill(mask, float("-inf"))
        return F.cross_entropy(scores, labels)


__all__ = ["InfoNCE"]
