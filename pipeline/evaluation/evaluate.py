"""Evaluate step: encode the evaluated queries, search an index folder under each configured
scoring (pipeline.evaluation.scorings: plain dot product, DN, DN*, ...), and score the rankings with the
dataset's evaluation protocol (pipeline.evaluation.protocols: BEIR qrels metrics, ...).

Outputs (one folder, swapped in atomically):
  metrics.json     {"rows": [{"scoring", "lambda", "index", <protocol metrics>,
                    (sampled scorings such as dn*: "<metric>_std", "repeats")}], "num_queries", ...}
                   (deterministic: the same model, data and seed give a byte-identical file)
  index_report.json {"index_recall": {type: {"recall@100_vs_flat", "search_seconds", ...}},
                    "started_at", "finished_at"}  (timings: differs between re-runs)
  per_query.json   {<scoring name, e.g. "dot", "dn@0.25", "dn*@0.25">: {qid: per-query metric}}
                   (sampled scorings: mean over repeats)
  run-<slug>.trec, run-<slug>-rep<r>.trec
                   `qid Q0 docid rank score tag`; the slug is the scoring's name with the
                   characters file names and MLflow keys allow ("dn*@0.25" -> "dnstar-0.25").
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipeline.evaluation import distribution_normalization as dnlib
from pipeline.core.common import (PipelineError, atomic_dir, atomic_write_json, atomic_write_text, log, parse_json_object,
                     run_main, seed_everything, set_threads, step_parser)
from pipeline.core.layout import INDEX_REPORT, METRICS, PER_QUERY
from pipeline.core.eval_params import DNStarParams, EvalParams, NNNParams, QBNormParams, QueryBankParams
from pipeline.core.index_params import check_index_type, check_index_types
from pipeline.core.params import as_list, check_int, check_keys, defaults, merged
from pipeline.evaluation.protocols import available_protocols, get_protocol
from pipeline.evaluation.scorings import BASELINE, available_scorings, expand, scoring_class, ScoringInputs, uses_dn_star
from pipeline.evaluation.querybank import check_bank
from pipeline.retrieval.readers import load_embeddings, load_index
from pipeline.sources.datasets import corpus_digest, iter_corpus_ids, load_dataset


# ----------------------------------------------------------------------------- parameters
def resolve_params(params: dict) -> EvalParams:
    """Validate the step's JSON parameters (every key named on error) and fill the defaults, once at
    the step's entry."""
    check_keys(params, defaults(EvalParams), "params")
    given = merged(EvalParams, params)
    sections = {key: cls(**check_keys(given.pop(key), defaults(cls), key)) for key, cls in
                (("dn_star", DNStarParams), ("nnn", NNNParams), ("qbnorm", QBNormParams),
                 ("query_bank", QueryBankParams))}
    p = EvalParams(**given, **sections)
    if not isinstance(p.split, str) or not p.split:
        raise PipelineError(f"split: expected a qrels split name, got {p.split!r}")
    if p.protocol not in available_protocols():
        raise PipelineError(f"protocol: unknown evaluation protocol {p.protocol!r}; "
                            f"allowed: {available_protocols()}")
    p.scorings = as_list(p.scorings, f"scorings (from {available_scorings()})")
    for s in p.scorings:
        if s not in available_scorings():
            raise PipelineError(f"scorings: unknown scoring {s!r}; allowed: {available_scorings()}")
    lambdas = as_list(p.lambdas, "lambdas (numbers in [0, 1])")
    p.lambdas = list(dict.fromkeys(dnlib.check_lambda(x, "lambdas") for x in lambdas))
    p.dn_order = dnlib.check_order(p.dn_order, "dn_order")
    for key in ("samples", "repeats"):
        check_int(getattr(p.dn_star, key), f"dn_star.{key}")
    check_int(p.dn_star.seed, "dn_star.seed", minimum=0)
    # NNN and QB-Norm take lists of values, like lambdas, over one shared reference bank.
    p.nnn.k, p.nnn.alpha = as_list(p.nnn.k, "nnn.k"), as_list(p.nnn.alpha, "nnn.alpha")
    p.qbnorm.beta = as_list(p.qbnorm.beta, "qbnorm.beta")
    check_bank(p.query_bank)
    check_index_type(p.index, "index")
    if p.approx_indexes:
        p.approx_indexes = check_index_types(p.approx_indexes, "approx_indexes")
    check_int(p.top_k, "top_k")
    check_int(p.batch_size, "batch_size")
    check_int(p.seed, "seed", minimum=None)
    for family in p.scorings:
        scoring_class(family).check(p)
    return p


