"""train_summary.json has one shape: a zero-shot run writes the keys of a trained one (with the
values of no training), and a summary missing any of them is refused by name."""

from __future__ import annotations

import json

import pytest

from pipeline.core.common import PipelineError
from pipeline.core.params import ZERO_SHOT
from pipeline.training.summary import REQUIRED, read_summary
from pipeline.training.train import train
from tests.training.test_train import mini_dataset, recipe  # noqa: F401  (fixture and helper)


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
