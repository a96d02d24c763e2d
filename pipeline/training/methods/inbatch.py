"""In-batch negatives (DPR) and the helpers the other methods build on."""

from __future__ import annotations

from typing import Sequence

import torch

from pipeline.training import distributed
from pipeline.models.encoder import PASSAGE, QUERY
from pipeline.training.losses import InfoNCE
from . import register
from pipeline.sources.datasets import Example
from .base import TrainingMethod


def texts_of(examples: Sequence[Example]) -> tuple[list[str], list[str]]:
    """Query texts and passage texts, the passages laid out as [positives ; hard negatives]."""
    queries = [ex.query for ex in examples]
    passages = [ex.positive for ex in examples] + [neg for ex in examples for neg in ex.negatives]
    return queries, passages


def ids_of(examples: Sequence[Example] | None, rows: tuple[int, int, int] = (0, 0, 0)) -> tuple[list, list, list]:
    """Query ids, positive ids and hard-negative ids, laid out as `texts_of` lays out the texts
    (None where an example carries no id). No examples: `rows` unknown ids of each kind."""
    if examples is None:
        return tuple([None] * n for n in rows)
    negatives = [ex.negative_ids[i] if i < len(ex.negative_ids) else None
                 for ex in examples for i in range(len(ex.negatives))]
    return [ex.query_id for ex in examples], [ex.positive_id for ex in examples], negatives


def chunks(examples: Sequence[Example], size: int) -> list[Sequence[Example]]:
    return [examples[i:i + size] for i in range(0, len(examples), size)]


@register("inbatch")
class InBatch(TrainingMethod):
    """In-batch negatives over one batch of N examples (DPR):

        Q = f(queries), P = [g(positives) ; g(hard negatives)],  L = InfoNCE(Q P^T / tau)

    Each query sees N - 1 in-batch negatives plus every hard negative of the batch. Memory grows
    with N because the whole batch's graph is held until backward.

    Karpukhin et al., "Dense Passage Retrieval for Open-Domain Question Answering", EMNLP 2020.
    """

    accumulates = False

    def __init__(self, model, recipe, noise=None):
        super().__init__(model, recipe, noise)
        self.loss_fn = InfoNCE(float(self.recipe.temperature))
        self.n_local = int(self.recipe.batch_size)

    @property
    def micro_batch(self) -> int:
        """Examples per micro-batch (or GradCache chunk) over all processes."""
        return self.n_local * self.world

    # ------------------------------------------------------------------ shared building blocks
    def embed(self, examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Differentiable (q, positives, hard negatives) embeddings of a list of examples. With
        several processes each embeds its slice and the rows of all processes are gathered in
        rank order (gradient flows to the local rows only)."""
        local = distributed.local_slice(examples)
        queries, passages = texts_of(local)
        q = self.encode(self.model.tokenize(queries, QUERY), QUERY)
        p = self.encode(self.model.tokenize(passages, PASSAGE), PASSAGE)
        return distributed.gather(q), distributed.gather(p[:len(local)]), distributed.gather(p[len(local):])

    def add_noise(self, q: torch.Tensor, p: torch.Tensor, h: torch.Tensor):
        """FANoise on the query matrix and on the passage matrix [positives ; hard negatives]."""
        if self.noise is None:
            return q, p, h
        passages = self.noise(torch.cat([p, h]))
        return self.noise(q), passages[:len(p)], passages[len(p):]

    def guide_embeddings(self, q: torch.Tensor, p: torch.Tensor, h: torch.Tensor,
                         examples: Sequence[Example] | None) -> tuple[torch.Tensor, ...] | None:
        """The guide's (q, positives, hard negatives) rows for the same examples as q, p, h
        (None without a guide). "self": the clean training embeddings, detached. A guide model:
        each micro-batch's local slice encoded and gathered, in the layout `embed` gives."""
        if self.guide is None:
            return None
        if self.guide.is_self:
            return q.detach(), p.detach(), h.detach()
        if examples is None:
            raise ValueError("negative_filter with a guide model needs the examples' texts")
        parts = []
        for batch in chunks(examples, self.micro_batch):
            local = distributed.local_slice(batch)
            parts.append(self.guide.embed([ex.query for ex in local], [ex.positive for ex in local],
                                          [neg for ex in local for neg in ex.negatives]))
        return tuple(torch.cat(rows) for rows in zip(*parts))

    def batch_loss(self, q: torch.Tensor, p: torch.Tensor, h: torch.Tensor,
                   examples: Sequence[Example] | None = None) -> tuple[torch.Tensor, dict]:
        """Loss of current embeddings (before noise) of `examples` (the whole micro-batch over
        all processes, whose rows q, p, h are), plus the negatives each query saw."""
        guide = self.guide_embeddings(q, p, h, examples)
        q, p, h = self.add_noise(q, p, h)
        passages = torch.cat([p, h])
        query_ids, positive_ids, negative_ids = ids_of(examples, (len(q), len(p), len(h)))
        mask, stats = self.loss_mask(query_ids, positive_ids + negative_ids, *self._guide_matrix(guide), q.device)
        return self.loss_fn(q, passages, mask), {"negatives_per_query": float(len(passages) - 1), **stats}

    @staticmethod
    def _guide_matrix(guide) -> tuple:
        """(guide rows, guide columns [positives ; hard negatives]), or (None, None)."""
        return (None, None) if guide is None else (guide[0], torch.cat(guide[1:]))

    # ------------------------------------------------------------------ TrainingMethod
    def accumulate(self, examples: list[Example]) -> dict[str, float]:
        before = self.guide.seconds if self.guide is not None else 0.0
        loss, stats = self.batch_loss(*self.embed(examples), examples)
        self.scale_loss(loss).backward()
        return {"loss": float(loss.detach()), **stats, **self.guide_stats(before)}
