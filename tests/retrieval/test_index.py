"""FAISS index building with real FAISS: flat / HNSW / IVF over inner product, their recall
against flat, the entry point's outputs, and config errors that name the key."""

from __future__ import annotations

import json
import subprocess
import sys

import faiss
import numpy as np
import pytest

from pipeline.retrieval import faiss_index as fi
from pipeline.core.index_params import default_nlist, resolve_params
from pipeline.retrieval import index as idx
from pipeline.retrieval.readers import load_index
from pipeline.core.common import PipelineError
from tiny_beir import make_tiny_beir, make_zero_shot_model


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


def test_bad_params_name_the_key():
    with pytest.raises(PipelineError, match=r"index_types.*'annoy'.*flat.*hnsw.*ivf"):
        resolve_params({"index_types": ["flat", "annoy"]})
    with pytest.raises(PipelineError, match="ivf.nlist"):
        resolve_params({"ivf": {"nlist": 50}}, num_docs=10)
    with pytest.raises(PipelineError, match=r"hnsw.*efsearch"):
        resolve_params({"hnsw": {"efsearch": 10}})
    with pytest.raises(PipelineError, match="batch_size"):
        resolve_params({"batch_size": 0})
    with pytest.raises(PipelineError, match=r"precision.*fp32.*fp16.*bf16"):
        resolve_params({"precision": "int8"})
    assert resolve_params({}).precision == "fp32"


def test_entry_point_on_tiny_dataset(tmp_path, tiny_model_dir):
    ds = make_tiny_beir(tmp_path / "data")
    model = make_zero_shot_model(tiny_model_dir, tmp_path / "model")
    out = tmp_path / "index"
    stats = idx.main(["--model", str(model), "--dataset", str(ds), "--out", str(out),
                      "--params-json", json.dumps({"batch_size": 8, "index_types": ["flat", "hnsw", "ivf"],
                                                   "ivf": {"nlist": 4}})])
    emb = np.load(out / "embeddings.npy")
    ids = json.loads((out / "docids.json").read_text())
    assert emb.dtype == np.float32 and emb.shape == (40, 32) and len(ids) == 40
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    written = json.loads((out / "index_stats.json").read_text())
    assert written == json.loads(json.dumps(stats))
    assert written["indexes"]["ivf"]["params"]["nlist"] == 4
    assert {p.name for p in out.iterdir()} == {"embeddings.npy", "docids.json", "index_stats.json",
                                                "flat.faiss", "hnsw.faiss", "ivf.faiss"}


def test_cli_reports_unknown_type(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.retrieval.index", "--model", "m", "--dataset", "d",
                           "--out", str(tmp_path / "o"), "--params-json", '{"index_types": ["lsh"]}'],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "error: index_types: unknown index type 'lsh'" in proc.stderr
    assert not (tmp_path / "o").exists()
