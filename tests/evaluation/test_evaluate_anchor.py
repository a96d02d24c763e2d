"""Correctness anchor (docs/methods.md#anchors): zero-shot all-MiniLM-L6-v2 (mean pooling, normalised, max
length 256 on both sides as in MTEB) on the full BEIR SciFact test split reproduces the
published MTEB NDCG@10 of 64.51 through the real index and evaluate steps. Takes several
minutes on 2 CPU cores (encoding 5,183 abstracts)."""

from __future__ import annotations

import json

import pytest

from pipeline.evaluation import evaluate as ev
from pipeline.retrieval import index as idx
from pipeline.models.encoder import BiEncoder, EncoderSpec

pytestmark = [pytest.mark.slow, pytest.mark.shared]


def test_minilm_scifact_anchor(shared_data, tmp_path):
    model = tmp_path / "model"
    BiEncoder.from_spec(EncoderSpec(query_max_length=256, passage_max_length=256)).save(model, weights=False)
    data = shared_data / "scifact"
    idx.main(["--model", str(model), "--dataset", str(data), "--out", str(tmp_path / "index"),
              "--params-json", json.dumps({"index_types": ["flat", "hnsw", "ivf"]})])
    result = ev.main(["--model", str(model), "--dataset", str(data), "--index", str(tmp_path / "index"),
                      "--out", str(tmp_path / "eval"),
                      "--params-json", json.dumps({"scorings": ["dot", "dn", "dn*"], "lambdas": [0.25, 0.5]})])
    rows = {(r["scoring"], r["lambda"]): r for r in result["rows"]}
    assert result["num_queries"] == 300
    assert rows[("dot", None)]["ndcg@10"] == pytest.approx(0.6451, abs=1e-3)
    assert result["index_recall"]["hnsw"]["recall@100_vs_flat"] >= 0.99
