"""False negatives: ids on examples, the mask that removes a row's other known positives from its
softmax, and the sampler that keeps a query and a passage at most once per update."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from pipeline.training.checkpoint import latest as latest_checkpoint
from pipeline.sources.datasets import Example, false_negative_mask, known_positives, load_dataset, training_examples
from pipeline.training.losses import InfoNCE
from pipeline.training.sampler import distinct_updates, epoch_order
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


def _example(qid, pid, negs=()):
    return Example(f"q {qid}", f"p {pid}", [f"p {n}" for n in negs], query_id=qid, positive_id=pid,
                   negative_ids=list(negs))


def test_sampler_never_repeats_a_query_or_passage_within_an_update_and_replays():
    # 40 examples: queries with two positives, passages shared by two queries, hard negatives
    # that are other examples' positives.
    examples = []
    for i in range(20):
        examples.append(_example(f"q{i}", f"d{i}", negs=[f"d{(i + 1) % 20}"]))
        examples.append(_example(f"q{i}" if i % 2 else f"q{i + 100}", f"d{i + 50}" if i % 3 else f"d{i}"))
    order = epoch_order(len(examples), seed=3, epoch=1)
    updates = distinct_updates(examples, order, per_update=4)
    assert len(updates) >= 6
    for update in updates:
        queries = [examples[i].query_id for i in update]
        passages = [pid for i in update for pid in (examples[i].positive_id, *examples[i].negative_ids)]
        assert len(set(queries)) == len(queries) and len(set(passages)) == len(passages)
    seen = [i for update in updates for i in update]
    assert len(seen) == len(set(seen))
    # Deterministic in (seed, epoch): a resumed run rebuilds the same updates.
    assert distinct_updates(examples, epoch_order(len(examples), 3, 1), 4) == updates
    assert distinct_updates(examples, epoch_order(len(examples), 3, 2), 4) != updates


# ----------------------------------------------------------------------------- in the methods
def _method(tiny_model_dir, name="inbatch", **recipe):
    from pipeline.models.encoder import BiEncoder, EncoderSpec
    from pipeline.training.methods import get_method

    model = BiEncoder.from_spec(EncoderSpec(model=str(tiny_model_dir), tied=False, query_max_length=16,
                                            passage_max_length=24)).train()
    return get_method(name)(model, {"batch_size": 4, "temperature": 0.1, **recipe})


def _manual_loss(q, passages, drop, tau):
    """Mean over rows of -log softmax over the columns that row keeps, label = column i."""
    scores = q @ passages.T / tau
    rows = []
    for i in range(q.shape[0]):
        keep = [j for j in range(passages.shape[0]) if j == i or j not in drop.get(i, set())]
        rows.append(-torch.log_softmax(scores[i, keep], dim=0)[keep.index(i)])
    return torch.stack(rows).mean()


def _leaves(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.functional.normalize(torch.randn(*s, generator=g), dim=-1).requires_grad_() for s in shapes]


def test_inbatch_mask_equals_the_loss_without_the_false_negative_columns(tiny_model_dir):
    # q0 has two examples (d0, d1); q2's positive is d0 too; example 3's hard negative is d1.
    batch = [_example("q0", "d0", ["d5"]), _example("q0", "d1", ["d6"]), _example("q2", "d0", ["d7"]),
             _example("q3", "d3", ["d1"])]
    method = _method(tiny_model_dir)
    method.positives = {"q0": {"d0", "d1"}, "q2": {"d0"}, "q3": {"d3"}}
    q, p, h = _leaves((4, 8), (4, 8), (4, 8))
    loss, stats = method.batch_loss(q, p, h, batch)
    loss.backward()
    # Columns: d0 d1 d0 d3 | d5 d6 d7 d1. Row 0 drops 1, 2, 7; row 1 drops 0, 2, 7; row 2 drops 0.
    drop = {0: {1, 2, 7}, 1: {0, 2, 7}, 2: {0}}
    q2, p2, h2 = (t.detach().clone().requires_grad_() for t in (q, p, h))
    manual = _manual_loss(q2, torch.cat([p2, h2]), drop, 0.1)
    manual.backward()
    torch.testing.assert_close(loss, manual)
    for got, want in ((q, q2), (p, p2), (h, h2)):
        torch.testing.assert_close(got.grad, want.grad)
    assert stats["masked_per_row"] == stats["false_negatives_per_row"] == 7 / 4
    assert stats["effective_negatives_per_row"] == 7 - 7 / 4

    keep = _method(tiny_model_dir, false_negatives="keep")
    keep.positives = method.positives
    kept, kept_stats = keep.batch_loss(q2.detach(), p2.detach(), h2.detach(), batch)
    torch.testing.assert_close(kept, _manual_loss(q2.detach(), torch.cat([p2, h2]).detach(), {}, 0.1))
    assert kept_stats["false_negatives_per_row"] == 7 / 4 and kept_stats["masked_per_row"] == 0


def test_a_banked_positive_of_the_current_query_is_masked(tiny_model_dir):
    method = _method(tiny_model_dir, "contaccum", accumulation_steps=1, memory_size=4)
    method.positives = {"q0": {"d0", "d1"}, "q9": {"d9"}}
    old_q, old_p = _leaves((2, 8), (2, 8), seed=1)
    # An earlier update banked (q9, d9) and (q0, d1): d1 is a known positive of today's q0.
    method.after_micro_batch(old_q.detach(), old_p.detach(), old_p[:0].detach(),
                             [_example("q9", "d9"), _example("q0", "d1")])
    method.after_optimizer_step()
    batch = [_example("q0", "d0"), _example("q5", "d5")]
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
        method.after_micro_batch(rows, rows, rows[:0], [_example(f"q{update}{i}", f"d{update}{i}") for i in range(2)])
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


def test_diagnostics_reduce_each_log_then_average_seeds(tmp_path):
    from pipeline.results.diagnostics import diagnostics_table, run_diagnostics

    rows = [{"step": s, "grad_norm_ratio": float(s), "masked_per_row": 0.5, "false_negatives_per_row": 0.5,
             "effective_negatives_per_row": 10.0, "bank_age_mean": s / 2, "bank_age_max": float(s)}
            for s in range(1, 21)]
    one = run_diagnostics(rows)
    assert one["updates"] == 20 and one["bank age max"] == 20 and one["bank age mean"] == pytest.approx(5.25)
    assert one["grad-norm ratio, first 10%"] == 1.5 and one["grad-norm ratio, last 10%"] == 19.5
    for seed, scale in ((1, 1.0), (2, 3.0)):
        path = tmp_path / f"seed{seed}.jsonl"
        path.write_text("".join(json.dumps({**r, "masked_per_row": scale}) + "\n" for r in rows))
    old = tmp_path / "old.jsonl"  # a log from before the diagnostics: its columns are NaN, not errors
    old.write_text(json.dumps({"step": 1, "grad_norm_ratio": 2.0}) + "\n")
    table = diagnostics_table([("d", "a", tmp_path / "seed1.jsonl"), ("d", "a", tmp_path / "seed2.jsonl"),
                               ("d", "b", old)]).set_index("run")
    assert table.loc["a", "seeds"] == 2 and table.loc["a", "masked / row"] == 2.0
    assert table.loc["b", "grad-norm ratio, last 10%"] == 2.0 and pd.isna(table.loc["b", "bank age mean"])
