"""pipeline.training.summary: train_summary.json read off the run's train_log.jsonl rows (median
seconds per update, peak memory, last loss), the trained encoder's shape recorded only when it
differs from the model as named, and one shape for every run: a zero-shot run writes the keys of a
trained one (with the values of no training), and a summary missing any of them is refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.core.common import PipelineError
from pipeline.core.config import TRAINING_DEFAULTS
from pipeline.core.params import ZERO_SHOT
from pipeline.models.encoder import BiEncoder, EncoderSpec
from pipeline.training.summary import REQUIRED, encoder_provenance, read_summary
from pipeline.training.train import train
from tests.training.test_train import mini_dataset, recipe  # noqa: F401  (fixture and helper)
from tiny_beir import make_tiny_beir


def test_summary_is_read_off_the_log(tiny_model_dir, tmp_path):
    data = make_tiny_beir(tmp_path / "data")
    run_recipe = {**TRAINING_DEFAULTS, "method": "inbatch", "batch_size": 4, "max_steps": 3, "lr": 1e-3,
              "warmup_ratio": 0.0, "train_split": "train",
              "encoder": {"model": str(tiny_model_dir), "query_max_length": 16, "passage_max_length": 24}}
    summary = train(str(data), str(tmp_path / "run"), run_recipe, seed=1, progress=False)
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


@pytest.fixture(scope="module")
def summaries(tiny_model_dir, mini_dataset, tmp_path_factory):  # noqa: F811  (mini_dataset is a fixture)
    root = tmp_path_factory.mktemp("summaries")
    trained = recipe(tiny_model_dir, method="inbatch", accumulation_steps=1, memory_size=0, max_steps=2)
    zero_shot = recipe(tiny_model_dir, method=ZERO_SHOT)
    for name, rec in (("trained", trained), ("zero_shot", zero_shot)):
        train(str(mini_dataset), str(root / name), rec, seed=3, progress=False)
    return {name: read_summary(root / name / "train_summary.json") for name in ("trained", "zero_shot")}


def test_zero_shot_and_trained_summaries_have_the_same_keys(summaries):
    assert set(summaries["zero_shot"]) == set(summaries["trained"])
    assert set(REQUIRED) <= set(summaries["trained"])


def test_zero_shot_summary_says_nothing_was_trained(summaries):
    zero = summaries["zero_shot"]
    assert zero["method"] == ZERO_SHOT
    assert (zero["steps"], zero["examples"], zero["n_local"], zero["n_total"], zero["memory_size"]) == (0, 0, 0, 0, 0)
    assert zero["peak_mem_mb"] is None and zero["sec_per_update"] is None and zero["final_loss"] is None
    assert zero["started_at"] <= zero["finished_at"]
    trained = summaries["trained"]
    assert trained["steps"] == 2 and trained["n_total"] == 4 and trained["peak_mem_mb"] is not None


def test_a_summary_missing_keys_is_refused_by_name(tmp_path):
    path = tmp_path / "train_summary.json"
    path.write_text(json.dumps({"method": ZERO_SHOT, "steps": 0, "examples": 0, "seconds": 0.0}))
    with pytest.raises(PipelineError, match=r"train_summary.json: train summary without \['examples_per_update'"):
        read_summary(path)
