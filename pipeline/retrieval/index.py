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
import os
import time
from pathlib import Path

import numpy as np

from pipeline.core.common import PipelineError, atomic_dir, atomic_path, atomic_write_json, log, parse_json_object, run_main, step_parser, read_json

from pipeline.core.layout import DOC_IDS, EMBEDDINGS, INDEX_STATS
from pipeline.core.common import set_threads  # noqa: F401  (re-exported: evaluate and scale call it from here)
from pipeline.core.index_params import ALIASES, check_index_types, default_nlist, resolve_params  # noqa: F401
from pipeline.core.params import IndexParams, defaults, merged
from pipeline.retrieval.shards import gather, iter_rows, npy_header, read_plan, read_rows
from pipeline.sources.datasets import corpus_digest, load_dataset



def factory_string(kind: str, params: dict) -> str:
    """The FAISS index_factory string of an index type (aliases expand with their parameters)."""
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return f"HNSW{params['hnsw']['M']},Flat"
    if kind == "ivf":
        return f"IVF{params['ivf']['nlist']},Flat"
    return kind


def file_name(kind: str) -> str:
    """`<kind>.faiss`, with a factory string's punctuation made file-name safe."""
    return "".join(c if c.isalnum() or c in "-." else "_" for c in kind) + ".faiss"


# ----------------------------------------------------------------------------- FAISS
def new_index(kind: str, dim: int, params: dict):
    """An empty inner-product index of type `kind` with its build-time parameters set."""
    import faiss

    index = faiss.index_factory(dim, factory_string(kind, params), faiss.METRIC_INNER_PRODUCT)
    hnsw = _hnsw_of(index)
    if hnsw is not None:
        hnsw.efConstruction = params["hnsw"]["efConstruction"]
    ivf = _ivf_of(index)
    if ivf is not None:
        ivf.cp.seed = params["ivf"]["seed"]
        # Small corpora have fewer than FAISS's advised 39 points per list; that is expected here.
        ivf.cp.min_points_per_centroid = 1
    return index


def build_index(kind: str, emb: np.ndarray, params: dict):
    """Build one inner-product FAISS index of type `kind` (alias or factory string) over `emb`."""
    import faiss

    emb = np.ascontiguousarray(emb, dtype=np.float32)
    index = new_index(kind, emb.shape[1], params)
    if not index.is_trained:
        index.train(emb)
    index.add(emb)
    configure_search(index, index_params(kind, params))
    return index


def _hnsw_of(index):
    import faiss

    inner = faiss.downcast_index(index)
    return inner.hnsw if hasattr(inner, "hnsw") else None


def _ivf_of(index):
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def configure_search(index, search: dict) -> None:
    """Apply search-time knobs (efSearch, nprobe) recorded in index_stats.json to a loaded index."""
    hnsw, ivf = _hnsw_of(index), _ivf_of(index)
    if hnsw is not None and "efSearch" in search:
        hnsw.efSearch = int(search["efSearch"])
    if ivf is not None and "nprobe" in search:
        ivf.nprobe = int(search["nprobe"])


def factory_nprobe(kind: str, ivf: dict) -> int | None:
    """nprobe for a factory string's own list count (IVF64,PQ48 -> 64 lists): the share of lists
    that ivf.nprobe / ivf.nlist probes, so the default probes a quarter of them."""
    import re

    lists = re.search(r"IVF(\d+)", kind)
    if ivf.get("nprobe") is None or not lists or not ivf.get("nlist"):
        return ivf.get("nprobe")
    n = int(lists.group(1))
    return max(1, min(n, round(ivf["nprobe"] * n / ivf["nlist"])))


def index_params(kind: str, params: dict) -> dict:
    """The parameters recorded for an index (and re-applied at search time)."""
    if kind == "flat":
        return {}
    if kind == "hnsw":
        return dict(params["hnsw"])
    if kind == "ivf":
        return dict(params["ivf"])
    out = {"factory": kind}
    if "HNSW" in kind:
        out.update(efSearch=params["hnsw"]["efSearch"], efConstruction=params["hnsw"]["efConstruction"])
    if "IVF" in kind:
        out.update(nprobe=factory_nprobe(kind, params["ivf"]), seed=params["ivf"]["seed"])
    return {k: v for k, v in out.items() if v is not None}


def write_indexes(emb: np.ndarray, params: dict, out_dir: Path) -> dict:
    """Build and write each requested index into `out_dir`; return its stats block."""
    import faiss

    stats = {}
    for kind in params["index_types"]:
        t0 = time.perf_counter()
        index = build_index(kind, emb, params)
        build_seconds = time.perf_counter() - t0
        path = out_dir / file_name(kind)
        faiss.write_index(index, str(path))
        stats[kind] = {"build_seconds": round(build_seconds, 4), "size_bytes": path.stat().st_size,
                       "params": index_params(kind, params)}
        log.info("built %s index over %d docs in %.2fs (%d bytes)", kind, len(emb), build_seconds,
                 stats[kind]["size_bytes"])
    return stats


