"""pipeline.training.sampler: the epoch's shuffle depends only on (seed, epoch); the distinct
sampler keeps a query and a passage at most once per update; the update plan runs across epochs
and names an epoch too small for one update."""

from __future__ import annotations

import pytest

from conftest import id_example
from pipeline.core.common import PipelineError
from pipeline.training.sampler import distinct_updates, epoch_order, update_plan


def test_sampler_never_repeats_a_query_or_passage_within_an_update_and_replays():
    # 40 examples: queries with two positives, passages shared by two queries, hard negatives
    # that are other examples' positives.
    examples = []
    for i in range(20):
        examples.append(id_example(f"q{i}", f"d{i}", negs=[f"d{(i + 1) % 20}"]))
        examples.append(id_example(f"q{i}" if i % 2 else f"q{i + 100}", f"d{i + 50}" if i % 3 else f"d{i}"))
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


def test_shuffle_plan_cuts_each_epoch_into_full_updates():
    sizes = {0: 10, 1: 7}
    plan = update_plan(lambda epoch: list(range(sizes.get(epoch, 3))), 3, seed=2)
    taken = [next(plan) for _ in range(6)]
    assert [epoch for epoch, _, _ in taken] == [0, 0, 0, 1, 1, 2]  # 10 // 3, 7 // 3, 3 // 3 updates
    first = [i for _, _, update in taken[:3] for i in update]
    assert first == epoch_order(10, 2, 0)[:9] and sorted(epoch_order(10, 2, 0)) == list(range(10))
    assert epoch_order(10, 2, 0) != epoch_order(10, 2, 1) and epoch_order(10, 2, 0) == epoch_order(10, 2, 0)


def test_an_epoch_without_one_distinct_update_is_named():
    same_query = [id_example("q0", f"d{i}") for i in range(6)]
    with pytest.raises(PipelineError, match="epoch 0: no update of 2 examples with distinct queries and passages"):
        next(update_plan(lambda epoch: same_query, 2, seed=0, sampler="distinct"))
    with pytest.raises(ValueError, match="sampler: expected one of"):
        next(update_plan(lambda epoch: same_query, 2, seed=0, sampler="random"))
