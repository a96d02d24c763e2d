"""Distribution Normalization (DN) for dense retrieval.

Zhou, Ren, Li, Zabih, Lim. "Test-Time Distribution Normalization for Contrastively Learned
Visual-language Models", NeurIPS 2023 (arXiv 2302.11084); official code
github.com/fengyuli-dev/distribution-normalization.

DN replaces the dot product q.d of a contrastively trained dual encoder by

    S(q, d) = (q - lam * mu_q) . (d - lam * mu_d)

where mu_q and mu_d are the mean query and document embeddings. Theory gives lam = 1/2; the
official code uses lam = 0.25 throughout, which is our default (pipeline.core.eval_params.DEFAULT_LAMBDA).
The scorings that use this math (dot, dn, dn*) are the classes in pipeline.evaluation.scorings; the
definitions and their sources are in docs/methods.md.

Why the plain index can be reused: expanding the score,

    S(q, d) = (q - lam mu_q) . d  -  lam (q - lam mu_q) . mu_d

and the second term does not depend on d. So for each query the DN ranking over documents is
the inner-product ranking of the *shifted query* q' = q - lam mu_q against the unchanged
document vectors, i.e. a normal search of the index built for dot-product retrieval. Only the
reported score needs the per-query constant added back, so that run files carry true DN scores
(equal to brute force), which is what a TREC evaluator sorts and breaks ties on.

Order of operations. The official recipe L2-normalises the embeddings, then subtracts lam*mean,
and does not re-normalise ("normalize_then_shift", the default); our encoder already
L2-normalises when its spec says `normalize`, so the stored embeddings are the right input.
"shift_then_normalize" is offered as an explicit ablation: the shifted vectors are (re-)
normalised. Normalising the shifted document changes each document's score by its own factor,
so that variant cannot reuse the index and is scored exactly against the document matrix.

Means. "dn" estimates mu_q from all evaluation queries and mu_d from the whole corpus. "dn*"
follows the paper's DN*: each mean comes from 100 random unlabeled samples (queries of a
non-test split; documents of the corpus), repeated with 5 seeds, reporting mean and std.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.core.common import PipelineError

ORDERS = ("normalize_then_shift", "shift_then_normalize")


@dataclass
class DNMeans:
    """The two means DN subtracts."""

    mu_q: np.ndarray
    mu_d: np.ndarray


# ----------------------------------------------------------------------------- validation
def check_lambda(lam, key: str = "lambdas") -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not (0.0 <= float(lam) <= 1.0):
        raise PipelineError(f"{key}: lambda must be a number in [0, 1], got {lam!r}")
    return float(lam)


def check_order(order: str, key: str = "dn_order") -> str:
    if order not in ORDERS:
        raise PipelineError(f"{key}: unknown order {order!r}; allowed: {list(ORDERS)}")
    return order


# ----------------------------------------------------------------------------- means
def mean_embedding(x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    # float64 accumulation (a float32 sum over a large corpus loses the digits DN shifts by),
    # in chunks so a memory-mapped corpus is never copied whole.
    if len(x) == 0:
        raise PipelineError("DN: cannot take the mean of an empty set of embeddings")
    total = np.zeros(x.shape[1], dtype=np.float64)
    for start in range(0, len(x), chunk):
        total += np.asarray(x[start:start + chunk], dtype=np.float64).sum(axis=0)
    return total / len(x)


def dn_means(query_emb: np.ndarray, doc_emb: np.ndarray) -> DNMeans:
    """DN: mu_q over all evaluation queries, mu_d over the whole corpus."""
    return DNMeans(mean_embedding(query_emb), mean_embedding(doc_emb))


def sample_rows(n_available: int, samples: int, seed: int, key: str, what: str) -> np.ndarray:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise PipelineError(f"{key}: expected a positive integer, got {samples!r}")
    if samples > n_available:
        raise PipelineError(f"{key}: cannot draw {samples} samples from {n_available} {what}")
    return np.sort(np.random.default_rng(seed).choice(n_available, size=samples, replace=False))


def dn_star_draws(n_queries: int, n_docs: int, samples: int = 100, repeats: int = 5,
                  seed: int = 0) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Row indices for the DN* repeats: [(seed_r, query_rows, doc_rows)], one per repeat.

    Each repeat uses its own seed (seed + r) for both sides, so any single repeat can be
    reproduced alone. Kept separate from the means so callers can encode only the sampled
    queries (at most samples * repeats of them) instead of the whole pool."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise PipelineError(f"dn_star.repeats: expected a positive integer, got {repeats!r}")
    draws = []
    for r in range(repeats):
        s = seed + r
        q_rows = sample_rows(n_queries, samples, s, "dn_star.samples", "unlabeled queries")
        # A distinct stream for documents, so the two draws are not the same row numbers.
        d_rows = sample_rows(n_docs, samples, s + 1_000_003, "dn_star.samples", "corpus documents")
        draws.append((s, q_rows, d_rows))
    return draws


# ----------------------------------------------------------------------------- transforms
def _l2(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def transform(x: np.ndarray, mu: np.ndarray, lam: float, order: str = "normalize_then_shift") -> np.ndarray:
    """One side's DN vectors (float64). For normalize_then_shift `x` must already be what the
    encoder emits (L2-normalised when the spec normalises); it is shifted, not re-normalised."""
    check_order(order)
    shifted = np.asarray(x, dtype=np.float64) - lam * np.asarray(mu, dtype=np.float64)
    return _l2(shifted) if order == "shift_then_normalize" else shifted


def dn_scores(q: np.ndarray, d: np.ndarray, means: DNMeans, lam: float,
              order: str = "normalize_then_shift") -> np.ndarray:
    """Brute-force DN score matrix [n_queries, n_docs]; the reference the index path must match."""
    return transform(q, means.mu_q, lam, order) @ transform(d, means.mu_d, lam, order).T


# ----------------------------------------------------------------------------- search
def _topk_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k best scores per row, best first; ties go to the lower doc row so
    every path (index or brute force) orders them the same way."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
        np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    out = np.empty_like(part)
    for i in range(scores.shape[0]):
        cand = part[i]
        out[i] = cand[np.lexsort((cand, -scores[i, cand]))]
    return out


def exact_search(q: np.ndarray, d: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k in float64 (no index), best first."""
    q = np.asarray(q, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    rows, vals = [], []
    for start in range(0, len(q), chunk):
        s = q[start:start + chunk] @ d.T
        idx = _topk_rows(s, k)
        rows.append(idx)
        vals.append(np.take_along_axis(s, idx, axis=1))
    return np.concatenate(vals), np.concatenate(rows)


def rescore(q_dn: np.ndarray, d_dn_rows, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact float64 scores for candidate rows `ids` (-1 = missing) and a stable re-sort."""
    scores = np.full(ids.shape, -np.inf, dtype=np.float64)
    out_ids = ids.copy()
    for i in range(len(ids)):
        valid = ids[i] >= 0
        cand = ids[i][valid]
        s = d_dn_rows(cand) @ q_dn[i]
        order = np.lexsort((cand, -s))
        scores[i, :len(cand)] = s[order]
        out_ids[i, :len(cand)] = cand[order]
        out_ids[i, len(cand):] = -1
    return scores, out_ids


def dn_search(index, q: np.ndarray, k: int, means: DNMeans | None = None, lam: float = 0.0,
              order: str = "normalize_then_shift", doc_emb: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k documents per query under DN (lam = 0 or means = None is the plain dot product).

    Returns (scores, rows): float64 true DN scores and int64 doc rows (-1 where an approximate
    index found fewer than k), best first, ties broken by the lower row.

    normalize_then_shift searches `index` with shifted queries; the index is never rebuilt or
    copied. If `doc_emb` (the indexed vectors) is given, the candidates are rescored exactly in
    float64 so scores equal brute force; otherwise the per-query constant -lam q'.mu_d is added
    to the index's float32 scores. shift_then_normalize needs `doc_emb` and scores exactly.
    """
    check_order(order)
    lam = check_lambda(lam, "lambda")
    if means is None:
        dim = q.shape[1]
        means, lam = DNMeans(np.zeros(dim), np.zeros(dim)), 0.0
    if order == "shift_then_normalize" and lam > 0:
        if doc_emb is None:
            raise PipelineError("dn_order: shift_then_normalize rescales every document and needs the "
                                "corpus embeddings (embeddings.npy); it cannot reuse the index")
        return exact_search(transform(q, means.mu_q, lam, order), transform(doc_emb, means.mu_d, lam, order), k)
    q_dn = transform(q, means.mu_q, lam, "normalize_then_shift")
    k = min(k, index.ntotal)
    raw, ids = index.search(np.ascontiguousarray(q_dn, dtype=np.float32), k)
    ids = ids.astype(np.int64)
    if doc_emb is not None:
        mu_d = np.asarray(means.mu_d, dtype=np.float64)
        return rescore(q_dn, lambda rows: np.asarray(doc_emb[rows], dtype=np.float64) - lam * mu_d, ids)
    const = -lam * (q_dn @ np.asarray(means.mu_d, dtype=np.float64))
    scores = np.where(ids >= 0, raw.astype(np.float64) + const[:, None], -np.inf)
    return scores, ids


def to_results(qids: Sequence[str], doc_ids: Sequence[str], scores: np.ndarray, rows: np.ndarray
               ) -> dict[str, dict[str, float]]:
    """{qid: {docid: score}} for pytrec_eval / BEIR, skipping missing (-1) slots."""
    out: dict[str, dict[str, float]] = {}
    for i, qid in enumerate(qids):
        out[qid] = {doc_ids[r]: float(s) for r, s in zip(rows[i], scores[i]) if r >= 0}
    return out


__all__ = ["DNMeans", "ORDERS", "check_lambda", "check_order", "dn_means", "dn_star_draws", "transform", "dn_scores",
           "dn_search", "exact_search", "to_results"]
