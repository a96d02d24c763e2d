"""Evaluate step: encode the evaluation queries, search an index folder under each scoring
(plain dot product, DN, DN*), write TREC run files and BEIR/pytrec_eval metrics.

Outputs (one folder, swapped in atomically):
  metrics.json     {"rows": [{"scoring", "lambda", "index", "ndcg@1", ..., "mrr@10",
                    (dn*: "<metric>_std", "repeats")}], "num_queries", ...}  (deterministic:
                   the same model, data and seed give a byte-identical file)
  index_report.json {"index_recall": {type: {"recall@100_vs_flat", "search_seconds", ...}}}
  per_query.json   {"dot" | "dn@<lam>" | "dn*@<lam>": {qid: ndcg@10}}  (dn*: mean over repeats)
  run-dot.trec, run-dn-lam<lam>.trec, run-dnstar-lam<lam>-rep<r>.trec
                   `qid Q0 docid rank score tag`; "dnstar" because a literal `*` in a file name
                   is a shell glob and breaks Snakemake patterns.

No document is ever dropped from a ranking: BEIR's `ignore_identical_ids` (on by default in
`EvaluateRetrieval.evaluate` in beir 2.2.0, and in its exact-search `retrieve`) removes a hit
whose doc id equals the query id, which is wrong for datasets whose query and doc id spaces
overlap by accident (numeric ids), so it is always passed as False here.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import dn as dnlib
from .common import (PipelineError, atomic_dir, atomic_write_json, atomic_write_text, log, parse_json_object,
                     read_json, run_main, seed_everything)

SCORINGS = ("dot", "dn", "dn*")
K_VALUES = (1, 3, 5, 10, 100)
METRIC_KEYS = tuple(f"ndcg@{k}" for k in K_VALUES) + ("recall@10", "recall@100", "mrr@10")
DN_STAR_DEFAULTS = {"samples": 100, "repeats": 5, "source_split": "train", "seed": 0}
DEFAULTS: dict[str, Any] = {
    "split": "test", "scorings": ["dot", "dn", "dn*"], "lambdas": [dnlib.DEFAULT_LAMBDA],
    "dn_order": "normalize_then_shift", "dn_star": {}, "index": "flat", "top_k": 100,
    "approx_indexes": None, "seed": 0, "batch_size": 64,
}


# ----------------------------------------------------------------------------- parameters
def resolve_params(params: dict) -> dict:
    from .index import INDEX_TYPES, _check_keys, _positive_int, check_index_types

    params = _check_keys(params, set(DEFAULTS), "params")
    out = {**DEFAULTS, **params}
    if not isinstance(out["split"], str) or not out["split"]:
        raise PipelineError(f"split: expected a qrels split name, got {out['split']!r}")
    scorings = out["scorings"]
    if isinstance(scorings, str):
        scorings = [scorings]
    if not isinstance(scorings, list) or not scorings:
        raise PipelineError(f"scorings: expected a non-empty list from {list(SCORINGS)}")
    for s in scorings:
        if s not in SCORINGS:
            raise PipelineError(f"scorings: unknown scoring {s!r}; allowed: {list(SCORINGS)}")
    out["scorings"] = list(dict.fromkeys(scorings))
    lambdas = out["lambdas"]
    if isinstance(lambdas, (int, float)) and not isinstance(lambdas, bool):
        lambdas = [lambdas]
    if not isinstance(lambdas, list) or not lambdas:
        raise PipelineError("lambdas: expected a number in [0, 1] or a non-empty list of them")
    out["lambdas"] = list(dict.fromkeys(dnlib.check_lambda(x, "lambdas") for x in lambdas))
    out["dn_order"] = dnlib.check_order(out["dn_order"], "dn_order")
    star = {**DN_STAR_DEFAULTS, **_check_keys(out["dn_star"], set(DN_STAR_DEFAULTS), "dn_star")}
    for key in ("samples", "repeats"):
        _positive_int(star[key], f"dn_star.{key}")
    if not isinstance(star["seed"], int) or isinstance(star["seed"], bool) or star["seed"] < 0:
        raise PipelineError(f"dn_star.seed: expected a non-negative integer, got {star['seed']!r}")
    if "dn*" in out["scorings"] and star["source_split"] == out["split"]:
        raise PipelineError(f"dn_star.source_split: DN* must estimate its means from unlabeled queries of a "
                            f"split other than the evaluated one ({out['split']!r})")
    out["dn_star"] = star
    if out["index"] not in INDEX_TYPES:
        raise PipelineError(f"index: unknown index type {out['index']!r}; allowed: {list(INDEX_TYPES)}")
    if out["approx_indexes"] is not None:
        out["approx_indexes"] = check_index_types(out["approx_indexes"], "approx_indexes") \
            if out["approx_indexes"] != [] else []
    out["top_k"] = _positive_int(out["top_k"], "top_k")
    out["batch_size"] = _positive_int(out["batch_size"], "batch_size")
    if not isinstance(out["seed"], int) or isinstance(out["seed"], bool):
        raise PipelineError(f"seed: expected an integer, got {out['seed']!r}")
    return out


# ----------------------------------------------------------------------------- metrics
def compute_metrics(qrels: dict[str, dict[str, int]], results: dict[str, dict[str, float]]
                    ) -> tuple[dict[str, float], dict[str, float]]:
    """BEIR's aggregate metrics (pytrec_eval underneath) and per-query NDCG@10.

    `qrels` must be restricted to the evaluated queries: BEIR's MRR divides by len(qrels)."""
    import pytrec_eval
    from beir.retrieval.evaluation import EvaluateRetrieval

    ndcg, _map, recall, _prec = EvaluateRetrieval.evaluate(qrels, results, list(K_VALUES),
                                                           ignore_identical_ids=False)
    mrr = EvaluateRetrieval.evaluate_custom(qrels, results, [10], metric="mrr")
    metrics = {f"ndcg@{k}": ndcg[f"NDCG@{k}"] for k in K_VALUES}
    metrics.update({"recall@10": recall["Recall@10"], "recall@100": recall["Recall@100"], "mrr@10": mrr["MRR@10"]})
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(results)
    return metrics, {qid: float(v["ndcg_cut_10"]) for qid, v in per_query.items()}


