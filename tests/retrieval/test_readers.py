"""pipeline.retrieval.readers: exact search over a memory-mapped embeddings file (a top-k merge
across blocks, equal to FAISS's flat index), and an index folder's files read back with clear
errors when one is missing or they disagree."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from pipeline.core.common import PipelineError
from pipeline.core.index_params import resolve_params
from pipeline.evaluation import distribution_normalization as dnlib
from pipeline.retrieval.faiss_index import write_indexes
from pipeline.retrieval.readers import MemmapFlat, load_embeddings, load_index, read_stats


def test_memmap_flat_equals_faiss_flat(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 24)).astype(np.float32)
    x[100] = x[7]  # an exact tie: the lower row must come first
    np.save(tmp_path / "e.npy", x)
    q = rng.normal(size=(70, 24)).astype(np.float32)
    q[0] = x[7]
    flat = faiss.IndexFlatIP(24)
    flat.add(x)
    ref_s, ref_i = flat.search(q, 50)
    for chunk, batch in ((3000, 1024), (256, 16), (17, 7)):  # one block, many blocks, blocks < k
        s, i = MemmapFlat(tmp_path / "e.npy", chunk=chunk, query_batch=batch).search(q, 50)
        # FAISS's heap leaves exact ties in any order; MemmapFlat puts the lower row first.
        np.testing.assert_array_equal(i[1:], ref_i[1:])
        assert list(i[0][:2]) == [7, 100] and set(ref_i[0][:2]) == {7, 100}
        np.testing.assert_array_equal(i[0][2:], ref_i[0][2:])
        np.testing.assert_allclose(s, ref_s, rtol=1e-5, atol=1e-5)
    # k larger than the corpus: every row once, then nothing missing.
    small = tmp_path / "small.npy"
    np.save(small, x[:5])
    s, i = MemmapFlat(small, chunk=2).search(q[:3], 10)
    assert i.shape == (3, 5) and sorted(i[0]) == [0, 1, 2, 3, 4]
    # Through the DN search used by evaluation: identical to the exact float64 reference.
    means = dnlib.dn_means(q, x)
    got = dnlib.dn_search(MemmapFlat(tmp_path / "e.npy", chunk=500), q, 20, means, 0.25, doc_emb=x)
    want = dnlib.dn_search(flat, q, 20, means, 0.25, doc_emb=x)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])


def index_folder(folder, rows=6):
    emb = np.eye(rows, 4, dtype=np.float32)
    np.save(folder / "embeddings.npy", emb)
    (folder / "docids.json").write_text(json.dumps([f"d{i}" for i in range(rows)]))
    stats = write_indexes(emb, resolve_params({"index_types": ["flat", "hnsw"]}), folder)
    (folder / "index_stats.json").write_text(json.dumps({"indexes": stats}))
    return emb


def test_index_folder_reads_back_with_its_search_parameters(tmp_path):
    emb = index_folder(tmp_path)
    got, ids, stats = load_embeddings(tmp_path)
    np.testing.assert_array_equal(got, emb)
    assert ids[-1] == "d5" and set(stats["indexes"]) == {"flat", "hnsw"}
    assert faiss.downcast_index(load_index(tmp_path, "hnsw")).hnsw.efSearch == 256
    assert load_index(tmp_path, "flat").search(emb[2:3], 1)[1].tolist() == [[2]]
    with pytest.raises(PipelineError, match=r"no 'ivf' index \(built: \['flat', 'hnsw'\]\)"):
        load_index(tmp_path, "ivf")
    # A flat index kept as the embeddings file (built from shards) searches it directly.
    (tmp_path / "index_stats.json").write_text(json.dumps({"indexes": {"flat": {"params": {"storage": "embeddings.npy"}}}}))
    assert isinstance(load_index(tmp_path, "flat"), MemmapFlat)


def test_missing_or_inconsistent_files_name_the_folder(tmp_path):
    with pytest.raises(PipelineError, match=f"{tmp_path}: not an index folder \\(missing index_stats.json\\)"):
        read_stats(tmp_path)
    index_folder(tmp_path)
    (tmp_path / "docids.json").write_text(json.dumps(["d0"]))
    with pytest.raises(PipelineError, match="docids.json has 1 ids but embeddings.npy 6 rows"):
        load_embeddings(tmp_path)
    (tmp_path / "embeddings.npy").unlink()
    with pytest.raises(PipelineError, match="missing embeddings.npy"):
        load_embeddings(tmp_path)