# ----------------------------------------------------------------------------- built from shards
# A sharded corpus never exists as one float32 array in RAM: embeddings.npy (float16/float32) is
# read in blocks of CHUNK rows with plain reads. Exact ("flat") search scans that file instead of
# a flat.faiss copy of it; the other index types are trained on a sample and filled block by block.
CHUNK = 65536
FLAT_STORAGE = "embeddings.npy"  # index_stats params of a flat index that is the embeddings file


def _train_rows(num_docs: int, params: dict) -> np.ndarray:
    size = min(num_docs, params["train_size"])
    if size == num_docs:
        return np.arange(num_docs)
    return np.sort(np.random.default_rng(params["ivf"]["seed"]).choice(num_docs, size=size, replace=False))


def build_index_streaming(kind: str, emb_path: Path, params: dict):
    """`build_index` over a .npy file: quantisers are trained on `train_size` sampled rows, then the
    vectors are added CHUNK rows at a time, so only the index itself grows in memory."""
    import faiss

    header = npy_header(emb_path)
    num_docs, dim = header[0]
    index = new_index(kind, dim, params)
    if not index.is_trained:
        rows = _train_rows(num_docs, params)
        sample = np.concatenate([read_rows(emb_path, s, s + CHUNK, header)[rows[(rows >= s) & (rows < s + CHUNK)] - s]
                                 for s in range(0, num_docs, CHUNK)])
        index.train(np.ascontiguousarray(sample))
        del sample
    for _, block in iter_rows(emb_path, CHUNK):
        index.add(np.ascontiguousarray(block))
    configure_search(index, index_params(kind, params))
    return index


def write_indexes_streaming(emb_path: Path, params: dict, out_dir: Path) -> dict:
    """`write_indexes` for an index folder gathered from shards. The flat index is the embeddings
    file itself (searched by `MemmapFlat`), so the corpus is never stored or loaded twice."""
    import faiss

    stats = {}
    for kind in params["index_types"]:
        if kind == "flat":
            stats[kind] = {"build_seconds": 0.0, "size_bytes": emb_path.stat().st_size,
                           "params": {"storage": FLAT_STORAGE}}
            continue
        t0 = time.perf_counter()
        index = build_index_streaming(kind, emb_path, params)
        build_seconds = time.perf_counter() - t0
        path = out_dir / file_name(kind)
        faiss.write_index(index, str(path))
        del index
        stats[kind] = {"build_seconds": round(build_seconds, 4), "size_bytes": path.stat().st_size,
                       "params": index_params(kind, params)}
        log.info("built %s index from shards in %.2fs (%d bytes)", kind, build_seconds, stats[kind]["size_bytes"])
    return stats


class MemmapFlat:
    """Exact inner-product search over an embeddings .npy file with the FAISS `search(q, k)`
    interface: queries in batches, the corpus in blocks of `chunk` rows read from disk, and a
    running top-k merged across blocks. Scores are float32 dot products like IndexFlatIP's; ties
    go to the lower row."""

    # 256 queries x 16,384 rows keep the per-block temporaries (scores, their negation, the
    # argpartition indices) near 64 MB whatever the corpus size.
    def __init__(self, path: str | os.PathLike, chunk: int = 16384, query_batch: int = 256):
        self.path = Path(path)
        self.header = npy_header(self.path)
        self.ntotal, self.d = self.header[0]
        self.chunk, self.query_batch = chunk, query_batch

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(q, dtype=np.float32)
        k = min(k, self.ntotal)
        best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
        best_i = np.full((len(q), k), -1, dtype=np.int64)
        for start in range(0, self.ntotal, self.chunk):
            block = read_rows(self.path, start, start + self.chunk, self.header)
            for qs in range(0, len(q), self.query_batch):
                s = q[qs:qs + self.query_batch] @ block.T
                kk = min(k, s.shape[1])
                part = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < s.shape[1] else \
                    np.broadcast_to(np.arange(s.shape[1]), s.shape)
                cand_s = np.concatenate([best_s[qs:qs + self.query_batch], np.take_along_axis(s, part, 1)], 1)
                cand_i = np.concatenate([best_i[qs:qs + self.query_batch], part + start], 1)
                # Best first, ties to the lower row; empty slots (-inf, -1) sort last.
                order = np.lexsort((np.where(cand_i < 0, np.iinfo(np.int64).max, cand_i), -cand_s), axis=1)[:, :k]
                best_s[qs:qs + self.query_batch] = np.take_along_axis(cand_s, order, 1)
                best_i[qs:qs + self.query_batch] = np.take_along_axis(cand_i, order, 1)
        return best_s, best_i


