"""GradCache: full-batch in-batch gradients with the memory of one chunk."""

from __future__ import annotations

import contextlib

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


@register("gradcache")
class GradCache(InBatch):
    """Gradient Cache over N_total = N_local * K examples, in chunks of N_local:

        pass 1: e = sg(f(x_c)) for every chunk c (no graph), L = InfoNCE(Q P^T / tau) on all of
                them, cache G = dL/de
        pass 2: per chunk, re-embed with graph under the chunk's pass-1 RNG state and
                back-propagate sum(f(x_c) * G_c)

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
        # Per chunk and side: tokenized local inputs, the RNG state before pass 1, the local
        # pass-1 embedding, and the gathered (global) embeddings as grad-requiring leaves with
        # this process's [start, end) rows in each. One process: the leaves are the local rows.
        before = self.guide.seconds if self.guide is not None else 0.0
        jobs, sizes = [], []
        for batch in chunks(examples, self.micro_batch):
            local = distributed.local_slice(batch)
            queries, passages = texts_of(local)
            sizes.append(len(batch))
            for texts, side in ((queries, QUERY), (passages, PASSAGE)):
                inputs = self.model.tokenize(texts, side)
                state = RngState()
                with torch.no_grad():
                    emb = self.encode(inputs, side)
                parts = (emb,) if side == QUERY else (emb[:len(local)], emb[len(local):])
                leaves = [self._gather_leaf(part) for part in parts]
                jobs.append((side, inputs, state, emb.detach(), leaves))

        q = torch.cat([leaves[0][0] for side, _, _, _, leaves in jobs if side == QUERY])
        p = torch.cat([leaves[0][0] for side, _, _, _, leaves in jobs if side == PASSAGE])
        h = torch.cat([leaves[1][0] for side, _, _, _, leaves in jobs if side == PASSAGE])
        loss, stats = self.batch_loss(q, p, h, examples)
        # fp16: the cached gradients carry the loss scale, so pass 2's parameter gradients do too
        # and the loop's scaler unscales (and checks) them once per update.
        self.scale_loss(loss).backward()

        replay_diff, self.last_replay = 0.0, []
        for side, inputs, state, first, leaves in jobs:
            with state.replay():
                emb = self.encode(inputs, side)
            cached = torch.cat([leaf.grad[start:end] if leaf.grad is not None else leaf.detach()[start:end] * 0
                                for leaf, start, end in leaves])
            # The surrogate's gradient w.r.t. emb is this process's rows of the cached dL/de, so
            # backward through it adds exactly its share of the full-batch parameter gradient.
            torch.dot(emb.flatten(), cached.flatten()).backward()
            replay_diff = max(replay_diff, float((emb.detach() - first).abs().max()))
            if self.debug_replay:
                self.last_replay.append((first.clone(), emb.detach().clone()))
        return {"loss": float(loss.detach()), **stats, "chunks": float(len(sizes)),
                "replay_max_abs_diff": replay_diff, **self.guide_stats(before)}

    @staticmethod
    def _gather_leaf(emb: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Pass 1's gathered rows (no graph) as a leaf, with this process's [start, end)."""
        if distributed.world_size() == 1:
            return emb.requires_grad_(), 0, emb.shape[0]
        counts = distributed.all_gather_floats([float(emb.shape[0])])
        start = int(sum(c[0] for c in counts[:distributed.rank()]))
        return distributed.gather(emb.detach()).requires_grad_(), start, start + emb.shape[0]
