"""Gradient accumulation: K independent micro-batches per optimizer update."""

from __future__ import annotations

import torch

from . import register
from pipeline.sources.datasets import Example
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

    emits = InBatch.emits + ("micro_batches",)

    accumulates = True

    def after_micro_batch(self, q: torch.Tensor, p: torch.Tensor, h: torch.Tensor, batch=None) -> None:
        """Hook run after each micro-batch's backward, with its clean embeddings and its examples
        (ContAccum)."""

    def accumulate(self, examples: list[Example]) -> dict[str, float]:
        before = self.guide.seconds if self.guide is not None else 0.0
        micro = chunks(examples, self.micro_batch)
        # A short final update still averages over the micro-batches it actually has.
        k = len(micro)
        per_batch = []
        for batch in micro:
            q, p, h = self.embed(batch)
            loss, stats = self.batch_loss(q, p, h, batch)
            (self.scale_loss(loss) / k).backward()
            per_batch.append({"loss": float(loss.detach()), **stats})
            self.after_micro_batch(q.detach(), p.detach(), h.detach(), batch)
        # Per-update statistics: the mean over micro-batches, the maximum for *_max columns.
        combined = {}
        for key in per_batch[0]:
            values = [stats[key] for stats in per_batch]
            combined[key] = max(values) if key.endswith("_max") else sum(values) / k
        return {**combined, "micro_batches": float(k), **self.guide_stats(before)}
