"""pipeline.training.methods.gradaccum: K micro-batches per update, the loss and gradients of
the mean of their InfoNCE losses; one micro-batch is exactly in-batch training."""

from __future__ import annotations

import pytest
import torch

from pipeline.training.losses import InfoNCE
from pipeline.training.methods import get_method
from tests.training.methods.test_base import build, examples, grads


def test_gradaccum_is_mean_of_micro_batch_losses(tiny_model_dir):
    model = build(tiny_model_dir)
    batch = examples(8, negatives=1)
    model.zero_grad(set_to_none=True)
    stats = get_method("gradaccum")(model, {"batch_size": 4, "accumulation_steps": 2}).accumulate(batch)
    got = grads(model)

    model.zero_grad(set_to_none=True)
    loss_fn, total = InfoNCE(0.05), 0.0
    for part in (batch[:4], batch[4:]):
        q = model([ex.query for ex in part], "query")
        p = model([ex.positive for ex in part] + [n for ex in part for n in ex.negatives], "passage")
        loss = loss_fn(q, p) / 2
        loss.backward()
        total += float(loss.detach())
    assert stats["loss"] == pytest.approx(total, rel=1e-6)
    ref = grads(model)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-7)


def test_gradaccum_with_one_step_is_inbatch(tiny_model_dir):
    model = build(tiny_model_dir)
    batch = examples(6)
    out = []
    for name, recipe in (("inbatch", {"batch_size": 6}), ("gradaccum", {"batch_size": 6, "accumulation_steps": 1})):
        model.zero_grad(set_to_none=True)
        stats = get_method(name)(model, recipe).accumulate(batch)
        out.append((stats["loss"], grads(model)))
    assert out[0][0] == out[1][0]
    assert all(torch.equal(out[0][1][n], out[1][1][n]) for n in out[0][1])
