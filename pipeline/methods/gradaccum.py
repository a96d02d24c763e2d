"""Gradient accumulation: K independent micro-batches per optimizer update."""

from __future__ import annotations

import torch

from . import register
from ..datasets import Example
from .inbatch import InBatch, chunks


@register("gradaccum")
class GradAccum(InBatch):
    """Gradient accumulation over K micro-batches of N_local examples:

        L = (1/K) * sum_k InfoNCE(Q_k P_k^T / tau)

    Memory is that of one micro-batch, but each query only sees the N_local - 1 negatives (plus
    hard negatives) of its own micro-batch. FANoise, if any, is drawn per micro-batch.

    Kim, Lee, Kang, "A Gradient Accumulation Method for Dense Retriever under Memory
    Constraint", NeurIPS 2024, arXiv 2406.12356 (the GradAccum baseline, Sec. 3).
    """

    emits = ("loss", "negatives_per_query", "micro_batches")

    @property
    def examples_per_update(self) -> int:
        return self.micro_batch * int(self.recipe["accumulation_steps"])

    def after_micro_batch(self, q: torch.Tensor, p: torch.Tensor, h: torch.Tensor) -> None:
        """Hook run after each micro-batch's backward, with its clean embeddings (ContAccum)."""

    def accumulate(self, examples: list[Example]) -> dict[str, float]:
        micro = chunks(examples, self.micro_batch)
        # A short final update still averages over the micro-batches it actually has.
        k = len(micro)
        total, negatives = 0.0, 0.0
        for batch in micro:
            q, p, h = self.embed(batch)
            loss, stats = self.batch_loss(q, p, h)
            (self.scale_loss(loss) / k).backward()
            total += float(loss.detach()) / k
            negatives += stats["negatives_per_query"] / k
            self.after_micro_batch(q.detach(), p.detach(), h.detach())
        return {"loss": total, "negatives_per_query": negatives, "micro_batches": float(k)}
