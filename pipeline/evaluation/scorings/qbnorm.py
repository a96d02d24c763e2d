"""Querybank Normalisation (QB-Norm) with the dynamic inverted softmax.

Bogolin, Croitoru, Jin, Liu, Albanie. "Cross Modal Retrieval with Querybank Normalisation",
CVPR 2022 (arXiv 2112.12777). Definitions and choices: docs/methods.md#querybank-normalisation-qb-norm.
"""

from __future__ import annotations

import numpy as np

from pipeline.evaluation import querybank as qb
from . import register_scoring
from .base import Scoring, ScoringInputs
from .nnn import bank_state, exact_search, search_record


@register_scoring("qbnorm")
class QBNorm(Scoring):
    """Dynamic inverted softmax. A query whose top-1 document (by q . d) is in the activation set
    A (documents that are the top-1 of some bank query) is scored

        S(q, d) = exp(q . d / beta) / sum_r exp(r . d / beta)      (r over the bank)

    every other query keeps S(q, d) = q . d. beta is the bracketed setting, `qbnorm[beta=0.05]`."""

    label = "QB-Norm"
    order = 40
    caption = "QB-Norm, dynamic inverted softmax over the reference query bank"

    def __init__(self, lam: float | None = None, setting: str = "", beta: float | None = None):
        if beta is None:
            if not setting.startswith("beta="):
                raise ValueError(f"qbnorm: expected a setting 'beta=<number>', got {setting!r}")
            beta = float(setting[len("beta="):])
        super().__init__(None, f"beta={beta:g}")
        self.beta = float(beta)

    @classmethod
    def variants(cls, params) -> list[Scoring]:
        return [cls(beta=beta) for beta in params.qbnorm.beta]

    @classmethod
    def from_setting(cls, setting: str, lam):
        return cls(setting=setting)

    @classmethod
    def check(cls, params) -> None:
        for i, beta in enumerate(params.qbnorm.beta):
            qb.check_beta(beta, f"qbnorm.beta[{i}]")

    def prepare(self, inputs: ScoringInputs) -> None:
        bank_state(inputs)  # the bank must exist before any encoding

    @staticmethod
    def _top1(index, inputs: ScoringInputs, which: str, q: np.ndarray) -> np.ndarray:
        """Each row's top-1 document under the plain dot product (cached per job)."""
        cache = inputs.extra.setdefault("qbnorm", {})
        if which not in cache:
            zeros = np.zeros(len(inputs.docs))
            cache[which] = qb.search(index, exact_search(inputs), q, inputs.docs, zeros, 1,
                                     inputs.params.query_bank.candidates)[1][:, 0]
        return cache[which]

    def activated(self, index, inputs: ScoringInputs) -> np.ndarray:
        """Which evaluated queries have their top-1 document in the activation set A."""
        active = self._top1(index, inputs, "bank", bank_state(inputs).emb)
        return np.isin(self._top1(index, inputs, "queries", inputs.queries), active[active >= 0])

    def rankings(self, index, inputs: ScoringInputs, top_k: int):
        bank = bank_state(inputs)
        cache = inputs.extra.setdefault("qbnorm", {})
        key = ("logz", self.beta)
        if key not in cache:
            cache[key] = qb.log_partition(inputs.docs, bank.emb, self.beta)
        on = cache["activated"] = self.activated(index, inputs)
        k = min(top_k, len(inputs.docs))
        scores, rows = np.full((len(on), k), -np.inf), np.full((len(on), k), -1, dtype=np.int64)
        depth = inputs.params.query_bank.candidates
        for mask, bias in ((on, self.beta * cache[key]), (~on, np.zeros(len(inputs.docs)))):
            if mask.any():
                s, r = qb.search(index, exact_search(inputs), inputs.queries[mask], inputs.docs, bias, k, depth)
                scores[mask, :s.shape[1]], rows[mask, :r.shape[1]] = s, r
        # t = q.d - beta log Z_d ranks; the inverted softmax itself is exp(t / beta).
        scores[on] = np.exp(scores[on] / self.beta)
        yield scores, rows

    def details(self, inputs: ScoringInputs) -> dict:
        out = {"beta": self.beta, **search_record(inputs)}
        on = inputs.extra.get("qbnorm", {}).get("activated")
        if on is not None:
            out["activated_queries"] = int(on.sum())
        return out

