"""Reference query banks and the per-document corrections built from them, shared by the NNN and
QB-Norm scorings (pipeline/evaluation/scorings/nnn.py, qbnorm.py; definitions in
docs/methods.md#query-bank-normalisations).

Both corrections are one number per document, computed once per evaluate job from the corpus
embeddings and a bank of reference queries (training queries by default, never the evaluated
ones), so each becomes a per-document bias on the inner product:

    NNN       t(q, d) = q . d - alpha * b_d,        b_d = mean of the k largest r . d over the bank
    QB-Norm   t(q, d) = q . d - beta * log Z_d,     Z_d = sum over the bank of exp(r . d / beta)

(QB-Norm's score exp(t / beta) is monotone in t.) `biased_search` finds the exact top-k of such
a score by streaming the document matrix in blocks, which is what a flat index (in RAM or the
memory-mapped `MemmapFlat`) amounts to; `rescore_candidates` reranks an approximate index's
dot-product candidates instead. Nothing here imports torch; FAISS is imported where it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.common import PipelineError
from pipeline.core.eval_params import QueryBankParams
from pipeline.core.params import check_int, check_number
from pipeline.sources.datasets import read_qrels

CHUNK = 16384       # document rows per block: ~50 MB of float64 at dim 384
QUERY_BATCH = 256   # queries per block product, with CHUNK rows: 32 MB of scores


# ----------------------------------------------------------------------------- parameters
def check_k(value: Any, key: str) -> int | str:
    """A neighbour count: a positive integer, or "all" (the whole bank: DN's query-side mean)."""
    if value == "all":
        return value
    try:
        return check_int(value, key)
    except PipelineError:
        raise PipelineError(f"{key}: expected a positive integer or 'all', got {value!r}") from None


def check_alpha(value: Any, key: str) -> float:
    return check_number(value, key, 0.0, 1.0)


def check_beta(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 < float(value) <= 100.0):
        raise PipelineError(f"{key}: expected an inverted-softmax temperature in (0, 100], got {value!r}")
    return float(value)


def check_bank(bank: QueryBankParams, key: str = "query_bank") -> None:
    if bank.split is not None and (not isinstance(bank.split, str) or not bank.split):
        raise PipelineError(f"{key}.split: expected a qrels split name, got {bank.split!r}")
    if bank.size is not None:
        check_int(bank.size, f"{key}.size")
    check_int(bank.seed, f"{key}.seed", minimum=0)
    check_int(bank.candidates, f"{key}.candidates")


def check_k_fits(k: int | str, bank_size: int, key: str, where: str) -> None:
    if k != "all" and k > bank_size:
        raise PipelineError(f"{key}: k = {k} reference neighbours per document, but {where} has only "
                            f"{bank_size} reference queries; use a k of at most {bank_size} or 'all'")


def resolve_k(k: int | str, bank_size: int) -> int:
    return bank_size if k == "all" else int(k)


# ----------------------------------------------------------------------------- the bank
@dataclass
class QueryBank:
    """The reference queries of one evaluate job: ids in file order, then their embeddings."""

    split: str
    qids: list[str]
    pool_size: int
    seed: int
    emb: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.qids)

    def record(self) -> dict:
        """What metrics.json says about the bank (deterministic: no timings)."""
        return {"split": self.split, "size": self.size, "pool_size": self.pool_size, "seed": self.seed}


def bank_queries(ds, split: str, evaluated_split: str, evaluated: list[str], size: int | None,
                 seed: int) -> QueryBank:
    """The bank's query ids: the queries of qrels split `split` that are not evaluated, all of
    them or `size` drawn with `seed`. Errors name the key, the file and what was expected."""
    if split == evaluated_split:
        raise PipelineError(f"query_bank.split: {split!r} is the evaluated split; NNN and QB-Norm take their "
                            "reference queries from another split (the training queries by default), never the test")
    if split not in ds.qrels:
        raise PipelineError(f"query_bank.split: {ds.root} has no qrels split {split!r} "
                            f"(available: {sorted(ds.qrels)})")
    skip = set(evaluated)
    pool = [q for q in ds.qrels[split] if q in ds.queries and q not in skip]
    if not pool:
        raise PipelineError(f"query_bank.split: {ds.root}/qrels/{split}.tsv has no query with a text in "
                            "queries.jsonl outside the evaluated ones; NNN and QB-Norm need reference queries")
    if size is not None and size < len(pool):
        rows = np.sort(np.random.default_rng(seed).choice(len(pool), size=size, replace=False))
        return QueryBank(split, [pool[r] for r in rows], len(pool), seed)
    return QueryBank(split, pool, len(pool), seed)