def trec_lines(results: dict[str, dict[str, float]], tag: str) -> str:
    lines = []
    for qid, hits in results.items():
        # Python's sort is stable and `hits` is already best-first with ties by row, so equal
        # scores keep the search order; repr keeps every digit so no new ties appear on reread.
        ranked = sorted(hits.items(), key=lambda kv: -kv[1])
        for rank, (docid, score) in enumerate(ranked, 1):
            lines.append(f"{qid} Q0 {docid} {rank} {score!r} {tag}")
    return "\n".join(lines) + "\n"


def lam_label(lam: float) -> str:
    return f"{lam:g}"


# ----------------------------------------------------------------------------- helpers
def load_index_folder(index_dir: Path, ds) -> tuple[np.ndarray, list[str], dict]:
    from .index import read_stats

    stats = read_stats(index_dir)
    doc_ids = read_json(index_dir / "docids.json")
    if not (index_dir / "embeddings.npy").is_file():
        raise PipelineError(f"{index_dir}: missing embeddings.npy")
    emb = np.load(index_dir / "embeddings.npy", mmap_mode="r")
    if len(doc_ids) != len(emb):
        raise PipelineError(f"{index_dir}: docids.json has {len(doc_ids)} ids but embeddings.npy {len(emb)} rows")
    if len(doc_ids) != len(ds.corpus) or any(d not in ds.corpus for d in doc_ids):
        raise PipelineError(f"{index_dir}: built from a different corpus than {ds.root}/corpus.jsonl "
                            f"({len(doc_ids)} indexed ids vs {len(ds.corpus)} documents)")
    return emb, doc_ids, stats


def eval_queries(ds, split: str) -> tuple[list[str], dict[str, dict[str, int]]]:
    qrels = ds.split(split)
    missing = [q for q in qrels if q not in ds.queries]
    if missing:
        raise PipelineError(f"{ds.root}/qrels/{split}.tsv: query ids {missing[:5]} are not in queries.jsonl")
    return list(qrels), {q: dict(d) for q, d in qrels.items()}