def read_stats(index_dir: str | os.PathLike) -> dict:
    index_dir = Path(index_dir)
    if not (index_dir / INDEX_STATS).is_file():
        raise PipelineError(f"{index_dir}: not an index folder (missing {INDEX_STATS})")
    return read_json(index_dir / INDEX_STATS)


def load_index(index_dir: str | os.PathLike, kind: str, stats: dict | None = None):
    """Load `{kind}.faiss` from an index folder with its recorded search parameters applied."""
    import faiss

    index_dir = Path(index_dir)
    stats = stats if stats is not None else read_stats(index_dir)
    if stats.get("indexes", {}).get(kind, {}).get("params", {}).get("storage") == FLAT_STORAGE:
        return MemmapFlat(index_dir / EMBEDDINGS)
    path = index_dir / file_name(kind)
    if kind not in stats.get("indexes", {}) or not path.is_file():
        raise PipelineError(f"{index_dir}: no {kind!r} index (built: {sorted(stats.get('indexes', {}))})")
    index = faiss.read_index(str(path))
    configure_search(index, stats["indexes"][kind].get("params", {}))
    return index


def load_embeddings(index_dir: str | os.PathLike, doc_ids_expected=None) -> tuple[np.ndarray, list[str], dict]:
    """(memory-mapped embeddings, doc ids in row order, index_stats) of an index folder, checked
    for consistency (and against the dataset's doc ids when given)."""
    index_dir = Path(index_dir)
    stats = read_stats(index_dir)
    doc_ids = read_json(index_dir / DOC_IDS)
    if not (index_dir / EMBEDDINGS).is_file():
        raise PipelineError(f"{index_dir}: missing {EMBEDDINGS}")
    emb = np.load(index_dir / EMBEDDINGS, mmap_mode="r")
    if len(doc_ids) != len(emb):
        raise PipelineError(f"{index_dir}: {DOC_IDS} has {len(doc_ids)} ids but {EMBEDDINGS} {len(emb)} rows")
    return emb, doc_ids, stats


# ----------------------------------------------------------------------------- entry point
def run_gather(dataset_dir: str, shards_dir: str, plan_path: str, out_dir: str, params: dict) -> dict:
    """The index step over a sharded corpus: gather the shards (pipeline.retrieval.shards) and build the
    indexes from the gathered file without loading it."""
    plan = read_plan(plan_path)
    params = resolve_params(params, num_docs=plan["num_docs"])
    set_threads()
    with atomic_dir(out_dir) as tmp:
        facts = gather(shards_dir, plan_path, tmp, params["dtype"])
        stats = {"num_docs": facts["num_docs"], "dim": facts["dim"], "encode_seconds": facts["encode_seconds"],
                 "model": facts["model"], "normalized": facts["normalized"], "shards": facts["shards"],
                 "dtype": params["dtype"], "corpus_sha256": plan.get("corpus_sha256"),
                 "indexes": write_indexes_streaming(tmp / EMBEDDINGS, params, tmp)}
        atomic_write_json(tmp / INDEX_STATS, stats)
    log.info("gathered %d shards (%d docs) into %s", facts["shards"], facts["num_docs"], out_dir)
    return stats


def run(model_dir: str, dataset_dir: str, out_dir: str, params: dict) -> dict:
    resolve_params(params)  # fail on bad config before the slow torch import and model load
    from pipeline.models.encoder import BiEncoder, describe  # why: loads torch; kept out of this module's import

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
        stored = emb.astype(params["dtype"], copy=False)
        # Its size is known: a full disk is reported with the bytes the embeddings need.
        with atomic_path(tmp / EMBEDDINGS, needed=stored.nbytes + 128) as npy, open(npy, "wb") as fh:
            np.save(fh, stored)
        (tmp / DOC_IDS).write_text(json.dumps(doc_ids) + "\n", encoding="utf-8")
        stats = {"num_docs": len(doc_ids), "dim": int(emb.shape[1]), "encode_seconds": round(encode_seconds, 3),
                 "model": str(model_dir), "normalized": bool(model.spec.normalize),
                 "device": device, "precision": precision,
                 "corpus_sha256": corpus_digest(ds.manifest)}
        if params["dtype"] != "float32":
            stats["dtype"] = params["dtype"]
            # Index what is stored, so every search path sees the same vectors.
            emb = emb.astype(params["dtype"]).astype(np.float32)
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
    if args.shards is not None:
        return run_gather(args.dataset, args.shards, args.plan, args.out, parse_json_object(args.params_json))
    return run(args.model, args.dataset, args.out, parse_json_object(args.params_json))


if __name__ == "__main__":
    run_main(main)
