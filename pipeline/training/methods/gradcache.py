"""GradCache: full-batch in-batch gradients with the memory of one chunk."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from pipeline.training import distributed
from pipeline.models.encoder import PASSAGE, QUERY
from . import register
from pipeline.sources.datasets import Example
from .inbatch import InBatch, chunks, texts_of


class RngState:
    """The CPU (and, when present, every CUDA device's) RNG state at one moment, so a forward
    pass can be replayed with the same dropout masks."""

    def __init__(self):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    @contextlib.contextmanager
    def replay(self):
        # fork_rng puts the outer stream back afterwards, so replaying leaves the global RNG
        # where pass 1 (and the noise drawn after it) left it.
        devices = list(range(torch.cuda.device_count())) if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


@dataclass
class CachedSide:
    """One side (queries or passages) of one chunk after pass 1. `leaves` are the gathered (global)
    pass-1 embeddings as grad-requiring leaves, each with this process's [start, end) rows (one
    process: the local rows); passages have two, positives and hard negatives."""

    side: str
    inputs: dict[str, torch.Tensor]
    rng: RngState
    first: torch.Tensor  # this process's pass-1 embedding
    leaves: list[tuple[torch.Tensor, int, int]]

    def cached_gradient(self) -> torch.Tensor:
        """This process's rows of dL/de (zeros for a leaf the loss did not reach)."""
        return torch.cat([leaf.grad[start:end] if leaf.grad is not None else leaf.detach()[start:end] * 0
                          for leaf, start, end in self.leaves])


@register("gradcache")
class GradCache(InBatch):
    """Gradient Cache over N_total = N_local * K examples, in chunks of N_local:

        embed_without_graph: e = sg(f(x_c)) for every chunk c (pass 1)
        cache_gradients:     L = InfoNCE(Q P^T / tau) on all of them, cache G = dL/de
        replay:              per chunk, re-embed with graph under the chunk's pass-1 RNG state
                             and back-propagate sum(f(x_c) * G_c) (pass 2)

    By the chain rule the parameter gradients equal full-batch in-batch training (N_total - 1
    negatives per query) while only one chunk's graph is alive. FANoise, if any, is drawn once
    on the full cached batch in pass 1; its gradient is the identity, so it is baked into G.

    Gao, Zhang, Han, Callan, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
    Setup", RepL4NLP 2021, arXiv 2101.06983.
    """

    emits = InBatch.emits + ("chunks", "replay_max_abs_diff")
    debug_replay = False  # keep (pass-1, pass-2) embeddings of the last update in `last_replay`

    accumulates = True

    def accumulate(self, examples: list[Example]) -> dict[str, float]:
        before = self.guide.seconds if self.guide is not None else 0.0
        cached = self.embed_without_graph(examples)
        loss, stats = self.cache_gradients(cached, examples)
        replay_diff = self.replay(cached)
        return {"loss": float(loss.detach()), **stats, "chunks": float(sum(c.side == QUERY for c in cached)),
                "replay_max_abs_diff": replay_diff, **self.guide_stats(before)}

    def embed_without_graph(self, examples: list[Example]) -> list["CachedSide"]:
        """Pass 1: every chunk's queries and passages embedded without a graph, in chunk order."""
        cached = []
        for batch in chunks(examples, self.micro_batch):
            local = distributed.local_slice(batch)
            queries, passages = texts_of(local)
            for texts, side in ((queries, QUERY), (passages, PASSAGE)):
                inputs = self.model.tokenize(texts, side)
                state = RngState()
                with torch.no_grad():
                    emb = self.encode(inputs, side)
                parts = (emb,) if side == QUERY else (emb[:len(local)], emb[len(local):])
                cached.append(CachedSide(side, inputs, state, emb.detach(), [self._gather_leaf(part) for part in parts]))
        return cached

    def cache_gradients(self, cached: list["CachedSide"], examples: list[Example]) -> tuple[torch.Tensor, dict]:
        """The full batch's loss on the pass-1 leaves, back-propagated as far as them: G = dL/de."""
        q = torch.cat([c.leaves[0][0] for c in cached if c.side == QUERY])
        p = torch.cat([c.leaves[0][0] for c in cached if c.side == PASSAGE])
        h = torch.cat([c.leaves[1][0] for c in cached if c.side == PASSAGE])
        loss, stats = self.batch_loss(q, p, h, examples)
        # fp16: the cached gradients carry the loss scale, so pass 2's parameter gradients do too
        # and the loop's scaler unscales (and checks) them once per update.
        self.scale_loss(loss).backward()
        return loss, stats

    def replay(self, cached: list["CachedSide"]) -> float:
        """Pass 2: each side re-embedded with its graph under its pass-1 RNG state, back-propagating
        its cached gradient; returns the largest difference from pass 1's embedding."""
        replay_diff, self.last_replay = 0.0, []
        for side in cached:
            with side.rng.replay():
                emb = self.encode(side.inputs, side.side)
            # The surrogate's gradient w.r.t. emb is this process's rows of the cached dL/de, so
            # backward through it adds exactly its share of the full-batch parameter gradient.
            torch.dot(emb.flatten(), side.cached_gradient().flatten()).backward()
            replay_diff = max(replay_diff, float((emb.detach() - side.first).abs().max()))
            if self.debug_replay:
                self.last_replay.append((side.first.clone(), emb.detach().clone()))
        return replay_diff

    @staticmethod
    def _gather_leaf(emb: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Pass 1's gathered rows (no graph) as a leaf, with this process's [start, end)."""
        if distributed.world_size() == 1:
            return emb.requires_grad_(), 0, emb.shape[0]
        counts = distributed.all_gather_floats([float(emb.shape[0])])
        start = int(sum(c[0] for c in counts[:distributed.rank()]))
        return distributed.gather(emb.detach()).requires_grad_(), start, start + emb.shape[0]
