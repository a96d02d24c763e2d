"""GradCache: full-batch in-batch gradients with the memory of one chunk."""

from __future__ import annotations

import contextlib

import torch

from ..encoder import PASSAGE, QUERY
from . import register
from ..datasets import Example
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

    emits = ("loss", "negatives_per_query", "chunks", "replay_max_abs_diff")
    debug_replay = False  # keep (pass-1, pass-2) embeddings of the last update in `last_replay`

    @property
    def examples_per_update(self) -> int:
        return self.n_local * int(self.recipe["accumulation_steps"])

    def accumulate(self, examples: list[Example]) -> dict[str, float]:
        jobs = []  # (side, tokenized inputs, rng state, pass-1 embedding as a grad-requiring leaf)
        for batch in chunks(examples, self.n_local):
            queries, passages = texts_of(batch)
            for texts, side in ((queries, QUERY), (passages, PASSAGE)):
                inputs = self.model.tokenize(texts, side)
                state = RngState()
                with torch.no_grad():
                    emb = self.model.embed(inputs, side)
                jobs.append((side, inputs, state, emb.requires_grad_()))

        q = torch.cat([leaf for side, _, _, leaf in jobs if side == QUERY])
        passages = [leaf for side, _, _, leaf in jobs if side == PASSAGE]
        sizes = [len(b) for b in chunks(examples, self.n_local)]
        p = torch.cat([leaf[:n] for leaf, n in zip(passages, sizes)])
        h = torch.cat([leaf[n:] for leaf, n in zip(passages, sizes)])
        loss, stats = self.batch_loss(q, p, h)
        loss.backward()

        replay_diff, self.last_replay = 0.0, []
        for side, inputs, state, leaf in jobs:
            with state.replay():
                emb = self.model.embed(inputs, side)
            # The surrogate's gradient w.r.t. emb is the cached dL/de, so backward through it
            # adds exactly this chunk's share of the full-batch parameter gradient.
            torch.dot(emb.flatten(), leaf.grad.flatten()).backward()
            replay_diff = max(replay_diff, float((emb.detach() - leaf.detach()).abs().max()))
            if self.debug_replay:
                self.last_replay.append((leaf.detach().clone(), emb.detach().clone()))
        return {"loss": float(loss.detach()), **stats, "chunks": float(len(sizes)),
                "replay_max_abs_diff": replay_diff}
