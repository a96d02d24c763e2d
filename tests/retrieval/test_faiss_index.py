"""pipeline.retrieval.faiss_index with real FAISS: flat / HNSW / IVF over inner product and their
recall against flat, the aliases equal to the hand-built FAISS classes, indexes built block by
block from an embeddings file, and the search parameters recorded for each index."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from pipeline.core.index_params import IVFParams, default_nlist, resolve_params
from pipeline.evaluation import distribution_normalization as dnlib
from pipeline.retrieval import faiss_index as fi
from pipeline.retrieval.readers import load_index


@pytest.fixture(scope="module")
def emb():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 32)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _recall(ids, ref):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, ref)])


def test_build_each_type_and_recall_vs_flat(emb, tmp_path):
    params = resolve_params({"index_types": ["flat", "hnsw", "ivf"]}, num_docs=len(emb))
    assert params.ivf.nlist == default_nlist(2000) == 179
    stats = fi.write_indexes(emb, params, tmp_path)
    assert set(stats) == {"flat", "hnsw", "ivf"}
    for kind, s in stats.items():
        assert s["size_bytes"] == (tmp_path / f"{kind}.faiss").stat().st_size > 0
        assert s["build_seconds"] >= 0
    (tmp_path / "index_stats.json").write_text(json.dumps({"indexes": stats}))
    q = emb[:50] + 0.05 * np.random.default_rng(1).normal(size=(50, 32)).astype(np.float32)
    flat = load_index(tmp_path, "flat")
    ref = flat.search(q, 100)[1]
    np.testing.assert_array_equal(ref[:, 0], np.argmax(q @ emb.T, axis=1))
    hnsw = load_index(tmp_path, "hnsw")
    assert faiss.downcast_index(hnsw).hnsw.efSearch == 256
    assert hnsw.metric_type == faiss.METRIC_INNER_PRODUCT
    assert _recall(hnsw.search(q, 100)[1], ref) > 0.95
    ivf = load_index(tmp_path, "ivf")
    assert faiss.extract_index_ivf(ivf).nprobe == params.ivf.nprobe
    assert ivf.metric_type == faiss.METRIC_INNER_PRODUCT
    assert _recall(ivf.search(q, 100)[1], ref) > 0.5
    # A fixed training seed gives the same IVF index twice.
    a = faiss.serialize_index(fi.build_index("ivf", emb, params))
    b = faiss.serialize_index(fi.build_index("ivf", emb, params))
    assert np.array_equal(a, b)


def test_aliases_equal_their_factory_strings(tmp_path):
    """flat/hnsw/ivf built through index_factory search exactly like the hand-built classes."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 16)).astype(np.float32)
    params = resolve_params({"index_types": ["flat", "hnsw", "ivf"]}, num_docs=len(emb))
    q = rng.normal(size=(20, 16)).astype(np.float32)
    hand = faiss.IndexHNSWFlat(16, params.hnsw.M, faiss.METRIC_INNER_PRODUCT)
    hand.hnsw.efConstruction = params.hnsw.efConstruction
    hand.hnsw.efSearch = params.hnsw.efSearch
    hand.add(emb)
    np.testing.assert_array_equal(fi.build_index("hnsw", emb, params).search(q, 10)[1], hand.search(q, 10)[1])
    quantizer = faiss.IndexFlatIP(16)
    ivf = faiss.IndexIVFFlat(quantizer, 16, params.ivf.nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed, ivf.cp.min_points_per_centroid = params.ivf.seed, 1
    ivf.train(emb)
    ivf.add(emb)
    ivf.nprobe = params.ivf.nprobe
    np.testing.assert_array_equal(fi.build_index("ivf", emb, params).search(q, 10)[1], ivf.search(q, 10)[1])


@pytest.mark.parametrize("kind,floor", [("ivf", 0.5), ("IVF16,PQ8", 0.3), ("HNSW32,SQ8", 0.9)])
def test_streaming_build_recall(tmp_path, kind, floor):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.save(tmp_path / "e.npy", x)
    params = resolve_params({"index_types": ["flat", kind], "train_size": 3000}, num_docs=len(x))
    stats = fi.write_indexes_streaming(tmp_path / "e.npy", params, tmp_path)
    assert stats["flat"]["params"] == {"storage": "embeddings.npy"}
    assert not (tmp_path / "flat.faiss").exists()
    index = faiss.read_index(str(tmp_path / fi.file_name(kind)))
    fi.configure_search(index, stats[kind]["params"])
    assert index.ntotal == len(x)
    q = x[:100] + 0.05 * rng.normal(size=(100, 32)).astype(np.float32)
    ref = dnlib.exact_search(q, x, 10)[1]
    got = index.search(q, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref)])
    assert recall > floor


def test_factory_ivf_probes_the_configured_share_of_its_own_lists():
    assert fi.factory_nprobe("IVF64,PQ48", IVFParams(nlist=288, nprobe=72)) == 16
    assert fi.factory_nprobe("IVF64,PQ48", IVFParams(nlist=288, nprobe=288)) == 64
    assert fi.factory_nprobe("IVF4096,PQ64", IVFParams(nlist=100, nprobe=1)) == 41
    assert fi.factory_nprobe("HNSW32,SQ8", IVFParams(nlist=288, nprobe=72)) == 72
    assert fi.index_params("IVF64,PQ48", resolve_params({}, num_docs=5183))["nprobe"] == 16


def test_factory_strings_and_file_names():
    params = resolve_params({}, num_docs=5183)
    assert [fi.factory_string(k, params) for k in ("flat", "hnsw", "ivf", "IVF64,PQ8")] == \
        ["Flat", "HNSW32,Flat", "IVF288,Flat", "IVF64,PQ8"]
    assert fi.file_name("HNSW32,SQ8") == "HNSW32_SQ8.faiss" and fi.file_name("ivf") == "ivf.faiss"
    assert fi.index_params("flat", params) == {}
    assert fi.index_params("hnsw", params) == {"M": 32, "efConstruction": 200, "efSearch": 256}
    assert fi.index_params("HNSW16,SQ8", params) == {"factory": "HNSW16,SQ8", "efSearch": 256, "efConstruction": 200}
