"""Index step: encode the corpus once with a trained (or zero-shot) bi-encoder and build FAISS
indexes over the embeddings.

Outputs (one folder, swapped in atomically):
  embeddings.npy    float32 [num_docs, dim], row i is docids[i]
  docids.json       list of doc ids in row order
  {type}.faiss      one per requested index type (flat, hnsw, ivf), all inner product
  index_stats.json  {"num_docs", "dim", "encode_seconds", "model", "indexes": {type: {"build_seconds",
                    "size_bytes", "params"}}}

Every index scores by inner product, which is cosine for a normalising encoder and the raw
dot product otherwise; Distribution Normalization reuses these indexes by shifting queries
(`pipeline.dn`), so nothing here depends on the scoring that evaluation will use.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import PipelineError, atomic_dir, atomic_write_json, log, parse_json_object, run_main

INDEX_TYPES = ("flat", "hnsw", "ivf")
# Measured on full SciFact (5,183 MiniLM vectors, 300 test queries, recall@100 vs flat):
# M=32/efConstruction=200 reaches 0.956 / 0.991 / 0.999 / 0.9998 at efSearch 64 / 128 / 256 / 512,
# so 256 clears 0.99 with margin at ~0.4 ms per query on 2 cores.
HNSW_DEFAULTS = {"M": 32, "efConstruction": 200, "efSearch": 256}
DEFAULTS: dict[str, Any] = {"batch_size": 64, "index_types": ["flat", "hnsw", "ivf"], "hnsw": {}, "ivf": {},
                            "precision": "fp32"}
# Inference precision of corpus encoding: CUDA autocast dtype; on the CPU every value computes in
# fp32 (accepted so one config runs anywhere). Embeddings are always stored as float32.
PRECISIONS = ("fp32", "fp16", "bf16")


# ----------------------------------------------------------------------------- parameters
def _check_keys(obj: Any, allowed: set[str], where: str) -> dict:
    if not isinstance(obj, dict):
        raise PipelineError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise PipelineError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(allowed)}")
    return obj


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PipelineError(f"{key}: expected a positive integer, got {value!r}")
    return value


def check_index_types(types: Any, key: str = "index_types") -> list[str]:
    if isinstance(types, str):
        types = [types]
    if not isinstance(types, list) or not types:
        raise PipelineError(f"{key}: expected a non-empty list of index types from {list(INDEX_TYPES)}")
    for t in types:
        if t not in INDEX_TYPES:
            raise PipelineError(f"{key}: unknown index type {t!r}; allowed: {list(INDEX_TYPES)}")
    return list(dict.fromkeys(types))


def default_nlist(num_docs: int) -> int:
    # ~4*sqrt(N) is FAISS's usual starting point; never more lists than points to train on.
    return max(1, min(num_docs, int(round(4 * math.sqrt(num_docs)))))


def resolve_params(params: dict, num_docs: int | None = None) -> dict:
    """Validate the step's JSON parameters and fill defaults. `num_docs` (when known) sizes IVF."""
    params = _check_keys(params, set(DEFAULTS), "params")
    out = {**DEFAULTS, **params}
    out["batch_size"] = _positive_int(out["batch_size"], "batch_size")
    out["index_types"] = check_index_types(out["index_types"])
    if out["precision"] not in PRECISIONS:
        raise PipelineError(f"precision: expected one of {list(PRECISIONS)}, got {out['precision']!r}")
    hnsw = {**HNSW_DEFAULTS, **_check_keys(out["hnsw"], set(HNSW_DEFAULTS), "hnsw")}
    for k in hnsw:
        _positive_int(hnsw[k], f"hnsw.{k}")
    out["hnsw"] = hnsw
    ivf = _check_keys(out["ivf"], {"nlist", "nprobe", "seed"}, "ivf")
    ivf = dict(ivf)
    if ivf.get("nlist") is None:  # the config schema allows null for "use the default"
        ivf.pop("nlist", None)
    if "nlist" in ivf:
        _positive_int(ivf["nlist"], "ivf.nlist")
    if "nprobe" in ivf:
        _positive_int(ivf["nprobe"], "ivf.nprobe")
    seed = ivf.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PipelineError(f"ivf.seed: expected a non-negative integer, got {seed!r}")
    ivf["seed"] = seed
    if num_docs is not None:
        ivf.setdefault("nlist", default_nlist(num_docs))
        if ivf["nlist"] > num_docs:
            raise PipelineError(f"ivf.nlist: {ivf['nlist']} lists need at least as many documents; "
                                f"the corpus has {num_docs}")
        # A quarter of the lists: recall@100 0.956 on SciFact (nlist 288) while still pruning 3/4
        # of the corpus; nprobe = nlist/2 gives 0.994 for callers who want near-exact IVF.
        ivf.setdefault("nprobe", max(1, ivf["nlist"] // 4))
        ivf["nprobe"] = min(ivf["nprobe"], ivf["nlist"])
    out["ivf"] = ivf
    return out


# ----------------------------------------------------------------------------- FAISS
def set_threads() -> None:
    """Honour OMP_NUM_THREADS (what Snakemake's `threads:` sets) for torch and FAISS alike."""
    value = os.environ.get("OMP_NUM_THREADS")
    if value and value.isdigit() and int(value) > 0:
        import faiss
        import torch

        torch.set_num_threads(int(value))
        faiss.omp_set_num_threads(int(value))


def build_index(kind: str, emb: np.ndarray, params: dict):
    """Build one inner-product FAISS index of type `kind` over float32 `emb`."""
    import faiss

    emb = np.ascontiguousarray(emb, dtype=np.float32)
    dim = emb.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        p = params["hnsw"]
        index = faiss.IndexHNSWFlat(dim, p["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p["efConstruction"]
        index.hnsw.efSearch = p["efSearch"]
    elif kind == "ivf":
        p = params["ivf"]
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, p["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = p["seed"]
        # Small corpora have fewer than FAISS's advised 39 points per list; that is expected here.
        index.cp.min_points_per_centroid = 1
        index.train(emb)
        index.nprobe = p["nprobe"]
    else:
        raise PipelineError(f"index_types: unknown index type {kind!r}; allowed: {list(INDEX_TYPES)}")
    index.add(emb)
    return index


def configure_search(index, kind: str, params: dict) -> None:
    """Apply search-time knobs (efSearch, nprobe) recorded in index_stats.json to a loaded index."""
    import faiss

    if kind == "hnsw" and "efSearch" in params:
        faiss.downcast_index(index).hnsw.efSearch = int(params["efSearch"])
    if kind == "ivf" and "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])


def index_params(kind: str, params: dict) -> dict:
    return {"flat": {}, "hnsw": dict(params["hnsw"]), "ivf": dict(params["ivf"])}[kind]


def write_indexes(emb: np.ndarray, params: dict, out_dir: Path) -> dict:
    """Build and write each requested index into `out_dir`; return its stats block."""
    import faiss

    stats = {}
    for kind in params["index_types"]:
        t0 = time.perf_counter()
        index = build_index(kind, emb, params)
        build_seconds = time.perf_counter() - t0
        path = out_dir / f"{kind}.faiss"
        faiss.write_index(index, str(path))
        stats[kind] = {"build_seconds": round(build_seconds, 4), "size_bytes": path.stat().st_size,
                       "params": index_params(kind, params)}
        log.info("built %s index over %d docs in %.2fs (%d bytes)", kind, len(emb), build_seconds,
                 stats[kind]["size_bytes"])
    return stats


def read_stats(index_dir: str | os.PathLike) -> dict:
    from .common import read_json

    index_dir = Path(index_dir)
    if not (index_dir / "index_stats.json").is_file():
        raise PipelineError(f"{index_dir}: not an index folder (missing index_stats.json)")
    return read_json(index_dir / "index_stats.json")


def load_index(index_dir: str | os.PathLike, kind: str, stats: dict | None = None):
    """Load `{kind}.faiss` from an index folder with its recorded search parameters applied."""
    import faiss

    index_dir = Path(index_dir)
    stats = stats if stats is not None else read_stats(index_dir)
    path = index_dir / f"{kind}.faiss"
    if kind not in stats.get("indexes", {}) or not path.is_file():
        raise PipelineError(f"{index_dir}: no {kind!r} index (built: {sorted(stats.get('indexes', {}))})")
    index = faiss.read_index(str(path))
    configure_search(index, kind, stats["indexes"][kind].get("params", {}))
    return index


# ----------------------------------------------------------------------------- entry point
def run(model_dir: str, dataset_dir: str, out_dir: str, params: dict) -> dict:
    resolve_params(params)  # fail on bad config before the slow torch import and model load
    from .datasets import load_dataset
    from .encoder import BiEncoder, describe

    set_threads()
    ds = load_dataset(dataset_dir)
    if not ds.corpus:
        raise PipelineError(f"{dataset_dir}/corpus.jsonl: the corpus is empty")
    params = resolve_params(params, num_docs=len(ds.corpus))
    model = BiEncoder.load(model_dir)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    precision = params["precision"] if device == "cuda" else "fp32"
    if precision != params["precision"]:
        log.info("precision %s is a GPU speed-up; encoding in fp32 on the CPU", params["precision"])
    log.info("encoding %d passages with %s on %s (%s)", len(ds.corpus), describe(model), device, precision)
    doc_ids = ds.doc_ids()
    t0 = time.perf_counter()
    emb = model.encode_texts(ds.passages(doc_ids), "passage", batch_size=params["batch_size"], progress=True,
                             desc="encode corpus", precision=precision)
    encode_seconds = time.perf_counter() - t0
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / "embeddings.npy", emb.astype(np.float32, copy=False))
        (tmp / "docids.json").write_text(json.dumps(doc_ids) + "\n", encoding="utf-8")
        stats = {"num_docs": len(doc_ids), "dim": int(emb.shape[1]), "encode_seconds": round(encode_seconds, 3),
                 "model": str(model_dir), "normalized": bool(model.spec.normalize),
                 "device": device, "precision": precision,
                 "indexes": write_indexes(emb, params, tmp)}
        atomic_write_json(tmp / "index_stats.json", stats)
    return stats


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.index",
        description="Encode a dataset's corpus with a bi-encoder and build FAISS indexes "
                    "(flat / HNSW / IVF, inner product).")
    parser.add_argument("--model", required=True, help="model folder (loads with BiEncoder.load)")
    parser.add_argument("--dataset", required=True, help="normalised dataset folder (corpus.jsonl, ...)")
    parser.add_argument("--out", required=True, help="output index folder (written atomically)")
    parser.add_argument("--params-json", default="{}",
                        help='JSON parameters, e.g. \'{"batch_size": 64, "index_types": ["flat", "hnsw", "ivf"], '
                             '"hnsw": {"M": 32, "efConstruction": 200, "efSearch": 256}, '
                             '"ivf": {"nlist": 288, "nprobe": 72, "seed": 0}, "precision": "fp32"}\' '
                             "(ivf defaults: nlist ~4*sqrt(N), nprobe nlist/4; precision fp16/bf16 "
                             "autocasts on CUDA only, the CPU encodes in fp32)")
    args = parser.parse_args(argv)
    return run(args.model, args.dataset, args.out, parse_json_object(args.params_json))


if __name__ == "__main__":
    run_main(main)
