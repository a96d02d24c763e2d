"""pipeline.training.methods.inbatch: DPR's in-batch loss over [positives ; hard negatives], its
layout of texts and ids, and the false-negative mask that drops a row's other known positives."""

from __future__ import annotations

import pytest
import torch

from conftest import id_example
from pipeline.training.losses import InfoNCE
from pipeline.training.methods import get_method
from pipeline.training.methods.inbatch import chunks, ids_of, texts_of
from tests.training.methods.test_base import build, examples, grads


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
    batch = [id_example("q0", "d0", ["d5"]), id_example("q0", "d1", ["d6"]), id_example("q2", "d0", ["d7"]),
             id_example("q3", "d3", ["d1"])]
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


def test_texts_and_ids_lay_out_positives_then_hard_negatives():
    batch = [id_example("q0", "d0", ["d5", "d6"]), id_example("q1", "d1", ["d7"])]
    assert texts_of(batch) == (["q q0", "q q1"], ["p d0", "p d1", "p d5", "p d6", "p d7"])
    assert ids_of(batch) == (["q0", "q1"], ["d0", "d1"], ["d5", "d6", "d7"])
    assert ids_of(None, (2, 2, 1)) == ([None, None], [None, None], [None])
    assert chunks(list(range(5)), 2) == [[0, 1], [2, 3], [4]]


def test_the_update_is_infonce_over_the_batch(tiny_model_dir):
    model = build(tiny_model_dir)
    batch = examples(4, negatives=1)
    model.zero_grad(set_to_none=True)
    stats = get_method("inbatch")(model, {"batch_size": 4}).accumulate(batch)
    got = grads(model)
    model.zero_grad(set_to_none=True)
    q = model([ex.query for ex in batch], "query")
    p = model([ex.positive for ex in batch] + [n for ex in batch for n in ex.negatives], "passage")
    loss = InfoNCE(0.05)(q, p)
    loss.backward()
    assert stats["loss"] == pytest.approx(float(loss.detach()), rel=1e-6) and stats["negatives_per_query"] == 7
    for name, grad in grads(model).items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-7)