# ----------------------------------------------------------------------------- corrections
def _block(docs, start: int, stop: int, dtype=np.float64) -> np.ndarray:
    # Rows of a memory-mapped (float16 or float32) corpus, read once and converted.
    return np.asarray(docs[start:stop], dtype=dtype)


def neighbour_means(docs, bank: np.ndarray, k: int, chunk: int | None = None) -> np.ndarray:
    """b_d: the mean of the k largest inner products between document d and the bank, for
    every row of `docs` (float64 [num_docs]). The bank is a FAISS IndexFlatIP searched with
    blocks of documents as queries, so the corpus is read block by block, never whole."""
    import faiss

    bank = np.ascontiguousarray(bank, dtype=np.float32)
    if not 1 <= k <= len(bank):
        raise PipelineError(f"nnn.k: {k} neighbours asked of a bank of {len(bank)} reference queries")
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank)
    chunk = chunk or CHUNK
    out = np.empty(len(docs), dtype=np.float64)
    for start in range(0, len(docs), chunk):
        block = np.ascontiguousarray(_block(docs, start, start + chunk, np.float32))
        sims, _ = index.search(block, k)
        out[start:start + len(block)] = sims.astype(np.float64).mean(axis=1)
    return out


def log_partition(docs, bank: np.ndarray, beta: float, budget: int = 1 << 22) -> np.ndarray:
    """log Z_d = log sum_r exp(r . d / beta) over the whole bank, for every row of `docs`
    (float64 [num_docs]), with the max subtracted before exp so no beta overflows. Blocks hold
    `budget` scores (32 MB) whatever the bank size."""
    bank = np.asarray(bank, dtype=np.float64)
    rows = max(1, budget // max(1, len(bank)))
    out = np.empty(len(docs), dtype=np.float64)
    for start in range(0, len(docs), rows):
        s = _block(docs, start, start + rows) @ bank.T / beta
        top = s.max(axis=1)
        out[start:start + len(s)] = top + np.log(np.exp(s - top[:, None]).sum(axis=1))
    return out


# ----------------------------------------------------------------------------- search
def _merge(best_s, best_i, s, offset: int, k: int):
    """The running top-k of one query batch merged with a new block's scores: best first,
    ties to the lower row, empty slots (-inf, -1) last."""
    kk = min(k, s.shape[1])
    part = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < s.shape[1] else \
        np.broadcast_to(np.arange(s.shape[1]), s.shape)
    cand_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], 1)
    cand_i = np.concatenate([best_i, part + offset], 1)
    order = np.lexsort((np.where(cand_i < 0, np.iinfo(np.int64).max, cand_i), -cand_s), axis=1)[:, :k]
    return np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)


