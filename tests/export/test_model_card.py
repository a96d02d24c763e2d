"""pipeline.export.model_card: the card's YAML front matter (model-index with every metric of
metrics.json, exactly) and its body (usage, the method and its cost, the evaluation table,
provenance), read from the run's own files; a zero-shot model says it was not trained."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.params import ZERO_SHOT, resolve_recipe
from pipeline.export.export import ExportJob
from pipeline.export.model_card import metric_keys, model_card, read_front_matter

METRICS = {"split": "test", "num_queries": 3, "num_docs": 40, "rows": [
    {"scoring": "dot", "lambda": None, "index": "flat", "ndcg@10": 0.51234, "recall@100": 0.9},
    {"scoring": "dn*", "lambda": 0.25, "index": "flat", "ndcg@10": 0.5, "ndcg@10_std": 0.01, "recall@100": 0.91,
     "repeats": 5}]}
INFO = {"layout": "router", "source_model": "results/m", "max_abs_diff_vs_pipeline": 2e-7, "base_model": "org/base",
        "spec": {"normalize": True, "pooling": "mean", "query_max_length": 64, "passage_max_length": 256}}


def job(method: str = "contaccum") -> ExportJob:
    return ExportJob("scifact", "contaccum-8x4", "seed13", Path("results/m"),
                     {"steps": 12, "seconds": 30.5, "sec_per_update": 2.5, "peak_mem_mb": 1500.25, "device": "cpu",
                      "n_total": 32, "memory_size": 64},
                     resolve_recipe({"method": method}), {("scifact", 13): METRICS},
                     {"scifact": {"source": "beir", "zip_sha256": "ab", "output_sha256": {"corpus.jsonl": "cd"}}},
                     recipe_sha256="ef", code_commit="0123abc")


def test_front_matter_carries_every_metric_exactly():
    meta = read_front_matter(model_card(job(), INFO))
    assert meta["base_model"] == "org/base" and "method-contaccum" in meta["tags"]
    assert meta["datasets"] == ["scifact"] and meta["metrics"] == ["ndcg_at_10", "recall_at_100"]
    (result,) = meta["model-index"][0]["results"]
    assert meta["model-index"][0]["name"] == "contaccum-8x4-seed13"
    assert result["dataset"] == {"name": "scifact", "type": "scifact", "split": "test", "config": "seed13"}
    assert [(m["name"], m["value"]) for m in result["metrics"]] == [
        ("ndcg@10 (dot)", 0.51234), ("recall@100 (dot)", 0.9), ("ndcg@10 (dn*@0.25)", 0.5),
        ("recall@100 (dn*@0.25)", 0.91)]
    assert metric_keys(METRICS["rows"]) == ["ndcg@10", "recall@100"]  # no spreads, no repeat counts
    with pytest.raises(ValueError, match="no YAML front matter"):
        read_front_matter("# title")


def test_body_reads_the_runs_files():
    card = model_card(job(), INFO)
    assert "Method: **contaccum** (run `contaccum-8x4`, seed 13, trained on `scifact`)." in card
    assert "| 12 | 30.5 | 2.5 | 1500.2 | cpu |" in card and "N_total (examples per update): 32; bank size: 64" in card
    assert "| dn*@0.25 | flat | 0.5 | 0.91 |" in card and "(3 queries, 40 documents)" in card
    assert "a Router with a `query` route and a `document` route" in card and "→ Normalize" in card
    assert "- code commit: `0123abc`" in card and "  - input `zip` sha256 `ab`" in card
    zero_shot = model_card(job(ZERO_SHOT), {**INFO, "layout": "transformer"})
    assert "Not trained: the zero-shot base model" in zero_shot and "one Transformer (tied towers)" in zero_shot
