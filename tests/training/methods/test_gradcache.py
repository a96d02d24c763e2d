"""GradCache gives full-batch in-batch gradients, and replays dropout exactly."""

import functools

import pytest
import torch

from pipeline.models.encoder import BiEncoder, EncoderSpec
from pipeline.training.fanoise import FANoise
from pipeline.training.methods import Example, get_method


def examples(n, negatives=0):
    return [Example(f"question {i} about subject {i * 7} and more", f"passage {i} on subject {i * 7} " * (1 + i % 3),
                    [f"unrelated text {i} number {j}" for j in range(negatives)]) for i in range(n)]


@functools.lru_cache(maxsize=None)
def build(model_dir, tied):
    """One model per (folder, tying) for the module; tests only read it and reset its grads."""
    model = BiEncoder.from_spec(EncoderSpec(model=str(model_dir), tied=tied, query_max_length=16,
                                            passage_max_length=24))
    return model.train()


def run(model, name, recipe, batch, noise=None, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    method = get_method(name)(model, recipe, noise)
    stats = method.accumulate(batch)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return method, stats, grads


def assert_same_grads(a, b):
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("chunk,negatives", [(3, 0), (16, 0), (3, 1)])
def test_gradients_equal_full_batch(tiny_model_dir, tied, chunk, negatives):
    model = build(tiny_model_dir, tied)
    batch = examples(8, negatives)
    _, ref_stats, ref = run(model, "inbatch", {"batch_size": 8}, batch)
    k = 1 if chunk >= 8 else 3  # 3 chunks of 3, 3, 2 for a batch of 8
    _, stats, got = run(model, "gradcache", {"batch_size": chunk, "accumulation_steps": k}, batch)
    torch.testing.assert_close(stats["loss"], ref_stats["loss"], rtol=1e-4, atol=1e-5)
    assert stats["negatives_per_query"] == ref_stats["negatives_per_query"] == 7 + 8 * negatives
    assert_same_grads(ref, got)


def test_noise_is_drawn_once_on_the_full_batch(tiny_model_dir):
    # Without dropout neither method touches the RNG before the noise, so the same seed gives
    # the same draw only if GradCache noises the whole cached batch like in-batch training does.
    model = build(tiny_model_dir, False)
    batch = examples(8)
    _, ref_stats, ref = run(model, "inbatch", {"batch_size": 8}, batch, FANoise(0.3))
    _, stats, got = run(model, "gradcache", {"batch_size": 3, "accumulation_steps": 3}, batch, FANoise(0.3))
    _, clean_stats, _ = run(model, "gradcache", {"batch_size": 3, "accumulation_steps": 3}, batch)
    assert stats["loss"] != clean_stats["loss"]
    torch.testing.assert_close(stats["loss"], ref_stats["loss"], rtol=1e-4, atol=1e-5)
    assert_same_grads(ref, got)


@pytest.mark.parametrize("tied", [True, False])
def test_dropout_replay_is_bit_identical(tiny_dropout_model_dir, tied):
    model = build(tiny_dropout_model_dir, tied)
    inputs = model.tokenize(["the same text twice"] * 2, "query")
    with torch.no_grad():
        assert not torch.equal(model.embed(inputs, "query"), model.embed(inputs, "query")), "dropout is off"
    method = get_method("gradcache")(model, {"batch_size": 3, "accumulation_steps": 3})
    method.debug_replay = True
    state_before = torch.get_rng_state()
    stats = method.accumulate(examples(8, negatives=1))
    assert len(method.last_replay) == 6  # 3 chunks x (queries, passages)
    for first, second in method.last_replay:
        assert torch.equal(first, second)
    assert stats["replay_max_abs_diff"] == 0.0
    # The replay must not rewind the global stream: the next update gets fresh dropout masks.
    assert not torch.equal(torch.get_rng_state(), state_before)
