"""Reading an index folder back: its stats, its embeddings (memory-mapped), and each index with
its search parameters applied; an index gathered from shards searches the embeddings file itself
(`MemmapFlat`) instead of a flat.faiss copy."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.core.common import PipelineError, read_json
from pipeline.core.layout import DOC_IDS, EMBEDDINGS, INDEX_STATS
from pipeline.retrieval.faiss_index import FLAT_STORAGE, configure_search, file_name
from pipeline.retrieval.shards import npy_header, read_rows


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
