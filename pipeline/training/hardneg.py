"""BM25 hard-negative mining with bm25s.

For every query of a qrels split, rank the corpus with BM25 (title + text, lower-cased, English
stop words removed, no stemming) and keep the top-k documents that are not relevant to it
(grade > 0). Documents judged with grade 0 stay eligible: they are confirmed non-relevant.
Documents with a zero BM25 score share no term with the query and are never "hard", so a query
may get fewer than k negatives. Ties are broken by corpus order, so the output is deterministic.

  python -m pipeline.training.hardneg --dataset results/data/scifact-mini --split train --top-k 20 --out results/hardneg/scifact-mini.jsonl

Output: one JSON object per line, {"query_id": ..., "negatives": [doc ids, best first]}, in the
split's query order.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from pipeline.core.params import HardNegativeParams
from pipeline.core.common import PipelineError, atomic_write_text, iter_keyed_jsonl, log, run_main
from pipeline.sources.datasets import passage_text, load_dataset


def _tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, lower=True, stopwords="en", stemmer=None, return_ids=False,
                          show_progress=False)


def mine(corpus: dict[str, dict], queries: dict[str, str], split: dict[str, dict[str, int]], top_k: int,
         k1: float = 1.5, b: float = 0.75) -> list[dict]:
    """Return [{"query_id", "negatives"}] for every query of `split`, in split order."""
    import bm25s

    if top_k < 1:
        raise PipelineError(f"--top-k must be >= 1, got {top_k}")
    doc_ids = list(corpus)
    if not doc_ids:
        raise PipelineError("the corpus is empty")
    # bm25s marks its own logger DEBUG, which would flood our stderr handler.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    retriever = bm25s.BM25(k1=k1, b=b, method="lucene", backend="numpy")
    retriever.index(_tokenize([passage_text(corpus[d]) for d in doc_ids]), show_progress=False)
    order_tiebreak = np.arange(len(doc_ids))
    qids = list(split)
    missing = [q for q in qids if q not in queries]
    if missing:
        raise PipelineError(f"qrels query ids without query text: {missing[:5]}")
    rows = []
    for qid, tokens in zip(qids, _tokenize([queries[q] for q in qids])):
        relevant = {d for d, grade in split[qid].items() if grade > 0}
        known = [t for t in tokens if t in retriever.vocab_dict]
        negatives: list[str] = []
        if known:
            scores = np.asarray(retriever.get_scores(known), dtype=np.float64)
            # Full sort rather than argpartition: partitioning breaks ties in an unspecified order.
            ranking = np.lexsort((order_tiebreak, -scores))
            for idx in ranking:
                if scores[idx] <= 0 or len(negatives) == top_k:
                    break
                if doc_ids[idx] not in relevant:
                    negatives.append(doc_ids[idx])
        rows.append({"query_id": qid, "negatives": negatives})
    return rows


def write_hard_negatives(rows: list[dict], out: str | os.PathLike) -> None:
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def load_hard_negatives(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a file written by this module: query id -> negative doc ids, best first."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: hard-negative file not found (run `python -m pipeline.training.hardneg`)")
    result: dict[str, list[str]] = {}
    for qid, where, row in iter_keyed_jsonl(path, "query_id"):
        negatives = row.get("negatives")
        if not isinstance(negatives, list) or not all(isinstance(d, str) for d in negatives):
            raise PipelineError(f"{where}: 'negatives' must be a list of doc id strings")
        result[qid] = negatives
    return result


def draw_per_epoch(hard_negatives: dict[str, list[str]], seed: int, epoch: int, k: int = 1
                   ) -> dict[str, list[str]]:
    """k negatives per query drawn uniformly without replacement from its candidates (all of them
    when it has k or fewer), as DPR's training does with the dataset's own hard negatives (it
    shuffles them every epoch and keeps the first). The draw depends only on (seed, epoch, query
    id), not on dict order, PYTHONHASHSEED or other queries, so a resumed run redraws the same."""
    import random

    if k < 1:
        raise PipelineError(f"hard_negatives.per_query must be >= 1, got {k}")
    drawn = {}
    for qid, candidates in hard_negatives.items():
        if len(candidates) <= k:
            drawn[qid] = list(candidates)
        else:
            drawn[qid] = random.Random(f"{seed}:{epoch}:{qid}").sample(candidates, k)
    return drawn


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m pipeline.training.hardneg", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="normalised dataset folder (from pipeline.sources.prepare)")
    p.add_argument("--split", default="train", help="qrels split whose queries get negatives (default train)")
    p.add_argument("--top-k", type=int, default=HardNegativeParams.top_k,
                   help=f"negatives per query (default {HardNegativeParams.top_k}, hard_negatives.top_k's)")
    p.add_argument("--out", required=True, help="output .jsonl (written atomically)")
    p.add_argument("--k1", type=float, default=1.5, help="BM25 k1 (default 1.5)")
    p.add_argument("--b", type=float, default=0.75, help="BM25 b (default 0.75)")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    ds = load_dataset(args.dataset)
    rows = mine(ds.corpus, ds.queries, ds.split(args.split), args.top_k, k1=args.k1, b=args.b)
    write_hard_negatives(rows, args.out)
    short = sum(1 for r in rows if len(r["negatives"]) < args.top_k)
    log.info("%d queries of %s/%s -> %s (%d with fewer than %d negatives) in %.1fs", len(rows),
             args.dataset, args.split, args.out, short, args.top_k, time.perf_counter() - t0)
    return rows


if __name__ == "__main__":
    run_main(main)
