"""Training on a DPR dataset's own hard negatives: a run stopped after a checkpoint and resumed
redraws the same negatives in every epoch, so it ends where an uninterrupted run ends."""

from __future__ import annotations

import json

import pytest

from tests.training.test_train import recipe, run_train, weights

MINI = __import__("conftest").REPO / "data" / "embedded" / "dpr-mini"


@pytest.fixture(scope="module")
def dpr_mini(tmp_path_factory):
    from pipeline.sources.prepare import main as data_main

    out = tmp_path_factory.mktemp("data") / "dpr-mini"
    data_main(["--name", "dpr-mini", "--source", "dpr", "--out", str(out), "--dpr-train", str(MINI / "train.json"),
               "--dpr-qa", f"test={MINI / 'test.qa.csv'}", "--dpr-passages", str(MINI / "psgs.tsv"), "--no-progress"])
    return out


def test_resume_replays_the_per_epoch_draws(tiny_model_dir, dpr_mini, tmp_path):
    # 32 training questions, 8 per update: 4 updates per epoch, so 10 steps cover epochs 0, 1, 2.
    rec = recipe(tiny_model_dir, max_steps=10, checkpoint_every=3,
                 hard_negatives={"source": "dataset", "per_query": 1})
    negatives = str(dpr_mini / "hard_negatives" / "train.jsonl")
    full = run_train(dpr_mini, tmp_path / "full", rec, extra=["--hard-negatives", negatives])
    assert full.returncode == 0, full.stderr

    out = tmp_path / "stopped"
    stopped = run_train(dpr_mini, out, rec, env={"PIPELINE_FAIL_AT_STEP": "8"}, extra=["--hard-negatives", negatives])
    assert stopped.returncode == 2 and "step 8: non-finite loss" in stopped.stderr  # checkpoint at step 6 (epoch 1)
    resumed = run_train(dpr_mini, out, rec, extra=["--hard-negatives", negatives])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from checkpoint" in resumed.stderr
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    full_rows = [json.loads(line) for line in (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0] * 4 + [1] * 4 + [2] * 2
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in full_rows], abs=1e-6)
    a, b = weights(tmp_path / "full"), weights(out)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


def test_dataset_negatives_are_required(tiny_model_dir, dpr_mini, tmp_path):
    rec = recipe(tiny_model_dir, max_steps=1, hard_negatives={"source": "dataset", "per_query": 1})
    proc = run_train(dpr_mini, tmp_path / "x", rec)
    assert proc.returncode == 2 and "no --hard-negatives file was given" in proc.stderr