def biased_search(q: np.ndarray, docs, bias: np.ndarray, k: int, chunk: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of t(q, d) = q . d - bias_d in float64 over every row of `docs` (the flat
    index's vectors), streamed in blocks: (scores, rows), best first, ties to the lower row.
    The same ranking as an inner-product index over [d, bias_d] searched with [q, -1], without
    a second copy of the corpus."""
    q = np.asarray(q, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64)
    k, chunk = min(k, len(docs)), chunk or CHUNK
    best_s = np.full((len(q), k), -np.inf)
    best_i = np.full((len(q), k), -1, dtype=np.int64)
    for start in range(0, len(docs), chunk):
        block = _block(docs, start, start + chunk)
        shift = bias[start:start + len(block)]
        for qs in range(0, len(q), QUERY_BATCH):
            rows = slice(qs, qs + QUERY_BATCH)
            best_s[rows], best_i[rows] = _merge(best_s[rows], best_i[rows], q[rows] @ block.T - shift, start, k)
    return best_s, best_i


def rescore_candidates(index, q: np.ndarray, docs, bias: np.ndarray, k: int, depth: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """t(q, d) = q . d - bias_d, exact in float64, over the `depth` best dot-product candidates
    an (approximate) index returns; the k best of them, best first, ties to the lower row, -1
    where the index found fewer than k. A document outside the candidates cannot enter, so
    this is exact only when the correction never lifts a document from beyond `depth`."""
    depth = min(max(depth, k), index.ntotal)
    _, ids = index.search(np.ascontiguousarray(q, dtype=np.float32), depth)
    q = np.asarray(q, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64)
    k = min(k, index.ntotal)
    scores = np.full((len(q), k), -np.inf)
    rows = np.full((len(q), k), -1, dtype=np.int64)
    for i in range(len(q)):
        cand = np.sort(ids[i][ids[i] >= 0].astype(np.int64))  # ascending rows: sequential reads of a memmap
        s = np.asarray(docs[cand], dtype=np.float64) @ q[i] - bias[cand]
        order = np.lexsort((cand, -s))[:k]
        scores[i, :len(order)], rows[i, :len(order)] = s[order], cand[order]
    return scores, rows


def search(index, exact: bool, q: np.ndarray, docs, bias: np.ndarray, k: int, depth: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of q . d - bias_d: exact over `docs` for a flat search index, else a rerank of
    `depth` dot-product candidates from `index`."""
    if exact:
        return biased_search(q, docs, bias, k)
    return rescore_candidates(index, q, docs, bias, k, depth)


# ----------------------------------------------------------------------------- config checks
def config_problems(evaluation: dict, datasets: dict) -> list[str]:
    """Every problem with the `evaluation.nnn`, `.qbnorm` and `.query_bank` keys that can be seen
    before any job: values out of range, a bank split that is a test split, and, for datasets
    already on disk (source local), a missing or empty bank split or a k larger than the bank."""
    problems = []

    def check(fn, value, key):
        try:
            return fn(value, key)
        except PipelineError as exc:
            problems.append(f"config key {exc}")

    wanted = {s for s in evaluation["scorings"] if s in ("nnn", "qbnorm")}
    for i, k in enumerate(evaluation["nnn"]["k"]):
        check(check_k, k, f"evaluation.nnn.k[{i}]")
    for i, alpha in enumerate(evaluation["nnn"]["alpha"]):
        check(check_alpha, alpha, f"evaluation.nnn.alpha[{i}]")
    for i, beta in enumerate(evaluation["qbnorm"]["beta"]):
        check(check_beta, beta, f"evaluation.qbnorm.beta[{i}]")
    bank = evaluation["query_bank"]
    check(check_bank, QueryBankParams(**bank), "evaluation.query_bank")  # the schema allowed only its keys
    if not wanted or problems:
        return problems
    for name, ds in datasets.items():
        split = bank["split"] or ds.get("train_split", "train")
        if split == ds["test_split"]:
            problems.append(f"config key evaluation.query_bank.split: {split!r} is the test split of "
                            f"datasets.{name}; NNN and QB-Norm need reference queries of another split")
            continue
        size = _bank_size_on_disk(ds, split)
        if isinstance(size, str):
            problems.append(f"config key evaluation.query_bank.split: datasets.{name} {size}")
            continue
        if bank["size"] is not None:
            size = bank["size"] if size is None else min(size, bank["size"])
        if size is not None and "nnn" in wanted:
            for i, k in enumerate(evaluation["nnn"]["k"]):
                check(lambda v, key: check_k_fits(v, size, key, f"the bank of datasets.{name} ({split!r})"),
                      k, f"evaluation.nnn.k[{i}]")
    return problems


def _bank_size_on_disk(ds: dict, split: str) -> int | str | None:
    """Queries in a local dataset's bank split (outside its test split), a problem as text, or
    None when the data is only made by a job (downloads, embedded) and the evaluate step checks."""
    from pathlib import Path

    if ds.get("source") != "local" or not ds.get("path"):
        return None
    qrels = Path(ds["path"]) / "qrels"
    if not qrels.is_dir():
        return None
    path = qrels / f"{split}.tsv"
    if not path.is_file():
        return f"({ds['path']}) has no qrels split {split!r}: {path} is missing"
    test = qrels / f"{ds['test_split']}.tsv"
    size = len(set(read_qrels(path)) - (set(read_qrels(test)) if test.is_file() else set()))
    if size == 0:
        return f"({ds['path']}): {path} holds no query outside the test split; NNN and QB-Norm need reference queries"
    return size
