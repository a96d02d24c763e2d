"""Training order: which examples make up each optimizer update.

`epoch_order` is the plain shuffle (deterministic in seed and epoch, so a resumed run replays
it). `distinct_updates` reorders an epoch so that no query id and no passage id appears twice
within one update: a query's second positive, or a passage shared by two queries, would
otherwise be scored as a negative of the other example (docs/methods.md#false-negatives). It is
deterministic too, so resuming at update k of epoch e rebuilds the same updates.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

from pipeline.core.common import PipelineError


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """A permutation of range(n) that depends only on (seed, epoch)."""
    import torch

    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


def _ids(example) -> set[str]:
    ids = {f"q:{example.query_id}"} if example.query_id is not None else set()
    ids |= {f"p:{pid}" for pid in [example.positive_id, *example.negative_ids] if pid is not None}
    return ids


def distinct_updates(examples: Sequence, order: list[int], per_update: int) -> list[list[int]]:
    """Full updates of `per_update` example indices, taken greedily in `order`; an example whose
    query or passages are already in the update being filled waits for a later one. Examples
    that fit no full update (at most a few per epoch) are left out, as an incomplete last batch
    is. Hard negatives count as passages: a hard negative of one example that is another
    example's positive in the same update would be scored against it."""
    updates, pending = [], list(order)
    while len(pending) >= per_update:
        batch, used, waiting = [], set(), []
        for index in pending:
            ids = _ids(examples[index])
            if len(batch) < per_update and not (ids & used):
                batch.append(index)
                used |= ids
            else:
                waiting.append(index)
        if len(batch) < per_update:
            break
        updates.append(batch)
        pending = waiting
    return updates


SAMPLERS = ("shuffle", "distinct")


def update_plan(epoch_examples: Callable[[int], Sequence], per_update: int, seed: int,
                sampler: str = "shuffle") -> Iterator[tuple[int, Sequence, list[int]]]:
    """(epoch, that epoch's examples, indices of one update), update after update, forever.

    `shuffle`: the epoch's permutation cut into len // per_update updates. `distinct`: the same
    permutation regrouped by `distinct_updates`, so an epoch may have a few updates fewer; the run
    still takes the same number of updates, so epoch boundaries drift by those few. Both depend
    only on (seed, epoch), so a run resumed at update k skips the first k and continues exactly."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {SAMPLERS}, got {sampler!r}")
    epoch = 0
    while True:
        examples = epoch_examples(epoch)
        order = epoch_order(len(examples), seed, epoch)
        if sampler == "distinct":
            updates = distinct_updates(examples, order, per_update)
        else:
            updates = [order[i * per_update:(i + 1) * per_update] for i in range(len(examples) // per_update)]
        if not updates:
            raise PipelineError(f"epoch {epoch}: no update of {per_update} examples with distinct queries and "
                             f"passages among {len(examples)} examples; lower batch_size x accumulation_steps")
        for indices in updates:
            yield epoch, examples, indices
        epoch += 1