def as_eval_params(params: dict | EvalParams) -> EvalParams:
    """A step's parameters as EvalParams: a JSON object from the command line is resolved here,
    at the step's entry, and the instance passed on."""
    return params if isinstance(params, EvalParams) else resolve_params(params)


# ----------------------------------------------------------------------------- outputs
def trec_lines(results: dict[str, dict[str, float]], tag: str) -> str:
    lines = []
    for qid, hits in results.items():
        # Python's sort is stable and `hits` is already best-first with ties by row, so equal
        # scores keep the search order; repr keeps every digit so no new ties appear on reread.
        ranked = sorted(hits.items(), key=lambda kv: -kv[1])
        for rank, (docid, score) in enumerate(ranked, 1):
            lines.append(f"{qid} Q0 {docid} {rank} {score!r} {tag}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- helpers
def index_recall(index_dir: Path, stats: dict, kinds: list[str], q: np.ndarray, emb: np.ndarray, k: int
                 ) -> dict[str, dict]:
    """Recall@k of each index's dot-product top-k against the flat index (exact search when no
    flat index was built), plus search time and the build cost recorded by the index step.
    The key names the requested k even when the corpus is smaller, so tables line up."""
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


def _rows_for(scoring, repeats: list[tuple[dict, dict]], index: str) -> tuple[dict, dict[str, float]]:
    """One metrics row and the per-query values of a scoring from its repeats (one for most)."""
    row = {"scoring": scoring.column, "lambda": scoring.lam, "index": index}
    per_query = {qid: float(np.mean([pq[qid] for _, pq in repeats])) for qid in repeats[0][1]}
    if not scoring.sampled:
        return {**row, **repeats[0][0]}, per_query
    row["repeats"] = len(repeats)
    for key in repeats[0][0]:
        vals = np.array([m[key] for m, _ in repeats])
        row[key] = round(float(vals.mean()), 5)
        # Sample std (ddof=1) over the repeats; 0 for a single repeat.
        row[f"{key}_std"] = round(float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, 5)
    return row, per_query


def trec_name(scoring, repeat: int, sampled: bool) -> str:
    return f"run-{scoring.slug}-rep{repeat}" if sampled else f"run-{scoring.slug}"


def check_same_corpus(ds, index_dir: Path, doc_ids: list[str], stats: dict) -> None:
    """The index must hold this dataset's corpus, row for row. The corpus digest recorded at index
    time settles it at once; an index without one (built by an older version) is checked by
    streaming corpus.jsonl's ids against its rows, never holding the passages."""
    expected = corpus_digest(ds.manifest)
    count = ds.manifest.get("counts", {}).get("docs")
    if stats.get("corpus_sha256") and expected:
        if stats["corpus_sha256"] == expected and count in (None, len(doc_ids)):
            return
        problem = f"corpus digest {stats['corpus_sha256'][:12]}… vs {expected[:12]}…"
    else:
        rows = 0
        for rows, doc_id in enumerate(iter_corpus_ids(ds.root), start=1):
            if rows > len(doc_ids) or doc_ids[rows - 1] != doc_id:
                break
        else:
            if rows == len(doc_ids):
                return
        problem = f"{len(doc_ids)} indexed ids, corpus.jsonl differs at row {rows}"
    raise PipelineError(f"{index_dir}: built from a different corpus than {ds.root}/corpus.jsonl ({problem}); "
                        "re-run the index step")


def score_all(scorings, index, inputs, protocol, doc_ids: list[str]) -> tuple[list, dict, dict, dict]:
    """Search and evaluate every scoring: (metrics rows, per-query values by scoring name, TREC
    files by name, facts each scoring records for metrics.json by scoring name)."""
    p, qids = inputs.params, inputs.query_ids
    rows_out, per_query, runs, details = [], {}, {}, {}
    for scoring in scorings:
        repeats = []
        for r, (scores, rows) in enumerate(scoring.rankings(index, inputs, p.top_k)):
            results = dnlib.to_results(qids, doc_ids, scores, rows)
            repeats.append(protocol.evaluate(results))
            name = trec_name(scoring, r, scoring.sampled)
            runs[f"{name}.trec"] = trec_lines(results, name[len("run-"):])
        row, per_query[scoring.name] = _rows_for(scoring, repeats, p.index)
        if scoring.details(inputs) is not None:
            details[scoring.name] = scoring.details(inputs)
        rows_out.append(row)
        log.info("%-10s %s %s", scoring.name, p.index,
                 " ".join(f"{k}={row[k]:.4f}" for k in protocol.headline if k in row))
    return rows_out, per_query, runs, details


# ----------------------------------------------------------------------------- entry point
def run(model_dir: str, dataset_dir: str, index_dir: str, out_dir: str, params: dict | EvalParams) -> dict:
    p = as_eval_params(params)  # before the slow torch import, so config errors come back at once
    started_at = time.time()
    from pipeline.models.encoder import BiEncoder  # why: loads torch; kept out of this module's import

    seed_everything(p.seed)
    set_threads()
    ds = load_dataset(dataset_dir, corpus=False)  # queries and qrels; passages stay on disk
    index_dir = Path(index_dir)
    emb, doc_ids, stats = load_embeddings(index_dir)
    check_same_corpus(ds, index_dir, doc_ids, stats)
    if p.index not in stats["indexes"]:
        raise PipelineError(f"index: {p.index!r} was not built in {index_dir} (built: {sorted(stats['indexes'])})")
    approx = p.approx_indexes
    if approx is None:
        approx = [k for k in stats["indexes"] if k != "flat"]
    for kind in approx:
        if kind not in stats["indexes"]:
            raise PipelineError(f"approx_indexes: {kind!r} was not built in {index_dir} "
                                f"(built: {sorted(stats['indexes'])})")
    protocol = get_protocol(p.protocol)(ds, p.split)
    qids = protocol.query_ids()
    if not qids:
        raise PipelineError(f"{ds.root}/qrels/{p.split}.tsv: no queries to evaluate")

    # Scorings check their own inputs (e.g. DN*'s sample sizes) before any encoding.
    scorings = expand(p.scorings, p.lambdas, p)
    inputs = ScoringInputs(dataset=ds, query_ids=qids, num_docs=len(emb), params=p)
    for scoring in scorings:
        scoring.prepare(inputs)

    model = BiEncoder.load(model_dir)
    if model.embedding_dim != emb.shape[1]:
        raise PipelineError(f"{index_dir}: embeddings have dim {emb.shape[1]} but {model_dir} encodes {model.embedding_dim}")
    if any(s.family != BASELINE for s in scorings) and p.dn_order == "normalize_then_shift" \
            and not stats.get("normalized", True):
        log.warning("dn_order normalize_then_shift: %s does not L2-normalise, so DN shifts raw embeddings",
                    model_dir)
    inputs.queries = model.encode_texts(protocol.query_texts(), "query", batch_size=p.batch_size, progress=True,
                                        desc="encode queries")
    inputs.docs = np.asarray(emb)
    inputs.encode = lambda texts: model.encode_texts(texts, "query", batch_size=p.batch_size, progress=True,
                                                     desc="encode extra queries")

    index = load_index(index_dir, p.index, stats)
    if p.top_k < protocol.depth:
        log.warning("top_k=%d < %d: metrics at depth %d only see the top %d documents", p.top_k, protocol.depth,
                    protocol.depth, p.top_k)
    rows_out, per_query, runs, details = score_all(scorings, index, inputs, protocol, doc_ids)
    recall = index_recall(index_dir, stats, approx, inputs.queries, inputs.docs, p.top_k)
    result = {"rows": rows_out, "index_recall": recall, "num_queries": len(qids), "num_docs": len(doc_ids),
              "split": p.split, "top_k": p.top_k, "dn_order": p.dn_order,
              "dn_star": asdict(p.dn_star) if uses_dn_star(p.scorings) else None}
    if p.protocol != "qrels":
        result["protocol"] = p.protocol
    if "query_bank" in inputs.extra:  # NNN / QB-Norm: which reference queries, how many
        result["query_bank"] = inputs.extra["query_bank"].record()
    if details:
        result["scoring_details"] = details
    with atomic_dir(out_dir) as tmp:
        for name, text in runs.items():
            atomic_write_text(tmp / name, text)
        atomic_write_json(tmp / PER_QUERY, per_query)
        atomic_write_json(tmp / METRICS, {k: v for k, v in result.items() if k != "index_recall"})
        # Wall-clock times live here, not in metrics.json, which stays byte-identical across re-runs.
        atomic_write_json(tmp / INDEX_REPORT, {"index_recall": recall, "started_at": started_at,
                                               "finished_at": time.time()})
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = step_parser(
        "python -m pipeline.evaluation.evaluate",
        "Search an index folder with the model's query embeddings under each scoring (plain dot product, DN, DN*, "
        "...); write TREC run files, metrics.json and per_query.json.",
        {"model": "model folder (loads with BiEncoder.load)", "dataset": "normalised dataset folder",
         "index": "index folder written by pipeline.retrieval.index", "out": "output folder (written atomically)"},
        defaults(EvalParams))
    args = parser.parse_args(argv)
    return run(args.model, args.dataset, args.index, args.out, resolve_params(parse_json_object(args.params_json)))


if __name__ == "__main__":
    run_main(main)
