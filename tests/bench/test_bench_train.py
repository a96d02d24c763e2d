"""`make bench-train`: both sides train the same batches for the same number of updates, each in
its own process, and the table compares them."""

from __future__ import annotations

import pytest

from pipeline.bench import bench_train
from pipeline.core.common import PipelineError


def test_tiny_bench_train_runs_both_sides(capsys, tmp_path):
    result = bench_train.main(["--tiny", "--methods", "inbatch", "--updates", "2", "--repeats", "1",
                               "--batch-size", "4", "--max-length", "16", "--threads", "1",
                               "--json-out", str(tmp_path / "r.json")])
    row = result["rows"][0]
    for side in bench_train.SIDES:
        assert row[side]["updates_per_s"] > 0 and row[side]["updates_per_cpu_s"] > 0 and row[side]["peak_rss_mb"] > 0
    assert row["throughput_ratio"] == pytest.approx(row["ours"]["updates_per_s"] /
                                                    row["sentence-transformers"]["updates_per_s"])
    out = capsys.readouterr().out
    assert "| inbatch | ours (pipeline.training.train) |" in out and "MultipleNegativesRankingLoss" in out
    assert (tmp_path / "r.json").is_file()


def test_both_sides_see_the_same_batches(tmp_path):
    # Theirs is fed our update order through a sequential sampler: the flattened plan must be our
    # loop's batches, update by update.
    from pipeline.sources.datasets import load_dataset
    from pipeline.training.pairs import TrainingData
    from pipeline.training.sampler import update_plan

    data = bench_train.prepare_dataset("scifact-mini", tmp_path / "d")
    case = {"dataset": str(data), "batch_size": 16, "updates": 30, "seed": 5}
    flat = bench_train.update_examples(case)
    plan = update_plan(TrainingData(load_dataset(data), "train", seed=5).epoch, 16, 5, "shuffle")
    for u, (_, examples, indices) in zip(range(30), plan):  # 30 updates span two epochs of scifact-mini
        assert [e.query_id for e in flat[16 * u:16 * (u + 1)]] == [examples[i].query_id for i in indices]


def test_bad_arguments_are_clear_errors():
    with pytest.raises(PipelineError, match="--chunk 5 must divide --batch-size 16"):
        bench_train.main(["--chunk", "5"])
    with pytest.raises(PipelineError, match="--updates: expected at least 2"):
        bench_train.main(["--updates", "1"])
