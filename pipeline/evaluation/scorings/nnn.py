"""Nearest Neighbor Normalization (NNN).

Chowdhury, Wang, Shenoy, Kiela, Schwettmann, Shaham. "Nearest Neighbor Normalization Improves
Multimodal Retrieval", EMNLP 2024 (arXiv 2410.24114). Definitions and choices:
docs/methods.md#nearest-neighbor-normalization-nnn.
"""

from __future__ import annotations

import numpy as np

from pipeline.evaluation import querybank as qb
from . import register_scoring
from .base import Scoring, ScoringInputs


def bank_state(inputs: ScoringInputs) -> qb.QueryBank:
    """The job's reference bank, chosen before encoding and encoded once on first use; NNN and
    QB-Norm share it through `inputs.extra`."""
    bank = inputs.extra.get("query_bank")
    if bank is None:
        p = inputs.params
        split = p.query_bank.split or "train"
        bank = qb.bank_queries(inputs.dataset, split, p.split, inputs.query_ids, p.query_bank.size,
                               p.query_bank.seed)
        inputs.extra["query_bank"] = bank
    if bank.emb is None and inputs.encode is not None:
        bank.emb = np.asarray(inputs.encode([inputs.dataset.queries[q] for q in bank.qids]))
    return bank


def exact_search(inputs: ScoringInputs) -> bool:
    """A flat search index is exact, so the corrected score is searched exactly too."""
    return inputs.params.index == "flat"


def search_record(inputs: ScoringInputs) -> dict:
    if exact_search(inputs):
        return {"search": "exact"}
    return {"search": "rerank", "candidates": inputs.params.query_bank.candidates}


@register_scoring("nnn")
class NNN(Scoring):
    """S(q, d) = q . d - alpha * b_d, with b_d the mean of the k largest r . d over the reference
    queries r (training queries by default). The `lambda` column holds alpha (0: the dot
    product); k is the bracketed setting, `nnn[k=16]`."""

    uses_lambda = True
    parameter = "α"
    label = "NNN"
    order = 30
    caption = "Nearest Neighbor Normalization: minus alpha times each document's mean top-k reference similarity"

    def __init__(self, lam: float | None = None, setting: str = "", k: int | str | None = None):
        if k is None:
            if not setting.startswith("k="):
                raise ValueError(f"nnn: expected a setting 'k=<int or all>', got {setting!r}")
            k = setting[2:]
            k = k if k == "all" else int(k)
        super().__init__(lam, f"k={k}")
        self.k = k

    @classmethod
    def variants(cls, params) -> list[Scoring]:
        return [cls(alpha, k=k) for k in params.nnn.k for alpha in params.nnn.alpha]

    @classmethod
    def from_setting(cls, setting: str, lam):
        return cls(lam, setting)

    @classmethod
    def headline_lambda(cls, evaluation, lam):
        alphas = (evaluation or {}).get("nnn", {}).get("alpha") or [0.5]
        return float(alphas[0])

    @classmethod
    def check(cls, params) -> None:
        for i, k in enumerate(params.nnn.k):
            qb.check_k(k, f"nnn.k[{i}]")
        for i, alpha in enumerate(params.nnn.alpha):
            qb.check_alpha(alpha, f"nnn.alpha[{i}]")
        if params.query_bank.size is not None:
            for i, k in enumerate(params.nnn.k):
                qb.check_k_fits(k, params.query_bank.size, f"nnn.k[{i}]", "query_bank.size")

    def prepare(self, inputs: ScoringInputs) -> None:
        # Before any encoding: the bank must exist and hold at least k queries.
        bank = bank_state(inputs)
        qb.check_k_fits(self.k, bank.size, "nnn.k", f"{inputs.dataset.root}/qrels/{bank.split}.tsv")

    def corrections(self, inputs: ScoringInputs) -> np.ndarray:
        """b_d for every document, once per job and k (every alpha shares it)."""
        cache = inputs.extra.setdefault("nnn", {})
        if self.k not in cache:
            bank = bank_state(inputs)
            cache[self.k] = qb.neighbour_means(inputs.docs, bank.emb, qb.resolve_k(self.k, bank.size))
        return cache[self.k]

    def rankings(self, index, inputs: ScoringInputs, top_k: int):
        bias = self.lam * self.corrections(inputs)
        yield qb.search(index, exact_search(inputs), inputs.queries, inputs.docs, bias, top_k,
                        inputs.params.query_bank.candidates)

    def details(self, inputs: ScoringInputs) -> dict:
        bank = bank_state(inputs)
        return {"k": qb.resolve_k(self.k, bank.size), "alpha": self.lam, **search_record(inputs)}

