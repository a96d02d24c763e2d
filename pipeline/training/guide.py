"""Guided false-negative filtering: a guide model scores every column of the loss and removes
from a row's softmax the columns it rates as good as the row's own positive.

    g_ij = cos(guide(q_i), guide(d_j))
    absolute:  drop j from row i  when  g_ij > g_ii - margin
    relative:  drop j from row i  when  g_ij > g_ii - |g_ii| * margin
    the label column j = i is never dropped

This is the rule of sentence-transformers' GISTEmbedLoss / CachedGISTEmbedLoss (their
`margin_strategy`), restricted to the query-by-passage columns this project's InfoNCE has (no
query-query or passage-passage columns). Solatorio, "GISTEmbed: Guided In-sample Selection of
Training Negatives for Text Embedding Fine-tuning", arXiv 2402.16829 (2024); margins after
Moreira et al., "NV-Retriever: Improving text embedding models with effective hard-negative
mining", arXiv 2407.15831 (2024). docs/methods.md#guided-false-negative-filtering.

Guides:
- "self": the model being trained. Its guide embeddings are the training forward's own clean
  embeddings, detached (the same weights and dropout masks the loss sees, no extra forward;
  bank rows are their own guide embeddings, as stale as the bank is).
- a folder (a trained model, a Hugging Face encoder) or the packaged MiniLM: a frozen BiEncoder
  in eval mode, run under no_grad on the texts the training model sees, truncated to the same
  training lengths. Its embeddings of banked rows are banked beside them (ContAccum), so each
  text is guide-encoded once.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict
from typing import Sequence

import torch
from torch.nn import functional as F

from pipeline.training import distributed
from pipeline.core.common import PipelineError
from pipeline.models.encoder import PASSAGE, QUERY, BiEncoder, EncoderSpec
from pipeline.core.params import GUIDE_SELF, check_negative_filter, guide_problem


def load_guide(name: str, model: BiEncoder) -> BiEncoder:
    """The guide model: a trained model folder as saved, anything else (a Hugging Face folder,
    the packaged MiniLM) with the training encoder's pooling. Frozen, eval mode, on the
    training model's device."""
    problem = guide_problem(name)
    if problem:
        raise PipelineError(problem)
    from pathlib import Path

    if (Path(name).expanduser() / "bi_encoder.json").is_file():
        guide = BiEncoder.load(name)
    else:
        spec = EncoderSpec(**{**asdict(model.spec), "model": name, "tied": True, "random_init": False})
        guide = BiEncoder.from_spec(spec)
    guide.eval().requires_grad_(False)
    return guide.to(next(model.parameters()).device)


class GuideFilter:
    """Guide embeddings of a micro-batch and the filter mask they give (see the module doc).
    `seconds` accumulates the wall time spent on the guide (its forwards and the mask)."""

    def __init__(self, settings: dict, model: BiEncoder, autocast_dtype=None, chunk: int = 64):
        settings = check_negative_filter(settings)
        self.margin, self.margin_type = settings["margin"], settings["margin_type"]
        self.is_self = settings["guide"] == GUIDE_SELF
        self.model = model
        self.guide = None if self.is_self else load_guide(settings["guide"], model)
        self.autocast_dtype = autocast_dtype
        self.chunk = max(1, int(chunk))
        self.seconds = 0.0

    @property
    def dim(self) -> int:
        return (self.model if self.guide is None else self.guide).embedding_dim

    def embed(self, queries: Sequence[str], positives: Sequence[str],
              negatives: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """External guide: embeddings of this process's queries, positives and hard negatives,
        each gathered over the processes in rank order as the training embeddings are (so every
        process builds the same mask)."""
        t0 = time.perf_counter()
        with torch.no_grad():
            gq = self._encode(queries, QUERY)
            passages = self._encode(list(positives) + list(negatives), PASSAGE)
            out = tuple(distributed.gather(x) for x in (gq, passages[:len(positives)], passages[len(positives):]))
        self.seconds += time.perf_counter() - t0
        return out

    def _encode(self, texts: Sequence[str], side: str) -> torch.Tensor:
        device = next(self.guide.parameters()).device
        if not texts:
            return torch.zeros((0, self.dim), device=device)
        autocast = (torch.autocast(device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
                    else contextlib.nullcontext())
        parts = []
        for start in range(0, len(texts), self.chunk):
            # The guide reads what the trained model reads: the same texts cut at the training lengths.
            inputs = dict(self.guide.tokenizer(list(texts[start:start + self.chunk]), padding=True, truncation=True,
                                               max_length=self.model.max_length(side), return_tensors="pt"))
            with autocast:
                parts.append(self.guide.embed(inputs, side).float())
        return torch.cat(parts)

    def mask(self, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """(R x C) bool: True where the guide removes column j from row i; row i's label is column i."""
        t0 = time.perf_counter()
        with torch.no_grad():
            g = F.normalize(rows.detach().float(), dim=-1) @ F.normalize(columns.detach().float(), dim=-1).T
            labels = torch.arange(g.shape[0], device=g.device)
            positive = g[labels, labels].unsqueeze(1)
            threshold = positive - self.margin if self.margin_type == "absolute" \
                else positive - positive.abs() * self.margin
            drop = g > threshold
            drop[labels, labels] = False
        self.seconds += time.perf_counter() - t0
        return drop


__all__ = ["GuideFilter", "load_guide"]
