"""ContAccum: equals GradAccum without a bank, follows Eq. 8/9 with one, and keeps the bank
semantics of the official code (FIFO in samples, aligned banks, micro/step update, reset)."""

import functools

import pytest
import torch

from pipeline.models.encoder import BiEncoder, EncoderSpec
from pipeline.training.methods import Example, get_method
from pipeline.training.methods.contaccum import ContAccum, FifoBank

DIM = 32


def examples(n, negatives=0, offset=0):
    return [Example(f"question {i} about subject {i * 7}", f"passage {i} on subject {i * 7} " * (1 + i % 3),
                    [f"unrelated text {i} number {j}" for j in range(negatives)]) for i in range(offset, offset + n)]


@functools.lru_cache(maxsize=None)
def build(model_dir, tied=False):
    return BiEncoder.from_spec(EncoderSpec(model=str(model_dir), tied=tied, query_max_length=16,
                                           passage_max_length=24)).train()


def recipe(**kw):
    return {"batch_size": 4, "accumulation_steps": 2, "temperature": 0.05, **kw}


class Recorder:
    """Wraps a method's loss to keep every (Q, P) it scores."""

    def __init__(self, method):
        self.calls, self.inner = [], method.loss_fn
        method.loss_fn = self

    def __call__(self, q, p, mask=None):
        self.calls.append((q.detach().clone(), p.detach().clone()))
        return self.inner(q, p, mask)


def tagged(ids, dim=DIM):
    """Rows whose first coordinate is an id, so bank contents can be read back."""
    x = torch.zeros(len(ids), dim)
    x[:, 0] = torch.tensor(ids, dtype=torch.float)
    return x


def ids(bank):
    return [] if bank.rows is None else bank.rows[:, 0].long().tolist()


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("negatives", [0, 1])
def test_memory_zero_equals_gradaccum_exactly(tiny_model_dir, negatives):
    model = build(tiny_model_dir)
    results = []
    for name in ("gradaccum", "contaccum"):
        method = get_method(name)(model, recipe(memory_size=0))
        per_update = []
        for step in range(2):
            model.zero_grad(set_to_none=True)
            stats = method.accumulate(examples(8, negatives, offset=8 * step))
            per_update.append((stats["loss"], {n: p.grad.clone() for n, p in model.named_parameters()
                                               if p.grad is not None}))
            method.after_optimizer_step()
        results.append(per_update)
    for (loss_a, grads_a), (loss_b, grads_b) in zip(*results):
        assert loss_a == loss_b
        assert grads_a.keys() == grads_b.keys()
        assert all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)


