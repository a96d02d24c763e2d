"""Index step: encode the corpus once with a trained (or zero-shot) bi-encoder and build FAISS
indexes over the embeddings.

Outputs (one folder, swapped in atomically):
  embeddings.npy    float32 [num_docs, dim], row i is docids[i]
  docids.json       list of doc ids in row order
  {type}.faiss      one per requested index type, all inner product: the aliases flat, hnsw,
                    ivf (tuned parameters) or any FAISS index_factory string ("IVF256,PQ16",
                    "HNSW32,SQ8"; punctuation becomes "_" in the file name)
  index_stats.json  {"num_docs", "dim", "encode_seconds", "model", "indexes": {type: {"build_seconds",
                    "size_bytes", "params"}}}

Every index scores by inner product, which is cosine for a normalising encoder and the raw
dot product otherwise; Distribution Normalization reuses these indexes by shifting queries
(`pipeline.evaluation.distribution_normalization`), so nothing here depends on the scoring that evaluation will use.
"""

from __future__ import annotations

import json
import time

import numpy as np

from pipeline.core.common import (PipelineError, atomic_dir, atomic_path, atomic_write_json, log, parse_json_object, run_main,
                                  set_threads, step_parser)
from pipeline.core.index_params import IndexParams, as_index_params
from pipeline.core.layout import DOC_IDS, EMBEDDINGS, INDEX_STATS
from pipeline.core.params import defaults
from pipeline.retrieval.faiss_index import write_indexes, write_indexes_streaming
from pipeline.retrieval.shards import gather, read_plan
from pipeline.sources.datasets import corpus_digest, load_dataset


# ----------------------------------------------------------------------------- entry point
def run_gather(dataset_dir: str, shards_dir: str, plan_path: str, out_dir: str, params: dict | IndexParams) -> dict:
    """The index step over a sharded corpus: gather the shards (pipeline.retrieval.shards) and build the
    indexes from the gathered file without loading it."""
    plan = read_plan(plan_path)
    params = as_index_params(params).for_corpus(plan["num_docs"])
    set_threads()
    with atomic_dir(out_dir) as tmp:
        facts = gather(shards_dir, plan_path, tmp, params.dtype)
        stats = {"num_docs": facts["num_docs"], "dim": facts["dim"], "encode_seconds": facts["encode_seconds"],
                 "model": facts["model"], "normalized": facts["normalized"], "shards": facts["shards"],
                 "dtype": params.dtype, "corpus_sha256": plan.get("corpus_sha256"),
                 "indexes": write_indexes_streaming(tmp / EMBEDDINGS, params, tmp)}
        atomic_write_json(tmp / INDEX_STATS, stats)
    log.info("gathered %d shards (%d docs) into %s", facts["shards"], facts["num_docs"], out_dir)
    return stats


def run(model_dir: str, dataset_dir: str, out_dir: str, params: dict | IndexParams) -> dict:
    params = as_index_params(params)  # bad parameters fail before the slow torch import and model load
    from pipeline.models.encoder import BiEncoder, describe  # why: loads torch; kept out of this module's import

    set_threads()
    ds = load_dataset(dataset_dir)
    if not ds.corpus:
        raise PipelineError(f"{dataset_dir}/corpus.jsonl: the corpus is empty")
    params = params.for_corpus(len(ds.corpus))
    model = BiEncoder.load(model_dir)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    precision = params.precision if device == "cuda" else "fp32"
    if precision != params.precision:
        log.info("precision %s is a GPU speed-up; encoding in fp32 on the CPU", params.precision)
    log.info("encoding %d passages with %s on %s (%s)", len(ds.corpus), describe(model), device, precision)
    doc_ids = ds.doc_ids()
    t0 = time.perf_counter()
    emb = model.encode_texts(ds.passages(doc_ids), "passage", batch_size=params.batch_size, progress=True,
                             desc="encode corpus", precision=precision)
    encode_seconds = time.perf_counter() - t0
    with atomic_dir(out_dir) as tmp:
        stored = emb.astype(params.dtype, copy=False)
        # Its size is known: a full disk is reported with the bytes the embeddings need.
        with atomic_path(tmp / EMBEDDINGS, needed=stored.nbytes + 128) as npy, open(npy, "wb") as fh:
            np.save(fh, stored)
        (tmp / DOC_IDS).write_text(json.dumps(doc_ids) + "\n", encoding="utf-8")
        stats = {"num_docs": len(doc_ids), "dim": int(emb.shape[1]), "encode_seconds": round(encode_seconds, 3),
                 "model": str(model_dir), "normalized": bool(model.spec.normalize),
                 "device": device, "precision": precision,
                 "corpus_sha256": corpus_digest(ds.manifest)}
        if params.dtype != "float32":
            stats["dtype"] = params.dtype
            # Index what is stored, so every search path sees the same vectors.
            emb = emb.astype(params.dtype).astype(np.float32)
        stats["indexes"] = write_indexes(emb, params, tmp)
        atomic_write_json(tmp / INDEX_STATS, stats)
    return stats


def main(argv: list[str] | None = None) -> dict:
    parser = step_parser(
        "python -m pipeline.retrieval.index",
        "Encode a dataset's corpus with a bi-encoder and build FAISS inner-product indexes: the aliases flat, "
        "hnsw, ivf or any FAISS index_factory string (e.g. 'IVF256,PQ16', 'HNSW32,SQ8'). IVF defaults: nlist "
        "~4*sqrt(N), nprobe nlist/4. precision fp16/bf16 autocasts encoding on CUDA only; the CPU encodes in fp32.",
        {"model": "model folder (loads with BiEncoder.load)", "dataset": "normalised dataset folder (corpus.jsonl, ...)",
         "out": "output index folder (written atomically)"},
        defaults(IndexParams))
    parser.add_argument("--shards", help="gather this folder of encoded shards (<i>.npy, <i>.json written by "
                        "`python -m pipeline.retrieval.shards encode`) instead of encoding the corpus; needs --plan")
    parser.add_argument("--plan", help="the shard plan (plan.json) the shards were encoded under")
    args = parser.parse_args(argv)
    if (args.shards is None) != (args.plan is None):
        raise PipelineError("--shards and --plan go together")
    params = as_index_params(parse_json_object(args.params_json))
    if args.shards is not None:
        return run_gather(args.dataset, args.shards, args.plan, args.out, params)
    return run(args.model, args.dataset, args.out, params)


if __name__ == "__main__":
    run_main(main)