def index_recall(index_dir: Path, stats: dict, kinds: list[str], q: np.ndarray, emb: np.ndarray, k: int
                 ) -> dict[str, dict]:
    """Recall@k of each index's dot-product top-k against the flat index (exact search when no
    flat index was built), plus search time and the build cost recorded by the index step.
    The key names the requested k even when the corpus is smaller, so tables line up."""
    from .index import load_index

    key = f"recall@{k}_vs_flat"
    k = min(k, len(emb))
    qf = np.ascontiguousarray(q, dtype=np.float32)
    if "flat" in stats["indexes"]:
        ref = load_index(index_dir, "flat", stats).search(qf, k)[1]
    else:
        ref = dnlib.exact_search(q, emb, k)[1]
    out = {}
    for kind in dict.fromkeys(["flat", *kinds]):
        if kind not in stats["indexes"]:
            continue
        index = load_index(index_dir, kind, stats)
        t0 = time.perf_counter()
        _, ids = index.search(qf, k)
        seconds = time.perf_counter() - t0
        hits = [len(set(ids[i][ids[i] >= 0]) & set(ref[i])) / len(ref[i]) for i in range(len(ref))]
        built = stats["indexes"][kind]
        out[kind] = {key: round(float(np.mean(hits)), 6), "search_seconds": round(seconds, 5),
                     "ms_per_query": round(1000 * seconds / max(1, len(qf)), 4),
                     "build_seconds": built.get("build_seconds"), "size_bytes": built.get("size_bytes"),
                     "params": built.get("params", {})}
    return out


