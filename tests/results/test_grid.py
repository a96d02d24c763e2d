"""pipeline.results.grid: every job's metrics.json, per_query.json and train summary read once
into one frame (one row per job and scoring result, key columns first), and a missing output
named by its path."""

from __future__ import annotations

import json
import shutil

import pytest

from pipeline.core.common import PipelineError
from pipeline.results.grid import KEY_COLUMNS, collect, dataset_protocols


def test_the_frame_holds_each_scoring_result_of_each_job(zero_shot_grid):
    _, cfg, layout = zero_shot_grid
    grid = collect(layout.root, cfg)
    metrics = json.loads(layout.metrics("tiny", "zeroshot", 13).read_text())
    frame = grid.frame
    assert list(frame.columns[:len(KEY_COLUMNS)]) == KEY_COLUMNS
    assert list(zip(frame.scoring, frame["lambda"].fillna(-1))) == [("dot", -1), ("dn", 0.5)]
    assert frame["ndcg@10"].tolist() == [row["ndcg@10"] for row in metrics["rows"]]
    assert set(frame.method) == {"none"} and set(frame.dataset) == {"tiny"} and set(frame.seed) == {13}
    (job,) = grid.jobs
    assert job.train == json.loads(layout.train_summary("tiny", "zeroshot", "base").read_text())
    assert set(grid.per_query) == {("tiny", "zeroshot", 13)} and set(grid.per_query["tiny", "zeroshot", 13]) == \
        {"dot", "dn@0.5"}
    assert dataset_protocols(frame, cfg)["tiny"].name == "qrels"


def test_a_missing_job_output_is_named(zero_shot_grid, tmp_path):
    _, cfg, layout = zero_shot_grid
    copy = tmp_path / "results"
    shutil.copytree(layout.root, copy)
    missing = layout.metrics("tiny", "zeroshot", 13)
    (copy / missing.relative_to(layout.root)).unlink()
    with pytest.raises(PipelineError, match=f"{copy / missing.relative_to(layout.root)}: file not found"):
        collect(copy, cfg)
