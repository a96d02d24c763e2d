"""FAISS inner-product indexes: the index_factory string of each index type, building (in
memory, or block by block from an embeddings file gathered from shards), the parameters recorded
for each index and re-applied at search time, and writing the requested indexes of a folder."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipeline.core.common import log
from pipeline.core.index_params import IndexParams, IVFParams
from pipeline.retrieval.shards import iter_rows, npy_header, read_rows


def factory_string(kind: str, params: IndexParams) -> str:
    """The FAISS index_factory string of an index type (aliases expand with their parameters)."""
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return f"HNSW{params.hnsw.M},Flat"
    if kind == "ivf":
        return f"IVF{params.ivf.nlist},Flat"
    return kind


def file_name(kind: str) -> str:
    """`<kind>.faiss`, with a factory string's punctuation made file-name safe."""
    return "".join(c if c.isalnum() or c in "-." else "_" for c in kind) + ".faiss"


def new_index(kind: str, dim: int, params: IndexParams):
    """An empty inner-product index of type `kind` with its build-time parameters set."""
    import faiss

    index = faiss.index_factory(dim, factory_string(kind, params), faiss.METRIC_INNER_PRODUCT)
    hnsw = _hnsw_of(index)
    if hnsw is not None:
        hnsw.efConstruction = params.hnsw.efConstruction
    ivf = _ivf_of(index)
    if ivf is not None:
        ivf.cp.seed = params.ivf.seed
        # Small corpora have fewer than FAISS's advised 39 points per list; that is expected here.
        ivf.cp.min_points_per_centroid = 1
    return index


def build_index(kind: str, emb: np.ndarray, params: IndexParams):
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


def factory_nprobe(kind: str, ivf: IVFParams) -> int | None:
    """nprobe for a factory string's own list count (IVF64,PQ48 -> 64 lists): the share of lists
    that ivf.nprobe / ivf.nlist probes, so the default probes a quarter of them."""
    import re

    lists = re.search(r"IVF(\d+)", kind)
    if ivf.nprobe is None or not lists or not ivf.nlist:
        return ivf.nprobe
    n = int(lists.group(1))
    return max(1, min(n, round(ivf.nprobe * n / ivf.nlist)))


def index_params(kind: str, params: IndexParams) -> dict:
    """The parameters recorded for an index (and re-applied at search time)."""
    if kind == "flat":
        return {}
    if kind == "hnsw":
        return asdict(params.hnsw)
    if kind == "ivf":
        return {k: v for k, v in asdict(params.ivf).items() if v is not None}
    out = {"factory": kind}
    if "HNSW" in kind:
        out.update(efSearch=params.hnsw.efSearch, efConstruction=params.hnsw.efConstruction)
    if "IVF" in kind:
        out.update(nprobe=factory_nprobe(kind, params.ivf), seed=params.ivf.seed)
    return {k: v for k, v in out.items() if v is not None}


def write_indexes(emb: np.ndarray, params: IndexParams, out_dir: Path) -> dict:
    """Build and write each requested index into `out_dir`; return its stats block."""
    import faiss

    stats = {}
    for kind in params.index_types:
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


def _train_rows(num_docs: int, params: IndexParams) -> np.ndarray:
    size = min(num_docs, params.train_size)
    if size == num_docs:
        return np.arange(num_docs)
    return np.sort(np.random.default_rng(params.ivf.seed).choice(num_docs, size=size, replace=False))


def build_index_streaming(kind: str, emb_path: Path, params: IndexParams):
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


def write_indexes_streaming(emb_path: Path, params: IndexParams, out_dir: Path) -> dict:
    """`write_indexes` for an index folder gathered from shards. The flat index is the embeddings
    file itself (searched by `MemmapFlat`), so the corpus is never stored or loaded twice."""
    import faiss

    stats = {}
    for kind in params.index_types:
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
