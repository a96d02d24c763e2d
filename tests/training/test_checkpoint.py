"""Torn writes: a training process SIGKILLed between a checkpoint's write and its rename, or a
checkpoint truncated afterwards, resumes from the last good checkpoint (reported by name) and ends
with the weights of an uninterrupted run. Checkpoints carry a sha256 and the newest two are kept."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from pipeline.training import checkpoint
from tests.training.test_train import mini_dataset, recipe, run_train, weights  # noqa: F401  (fixture and helpers)

STEPS, EVERY = 12, 3


@pytest.fixture(scope="module")
def uninterrupted(tiny_dropout_model_dir, mini_dataset, tmp_path_factory):
    """The reference: the same recipe trained without interruption (dropout on, so a resume must
    restore the RNG states too)."""
    out = tmp_path_factory.mktemp("torn") / "full"
    rec = recipe(tiny_dropout_model_dir, max_steps=STEPS, checkpoint_every=EVERY)
    proc = run_train(mini_dataset, out, rec)
    assert proc.returncode == 0, proc.stderr
    return rec, out


def _assert_equal_to(out, full):
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    a, b = weights(full), weights(out)
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert not list(out.glob("*checkpoint*"))  # a finished run leaves no checkpoint, digest or temporary


def test_checkpoints_carry_a_sha256_and_the_newest_two_are_kept(uninterrupted, mini_dataset, tmp_path):
    rec, _ = uninterrupted
    out = tmp_path / "stopped"
    proc = run_train(mini_dataset, out, rec, env={"PIPELINE_FAIL_AT_STEP": "11"})
    assert proc.returncode == 2 and "last good checkpoint: " + str(out / "checkpoint-step9.pt") in proc.stderr
    assert checkpoint.checkpoints(out) == [out / "checkpoint-step9.pt", out / "checkpoint-step6.pt"]
    for path in checkpoint.checkpoints(out):
        digest, name = checkpoint.digest_file(path).read_text().split()
        assert name == path.name and digest == checkpoint.sha256_file(path)
    assert torch.load(out / "checkpoint-step9.pt", weights_only=False)["step"] == 9


def test_sigkill_between_write_and_rename_resumes_from_the_previous_checkpoint(uninterrupted, mini_dataset,
                                                                                tmp_path):
    rec, full = uninterrupted
    out = tmp_path / "killed"
    proc = run_train(mini_dataset, out, rec, env={"PIPELINE_KILL_BEFORE_RENAME": "checkpoint-step9.pt"})
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "checkpoint-step9.pt").exists() and list(out.glob(".checkpoint-step9.pt.*.tmp"))
    resumed = run_train(mini_dataset, out, rec)
    assert resumed.returncode == 0, resumed.stderr
    assert "a checkpoint write that never finished" in resumed.stderr
    assert f"resuming from checkpoint {out / 'checkpoint-step6.pt'} at step 6" in resumed.stderr
    _assert_equal_to(out, full)


def test_a_truncated_checkpoint_is_reported_and_the_previous_one_used(uninterrupted, mini_dataset, tmp_path):
    rec, full = uninterrupted
    out = tmp_path / "truncated"
    assert run_train(mini_dataset, out, rec, env={"PIPELINE_FAIL_AT_STEP": "11"}).returncode == 2
    newest = out / "checkpoint-step9.pt"
    with open(newest, "r+b") as fh:
        fh.truncate(newest.stat().st_size // 2)
    resumed = run_train(mini_dataset, out, rec)
    assert resumed.returncode == 0, resumed.stderr
    assert f"checkpoint {newest} is damaged" in resumed.stderr
    assert f"resuming from checkpoint {out / 'checkpoint-step6.pt'} at step 6" in resumed.stderr
    assert json.loads((out / "train_summary.json").read_text())["resumed_from_step"] == 6
    _assert_equal_to(out, full)
