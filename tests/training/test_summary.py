"""pipeline.training.summary: train_summary.json read off the run's train_log.jsonl rows (median
seconds per update, peak memory, last loss), and the trained encoder's shape recorded only when it
differs from the model as named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.core.config import TRAINING_DEFAULTS
from pipeline.models.encoder import BiEncoder, EncoderSpec
from pipeline.training.summary import encoder_provenance
from pipeline.training.train import train
from tiny_beir import make_tiny_beir


def test_summary_is_read_off_the_log(tiny_model_dir, tmp_path):
    data = make_tiny_beir(tmp_path / "data")
    recipe = {**TRAINING_DEFAULTS, "method": "inbatch", "batch_size": 4, "max_steps": 3, "lr": 1e-3,
              "warmup_ratio": 0.0, "train_split": "train",
              "encoder": {"model": str(tiny_model_dir), "query_max_length": 16, "passage_max_length": 24}}
    summary = train(str(data), str(tmp_path / "run"), recipe, seed=1, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["method"] == "inbatch" and summary["steps"] == len(rows) == 3
    assert summary["examples_per_update"] == 4 and summary["resumed_from_step"] == 0
    assert summary["sec_per_update"] == pytest.approx(float(np.median([r["seconds"] for r in rows])))
    assert summary["peak_mem_mb"] == max(r["peak_mem_mb"] for r in rows)
    assert summary["final_loss"] == rows[-1]["loss"] and summary["device"] == "cpu"
    assert summary["finished_at"] >= summary["started_at"]
    assert "encoder" not in summary and "processes" not in summary and "bank_share" not in summary


def test_a_shaped_encoder_records_what_was_trained(tiny_model_dir):
    assert encoder_provenance(BiEncoder.from_spec(EncoderSpec(model=str(tiny_model_dir)))) == {}
    shaped = BiEncoder.from_spec(EncoderSpec(model=str(tiny_model_dir), layers=1))
    record = encoder_provenance(shaped)["encoder"]
    assert record["layers"] == record["num_hidden_layers"] == 1 and record["hidden_size"] == 32
    assert record["model"] == str(tiny_model_dir) and record["random_init"] is False
    assert record["parameters"] == sum(p.numel() for p in shaped.parameters())