@pytest.mark.parametrize("query_bank", [True, False])
def test_embedding_gradients_match_eq8_eq9(tiny_model_dir, query_bank):
    tau, n, m = 0.1, 4, 6
    method = ContAccum(build(tiny_model_dir), recipe(memory_size=m, query_bank=query_bank, temperature=tau))
    g = torch.Generator().manual_seed(0)
    unit = lambda rows: torch.nn.functional.normalize(torch.randn(rows, DIM, generator=g), dim=-1)
    method.after_micro_batch(unit(m), unit(m), unit(0))
    q = unit(n).requires_grad_()
    p = unit(n).requires_grad_()
    loss, _ = method.batch_loss(q, p, unit(0))
    loss.backward()

    bank_q, bank_p = method.bank_q.get(q), method.bank_p.get(p)
    assert len(bank_p) == m and len(bank_q) == (m if query_bank else 0)
    assert not bank_q.requires_grad and not bank_p.requires_grad and bank_p.grad is None
    Q, P = torch.cat([q, bank_q]).detach(), torch.cat([p, bank_p]).detach()
    R = len(Q)
    S = torch.softmax(Q @ P.T / tau, dim=1)  # S(l, j)
    eq8 = -1 / (R * tau) * (P[:n] - S[:n] @ P)
    eq9 = -1 / (R * tau) * (Q[:n] - S[:, :n].T @ Q)
    torch.testing.assert_close(q.grad, eq8, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p.grad, eq9, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("query_bank", [True, False])
def test_tied_encoder_takes_the_banked_loss_through_both_sides(tiny_model_dir, query_bank):
    """With one shared encoder (the separation regime's setting), a banked update's parameter
    gradient is that of the full banked loss, reaching the weights through the query and the
    passage side at once; neither side alone gives it."""
    model = build(tiny_model_dir, tied=True)
    assert model.query_model is model.passage_model
    tau = 0.05
    method = ContAccum(model, recipe(memory_size=4, accumulation_steps=1, query_bank=query_bank))
    model.zero_grad(set_to_none=True)
    method.accumulate(examples(4))
    method.after_optimizer_step()
    bank_q, bank_p = method.bank_q.get(torch.zeros(0, DIM)), method.bank_p.get(torch.zeros(0, DIM))
    batch = examples(4, offset=4)

    def gradient(run):
        model.zero_grad(set_to_none=True)
        run()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    def banked_loss(detach_q=False, detach_p=False):
        q, p, _ = method.embed(batch)
        q, p = (q.detach() if detach_q else q), (p.detach() if detach_p else p)
        scores = torch.cat([q, bank_q]) @ torch.cat([p, bank_p]).T / tau
        torch.nn.functional.cross_entropy(scores, torch.arange(len(scores))).backward()

    got = gradient(lambda: method.accumulate(batch))
    torch.testing.assert_close(got, gradient(banked_loss), rtol=1e-4, atol=1e-6)
    for one_side in (gradient(lambda: banked_loss(detach_p=True)), gradient(lambda: banked_loss(detach_q=True))):
        assert not torch.allclose(got, one_side, rtol=1e-3, atol=1e-6)


def test_banks_hold_detached_clean_embeddings(tiny_model_dir):
    from pipeline.training.fanoise import FANoise

    model = build(tiny_model_dir)
    method = ContAccum(model, recipe(memory_size=8), noise=FANoise(0.5))
    recorder = Recorder(method)
    batch = examples(8)
    model.zero_grad(set_to_none=True)
    method.accumulate(batch)
    for bank in (method.bank_q, method.bank_p):
        assert bank.rows.shape == (8, DIM) and not bank.rows.requires_grad
        torch.testing.assert_close(bank.rows.norm(dim=1), torch.ones(8))  # clean: still unit norm
    # The current rows that were scored carried noise, so they are off the unit sphere.
    q_scored = recorder.calls[0][0][:4]
    assert (q_scored.norm(dim=1) - 1).abs().max() > 1e-3


# ----------------------------------------------------------------------------- bank semantics
def test_fifo_order_and_capacity_in_samples():
    bank = FifoBank(5)
    for start in (0, 2, 4):
        bank.push(tagged([start, start + 1]))
    assert ids(bank) == [1, 2, 3, 4, 5]  # oldest first, oldest dropped
    bank.push(tagged(list(range(10, 17))))
    assert ids(bank) == [12, 13, 14, 15, 16]  # one oversized push keeps its newest rows
    empty = FifoBank(0)
    empty.push(tagged([1]))
    assert len(empty) == 0


def test_query_and_passage_banks_stay_aligned(tiny_model_dir):
    method = ContAccum(build(tiny_model_dir), recipe(memory_size=5, hard_negatives={"per_query": 2}))
    for start in range(0, 12, 3):
        method.after_micro_batch(tagged(range(start, start + 3)), tagged(range(start, start + 3)),
                                 tagged(range(100 + 2 * start, 100 + 2 * start + 6)))
    assert ids(method.bank_q) == ids(method.bank_p) == [7, 8, 9, 10, 11]
    assert len(method.bank_h) == 10 and ids(method.bank_h)[-1] == 123
    assert method.bank_fill() == 5


def test_current_batch_scored_first_and_never_duplicated(tiny_model_dir):
    model = build(tiny_model_dir)
    method = ContAccum(model, recipe(memory_size=16))
    recorder = Recorder(method)
    model.zero_grad(set_to_none=True)
    stats = method.accumulate(examples(8))
    (q1, p1), (q2, p2) = recorder.calls
    assert (q1.shape[0], p1.shape[0]) == (4, 4)  # empty bank at the first micro-batch
    assert (q2.shape[0], p2.shape[0]) == (8, 8)  # second sees the first, once
    torch.testing.assert_close(q2[4:], q1)
    torch.testing.assert_close(p2[4:], p1)
    # No current passage reappears among the banked columns.
    assert torch.cdist(p2[:4], p2[4:]).min() > 1e-4
    assert stats["bank_fill"] == 8
    assert stats["negatives_per_query"] == (3 + 7) / 2


def test_hard_negative_layout(tiny_model_dir):
    model = build(tiny_model_dir)
    method = ContAccum(model, recipe(memory_size=16, hard_negatives={"source": "bm25", "per_query": 1}))
    recorder = Recorder(method)
    model.zero_grad(set_to_none=True)
    method.accumulate(examples(8, negatives=1))
    (_, p1), (q2, p2) = recorder.calls
    # P = [pos_cur ; pos_bank ; hn_cur ; hn_bank]
    assert p2.shape[0] == 16 and q2.shape[0] == 8
    torch.testing.assert_close(p2[4:8], p1[:4])
    torch.testing.assert_close(p2[12:], p1[4:])


@pytest.mark.parametrize("update", ["micro", "step"])
def test_bank_update_micro_vs_step(tiny_model_dir, update):
    model = build(tiny_model_dir)
    method = ContAccum(model, recipe(memory_size=64, bank_update=update))
    recorder = Recorder(method)
    for step in range(2):
        model.zero_grad(set_to_none=True)
        method.accumulate(examples(8, offset=8 * step))
        assert method.bank_fill() == (8 * (step + 1) if update == "micro" else 8 * step)
        method.after_optimizer_step()
        assert method.bank_fill() == 8 * (step + 1)
    rows = [q.shape[0] for q, _ in recorder.calls]
    # micro: later micro-batches of a step see earlier ones; step: only previous steps.
    assert rows == ([4, 8, 12, 16] if update == "micro" else [4, 4, 12, 12])


def test_reset_bank_each_step(tiny_model_dir):
    model = build(tiny_model_dir)
    method = ContAccum(model, recipe(memory_size=64, reset_bank_each_step=True))
    recorder = Recorder(method)
    for step in range(2):
        model.zero_grad(set_to_none=True)
        method.accumulate(examples(8, offset=8 * step))
        assert method.bank_fill() == 8
        method.after_optimizer_step()
        assert method.bank_fill() == 0
    assert [q.shape[0] for q, _ in recorder.calls] == [4, 8, 4, 8]


def test_passage_only_bank(tiny_model_dir):
    model = build(tiny_model_dir)
    method = ContAccum(model, recipe(memory_size=64, query_bank=False))
    recorder = Recorder(method)
    model.zero_grad(set_to_none=True)
    method.accumulate(examples(8))
    assert [(q.shape[0], p.shape[0]) for q, p in recorder.calls] == [(4, 4), (4, 8)]
    assert len(method.bank_q) == 0 and method.bank_fill() == 8


def test_state_dict_round_trip(tiny_model_dir):
    model = build(tiny_model_dir)
    method = ContAccum(model, recipe(memory_size=6, bank_update="step"))
    method.after_micro_batch(tagged([1, 2]), tagged([1, 2]), tagged([]))
    method.after_optimizer_step()
    method.after_micro_batch(tagged([3]), tagged([3]), tagged([]))  # pending until the step
    restored = ContAccum(model, recipe(memory_size=6, bank_update="step"))
    restored.load_state_dict(method.state_dict())
    assert ids(restored.bank_q) == ids(restored.bank_p) == [1, 2]
    restored.after_optimizer_step()
    assert ids(restored.bank_p) == [1, 2, 3]
