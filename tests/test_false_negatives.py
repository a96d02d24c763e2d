"""False negatives: ids on examples, the mask that removes a row's other known positives from its
softmax, and the sampler that keeps a query and a passage at most once per update."""

from __future__ import annotations

import torch

from pipeline.datasets import Example, false_negative_mask, known_positives, load_dataset, training_examples
from pipeline.losses import InfoNCE
from pipeline.sampler import distinct_updates, epoch_order
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
