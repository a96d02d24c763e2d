"""The shared training loop: logging, resume after SIGKILL, determinism and the non-finite guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pipeline.training.checkpoint import latest as latest_checkpoint
from pipeline.core.common import PipelineError
from pipeline.core.config import TRAINING_DEFAULTS


@pytest.fixture(scope="module")
def mini_dataset(tmp_path_factory):
    from pipeline.sources.prepare import main as data_main

    out = tmp_path_factory.mktemp("data") / "scifact-mini"
    data_main(["--name", "scifact-mini", "--source", "embedded", "--out", str(out), "--no-progress"])
    return out


def recipe(model_dir, **overrides):
    return {**TRAINING_DEFAULTS, "method": "contaccum", "batch_size": 4, "accumulation_steps": 2,
            "memory_size": 8, "max_steps": 6, "lr": 1e-3, "warmup_ratio": 0.0, "train_split": "train",
            "encoder": {"model": str(model_dir), "tied": False, "query_max_length": 16, "passage_max_length": 32},
            **overrides}


def run_train(dataset, out, rec, seed=3, env=None, wait=True, extra=()):
    cmd = [sys.executable, "-m", "pipeline.training.train", "--dataset", str(dataset), "--out", str(out),
           "--recipe-json", json.dumps(rec), "--seed", str(seed), "--no-progress", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def weights(out):
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted((out / "model").rglob("*.safetensors")):
        tensors.update({f"{path.parent.name}/{k}": v for k, v in load_file(path).items()})
    return tensors


def test_log_has_one_row_per_step(tiny_model_dir, mini_dataset, tmp_path):
    proc = run_train(mini_dataset, tmp_path / "run", recipe(tiny_model_dir))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all(r["grad_norm_query"] > 0 and r["grad_norm_passage"] > 0 for r in rows)
    assert rows[-1]["bank_fill"] == 8
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 6 and summary["examples_per_update"] == 8


def test_same_seed_gives_identical_weights_and_metrics(tiny_model_dir, mini_dataset, tmp_path):
    from pipeline.evaluation.evaluate import main as evaluate
    from pipeline.retrieval.index import main as index

    params = json.dumps({"dn_star": {"samples": 20, "repeats": 2, "seed": 5}, "lambdas": [0.25]})
    for name in ("a", "b"):
        out = tmp_path / name
        assert run_train(mini_dataset, out, recipe(tiny_model_dir)).returncode == 0
        index(["--model", str(out / "model"), "--dataset", str(mini_dataset), "--out", str(out / "index")])
        evaluate(["--model", str(out / "model"), "--dataset", str(mini_dataset), "--index", str(out / "index"),
                  "--out", str(out / "eval"), "--params-json", params])
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "eval" / "metrics.json").read_bytes() == (tmp_path / "b" / "eval" / "metrics.json").read_bytes()
    assert (tmp_path / "a" / "eval" / "per_query.json").read_bytes() == \
        (tmp_path / "b" / "eval" / "per_query.json").read_bytes()


def kill_at_first_checkpoint(dataset, out, rec) -> None:
    """Start a training run and SIGKILL it as soon as its first checkpoint is on disk."""
    proc = run_train(dataset, out, rec, wait=False)
    deadline = time.time() + 300
    while latest_checkpoint(out) is None:
        assert proc.poll() is None, "training finished before it could be killed:\n" + proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_resume_after_sigkill_matches_uninterrupted(tiny_model_dir, mini_dataset, tmp_path):
    rec = recipe(tiny_model_dir, max_steps=60, checkpoint_every=5)
    assert run_train(mini_dataset, tmp_path / "full", rec).returncode == 0

    out = tmp_path / "killed"
    kill_at_first_checkpoint(mini_dataset, out, rec)
    assert not (out / "train_summary.json").exists()

    resumed = run_train(mini_dataset, out, rec)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from checkpoint" in resumed.stderr
    assert json.loads((out / "train_summary.json").read_text())["resumed_from_step"] >= 5
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 61))
    full_rows = [json.loads(line) for line in (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in full_rows], abs=1e-6)
    a, b = weights(tmp_path / "full"), weights(out)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


def test_non_finite_loss_stops_with_the_step_and_keeps_checkpoint(tiny_model_dir, mini_dataset, tmp_path):
    out = tmp_path / "nan"
    proc = run_train(mini_dataset, out, recipe(tiny_model_dir, max_steps=8, checkpoint_every=2),
                     env={"PIPELINE_FAIL_AT_STEP": "5"})
    assert proc.returncode == 2
    assert "step 5: non-finite loss" in proc.stderr
    state = torch.load(latest_checkpoint(out), weights_only=False)
    assert state["step"] == 4
    assert not (out / "train_summary.json").exists()


def test_too_few_pairs_is_a_clear_error(tiny_model_dir, mini_dataset, tmp_path):
    from pipeline.training.train import train

    with pytest.raises(PipelineError, match="fewer than one update"):
        train(str(mini_dataset), str(tmp_path / "x"), recipe(tiny_model_dir, batch_size=512), seed=1, progress=False)