# ----------------------------------------------------------------------------- entry point
def run(model_dir: str, dataset_dir: str, index_dir: str, out_dir: str, params: dict) -> dict:
    p = resolve_params(params)  # before the slow torch import, so config errors come back at once
    from .datasets import load_dataset
    from .encoder import BiEncoder
    from .index import load_index, set_threads

    seed_everything(p["seed"])
    set_threads()
    ds = load_dataset(dataset_dir)
    index_dir = Path(index_dir)
    emb, doc_ids, stats = load_index_folder(index_dir, ds)
    if p["index"] not in stats["indexes"]:
        raise PipelineError(f"index: {p['index']!r} was not built in {index_dir} (built: {sorted(stats['indexes'])})")
    approx = p["approx_indexes"]
    if approx is None:
        approx = [k for k in stats["indexes"] if k != "flat"]
    for kind in approx:
        if kind not in stats["indexes"]:
            raise PipelineError(f"approx_indexes: {kind!r} was not built in {index_dir} "
                                f"(built: {sorted(stats['indexes'])})")
    qids, qrels = eval_queries(ds, p["split"])
    if not qids:
        raise PipelineError(f"{ds.root}/qrels/{p['split']}.tsv: no queries to evaluate")

    # DN* inputs are checked before any encoding so a bad sample size fails fast.
    star_draws, pool_ids = [], []
    if "dn*" in p["scorings"]:
        star = p["dn_star"]
        if star["source_split"] not in ds.qrels:
            raise PipelineError(f"dn_star.source_split: {ds.root} has no qrels split {star['source_split']!r} "
                                f"(available: {sorted(ds.qrels)})")
        pool_ids = [q for q in ds.qrels[star["source_split"]] if q in ds.queries and q not in qrels]
        star_draws = dnlib.dn_star_draws(len(pool_ids), len(emb), star["samples"], star["repeats"], star["seed"])

    model = BiEncoder.load(model_dir)
    if model.embedding_dim != emb.shape[1]:
        raise PipelineError(f"{index_dir}: embeddings have dim {emb.shape[1]} but {model_dir} encodes {model.embedding_dim}")
    if any(s != "dot" for s in p["scorings"]) and p["dn_order"] == "normalize_then_shift" \
            and not stats.get("normalized", True):
        log.warning("dn_order normalize_then_shift: %s does not L2-normalise, so DN shifts raw embeddings",
                    model_dir)
    q = model.encode_texts([ds.queries[i] for i in qids], "query", batch_size=p["batch_size"], progress=True,
                           desc="encode queries")
    pool_emb = None
    if star_draws:
        needed = sorted({int(r) for _, rows, _ in star_draws for r in rows})
        enc = model.encode_texts([ds.queries[pool_ids[r]] for r in needed], "query", batch_size=p["batch_size"],
                                 progress=True, desc="encode dn* queries")
        pool_emb = np.zeros((len(pool_ids), emb.shape[1]), dtype=np.float32)
        pool_emb[needed] = enc

    index = load_index(index_dir, p["index"], stats)
    emb_arr = np.asarray(emb)
    top_k = p["top_k"]
    if top_k < max(K_VALUES):
        log.warning("top_k=%d < %d: NDCG/recall at %d only see the top %d documents", top_k, max(K_VALUES),
                    max(K_VALUES), top_k)
    rows_out, per_query, runs = [], {}, {}

    def search(means, lam):
        scores, rows = dnlib.dn_search(index, q, top_k, means, lam, p["dn_order"], doc_emb=emb_arr)
        return dnlib.to_results(qids, doc_ids, scores, rows)

    for scoring in p["scorings"]:
        if scoring == "dot":
            results = search(None, 0.0)
            metrics, pq = compute_metrics(qrels, results)
            rows_out.append({"scoring": "dot", "lambda": None, "index": p["index"], **metrics})
            per_query["dot"] = pq
            runs["run-dot.trec"] = trec_lines(results, "dot")
            continue
        for lam in p["lambdas"]:
            if scoring == "dn":
                results = search(dnlib.dn_means(q, emb_arr), lam)
                metrics, pq = compute_metrics(qrels, results)
                rows_out.append({"scoring": "dn", "lambda": lam, "index": p["index"], **metrics})
                per_query[f"dn@{lam_label(lam)}"] = pq
                runs[f"run-dn-lam{lam_label(lam)}.trec"] = trec_lines(results, f"dn-lam{lam_label(lam)}")
                continue
            reps, pqs = [], []
            for r, (s, q_rows, d_rows) in enumerate(star_draws):
                means = dnlib.DNMeans(dnlib.mean_embedding(pool_emb[q_rows]), dnlib.mean_embedding(emb_arr[d_rows]),
                                      source="dn*", seed=s)
                results = search(means, lam)
                metrics, pq = compute_metrics(qrels, results)
                reps.append(metrics)
                pqs.append(pq)
                runs[f"run-dnstar-lam{lam_label(lam)}-rep{r}.trec"] = trec_lines(
                    results, f"dnstar-lam{lam_label(lam)}-rep{r}")
            row = {"scoring": "dn*", "lambda": lam, "index": p["index"], "repeats": len(reps)}
            for key in METRIC_KEYS:
                vals = np.array([m[key] for m in reps])
                row[key] = round(float(vals.mean()), 5)
                # Sample std (ddof=1) over the repeats; 0 for a single repeat.
                row[f"{key}_std"] = round(float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, 5)
            rows_out.append(row)
            per_query[f"dn*@{lam_label(lam)}"] = {qid: float(np.mean([pq[qid] for pq in pqs])) for qid in pqs[0]}

    for row in rows_out:
        log.info("%-4s lambda=%-5s %s ndcg@10=%.4f recall@100=%.4f", row["scoring"], row["lambda"], row["index"],
                 row["ndcg@10"], row["recall@100"])
    recall = index_recall(index_dir, stats, approx, q, emb_arr, top_k)
    result = {"rows": rows_out, "index_recall": recall, "num_queries": len(qids), "num_docs": len(doc_ids),
              "split": p["split"], "top_k": top_k, "dn_order": p["dn_order"],
              "dn_star": p["dn_star"] if "dn*" in p["scorings"] else None}
    with atomic_dir(out_dir) as tmp:
        for name, text in runs.items():
            atomic_write_text(tmp / name, text)
        atomic_write_json(tmp / "per_query.json", per_query)
        atomic_write_json(tmp / "metrics.json", {k: v for k, v in result.items() if k != "index_recall"})
        atomic_write_json(tmp / "index_report.json", {"index_recall": recall})
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.evaluate",
        description="Search an index folder with the model's query embeddings under plain dot-product, DN and "
                    "DN* scoring; write TREC run files, metrics.json and per_query.json.")
    parser.add_argument("--model", required=True, help="model folder (loads with BiEncoder.load)")
    parser.add_argument("--dataset", required=True, help="normalised dataset folder")
    parser.add_argument("--index", required=True, help="index folder written by pipeline.index")
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    parser.add_argument("--params-json", default="{}",
                        help='JSON parameters, e.g. \'{"split": "test", "scorings": ["dot", "dn", "dn*"], '
                             '"lambdas": [0.25, 0.5], "dn_order": "normalize_then_shift", '
                             '"dn_star": {"samples": 100, "repeats": 5, "source_split": "train", "seed": 0}, '
                             '"index": "flat", "top_k": 100, "approx_indexes": ["hnsw", "ivf"], "seed": 0}\'')
    args = parser.parse_args(argv)
    return run(args.model, args.dataset, args.index, args.out, parse_json_object(args.params_json))


if __name__ == "__main__":
    run_main(main)
