"""pipeline.sources.datasets, false negatives: ids on examples, the mask that removes a row's other
known positives from its softmax, in the loss, in ContAccum's banks and in a resumed run."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.training.checkpoint import latest as latest_checkpoint
from pipeline.sources.datasets import false_negative_mask, known_positives, load_dataset, training_examples
from pipeline.training.losses import InfoNCE
from conftest import id_example
from tests.training.methods.test_inbatch import _leaves, _manual_loss, _method
from tiny_beir import make_tiny_beir


def test_masked_loss_equals_the_loss_without_the_duplicate_columns():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, 8, generator=g, requires_grad=True)
    p = torch.randn(6, 8, generator=g, requires_grad=True)
    # Row 0's query also has column 2 as a positive; row 3's has column 5 (a hard-negative slot).
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[0, 2] = mask[3, 5] = True
    mask[1, 1] = True  # a row's own label column is never removed
    loss = InfoNCE(0.05)(q, p, mask)
    loss.backward()
    grads = q.grad.clone(), p.grad.clone()

    q2, p2 = q.detach().clone().requires_grad_(), p.detach().clone().requires_grad_()
    scores = q2 @ p2.T / 0.05
    rows = []
    for i, drop in enumerate([{2}, set(), set(), {5}]):
        keep = [j for j in range(6) if j not in drop]
        rows.append(-torch.log_softmax(scores[i, keep], dim=0)[keep.index(i)])
    manual = torch.stack(rows).mean()
    manual.backward()
    torch.testing.assert_close(loss, manual)
    torch.testing.assert_close(grads[0], q2.grad)
    torch.testing.assert_close(grads[1], p2.grad)
    assert p2.grad[2].abs().sum() > 0  # column 2 still is a negative for the other rows


def test_examples_carry_ids_and_the_mask_finds_shared_positives(tmp_path):
    ds = load_dataset(make_tiny_beir(tmp_path / "d"))
    examples = training_examples(ds, "train")
    assert all(e.query_id in ds.queries and e.positive_id in ds.corpus for e in examples)
    positives = {"q1": {"d1", "d2"}, "q2": {"d2"}}
    mask = false_negative_mask(["q1", "q2", None], ["d1", "d2", "d3", None], positives)
    assert mask.tolist() == [[True, True, False, False], [False, True, False, False], [False] * 4]
    assert known_positives(ds, "train")[examples[0].query_id] == {examples[0].positive_id}


# ----------------------------------------------------------------------------- in the methods
def test_a_banked_positive_of_the_current_query_is_masked(tiny_model_dir):
    method = _method(tiny_model_dir, "contaccum", accumulation_steps=1, memory_size=4)
    method.positives = {"q0": {"d0", "d1"}, "q9": {"d9"}}
    old_q, old_p = _leaves((2, 8), (2, 8), seed=1)
    # An earlier update banked (q9, d9) and (q0, d1): d1 is a known positive of today's q0.
    method.after_micro_batch(old_q.detach(), old_p.detach(), old_p[:0].detach(),
                             [id_example("q9", "d9"), id_example("q0", "d1")])
    method.after_optimizer_step()
    batch = [id_example("q0", "d0"), id_example("q5", "d5")]
    q, p = _leaves((2, 8), (2, 8), seed=2)
    loss, stats = method.batch_loss(q, p, p[:0], batch)
    # Rows q0 q5 | banked q9 q0; columns d0 d5 | banked d9 d1. Current q0 drops the banked d1;
    # banked q0 (label d1) drops d0.
    manual = _manual_loss(torch.cat([q, old_q]).detach(), torch.cat([p, old_p]).detach(), {0: {3}, 3: {0}}, 0.1)
    torch.testing.assert_close(loss.detach(), manual)
    assert stats["masked_per_row"] == 2 / 4
    assert stats["bank_age_mean"] == stats["bank_age_max"] == 1


def test_bank_ids_ages_and_update_count_survive_a_checkpoint(tiny_model_dir):
    method = _method(tiny_model_dir, "contaccum", accumulation_steps=1, memory_size=3, bank_update="step")
    for update in range(3):
        rows = _leaves((2, 8), seed=update)[0].detach()
        method.after_micro_batch(rows, rows, rows[:0], [id_example(f"q{update}{i}", f"d{update}{i}") for i in range(2)])
        if update < 2:
            method.after_optimizer_step()  # the third update's rows stay pending
    state = method.state_dict()
    saved = torch.load(_roundtrip(state), weights_only=False)
    fresh = _method(tiny_model_dir, "contaccum", accumulation_steps=1, memory_size=3, bank_update="step")
    fresh.load_state_dict(saved)
    assert fresh.bank_p.ids == method.bank_p.ids == ["d01", "d10", "d11"]
    assert fresh.bank_q.ids == ["q01", "q10", "q11"] and fresh.bank_p.born == [0, 1, 1] and fresh.updates == 2
    fresh.after_optimizer_step()  # the pending third update enters with its ids
    assert fresh.bank_p.ids == ["d11", "d20", "d21"] and fresh.bank_p.ages(fresh.updates) == [2, 1, 1]


def _roundtrip(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


# ----------------------------------------------------------------------------- in the training loop
def test_resumed_run_replays_the_distinct_sampler_and_masked_banks(tiny_model_dir, tmp_path):
    """A run that stops mid-way (the non-finite guard's test hook) and resumes from its checkpoint
    takes the same updates as an uninterrupted one: same loss, same masks, same weights."""
    from tests.training.test_train import recipe, run_train, weights

    from pipeline.sources.prepare import main as prepare

    dataset = tmp_path / "data"
    prepare(["--name", "scifact-mini", "--source", "embedded", "--out", str(dataset), "--no-progress"])
    rec = recipe(tiny_model_dir, max_steps=8, checkpoint_every=3, sampler="distinct", false_negatives="mask",
                 bank_update="step", memory_size=40)
    full_run = run_train(dataset, tmp_path / "full", rec)
    assert full_run.returncode == 0, full_run.stderr
    # A bank of 40 samples is 12% of the 343 training pairs: the run says so.
    assert "memory_size 40 samples is 12% of the 343 training pairs" in full_run.stderr
    stopped = run_train(dataset, tmp_path / "resumed", rec, env={"PIPELINE_FAIL_AT_STEP": "5"})
    assert stopped.returncode != 0 and latest_checkpoint(tmp_path / "resumed") is not None
    resumed = run_train(dataset, tmp_path / "resumed", rec)
    assert resumed.returncode == 0 and "resuming from checkpoint" in resumed.stderr

    def log(name):
        return [json.loads(line) for line in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]

    columns = ("loss", "masked_per_row", "effective_negatives_per_row", "bank_age_mean", "bank_age_max", "epoch")
    full, again = log("full"), log("resumed")
    assert [r["step"] for r in again] == list(range(1, 9))
    assert any(r["masked_per_row"] > 0 for r in full)  # scifact-mini has queries with several positives
    for a, b in zip(full, again):
        assert {c: b[c] for c in columns} == pytest.approx({c: a[c] for c in columns}, abs=1e-6)
    a, b = weights(tmp_path / "full"), weights(tmp_path / "resumed")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert json.loads((tmp_path / "full" / "train_summary.json").read_text())["sampler"] == "distinct"
