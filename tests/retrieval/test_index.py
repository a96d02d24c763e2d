"""The index step (pipeline.retrieval.index) with real FAISS: the entry point's outputs on a tiny
dataset, and a bad index type reported on the command line before any work."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from pipeline.retrieval import index as idx
from tiny_beir import make_tiny_beir, make_zero_shot_model


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
