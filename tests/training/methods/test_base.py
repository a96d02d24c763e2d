"""pipeline.training.methods.base, what every training method shares: registry, update size,
stats, and FANoise only in train mode."""

import functools

import pytest
import torch

from pipeline.models.encoder import BiEncoder, EncoderSpec
from pipeline.training.fanoise import FANoise
from pipeline.training.methods import Example, available, get_method

METHODS = ["inbatch", "gradaccum", "gradcache", "contaccum"]


def examples(n, negatives=0):
    return [Example(f"question {i} about subject {i * 7}", f"passage {i} on subject {i * 7} " * (1 + i % 3),
                    [f"unrelated text {i} number {j}" for j in range(negatives)]) for i in range(n)]


@functools.lru_cache(maxsize=None)
def build(model_dir, tied=True):
    return BiEncoder.from_spec(EncoderSpec(model=str(model_dir), tied=tied, query_max_length=16,
                                           passage_max_length=24)).train()


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_registry_lists_every_method():
    assert set(METHODS) <= set(available())
    from pipeline.core.common import PipelineError

    with pytest.raises(PipelineError, match="unknown training method"):
        get_method("nope")


@pytest.mark.parametrize("name", METHODS)
def test_update_size_and_stats(tiny_model_dir, name):
    model = build(tiny_model_dir)
    method = get_method(name)(model, {"batch_size": 4, "accumulation_steps": 2, "memory_size": 8})
    assert method.examples_per_update == (4 if name == "inbatch" else 8)
    model.zero_grad(set_to_none=True)
    stats = method.accumulate(examples(method.examples_per_update, negatives=1))
    # Each method emits exactly the statistics it declares; only a method with a bank has bank_fill.
    assert {"loss", "negatives_per_query"} <= set(stats) == set(method.emits)
    assert all(isinstance(v, float) for v in stats.values())
    assert stats["loss"] > 0 and grads(model)
    expected_negatives = {"inbatch": 3 + 4, "gradaccum": 3 + 4, "gradcache": 7 + 8,
                          "contaccum": ((3 + 4) + (7 + 8)) / 2}[name]
    assert stats["negatives_per_query"] == expected_negatives
    assert stats.get("bank_fill", 0) == (8 if name == "contaccum" else 0)
    method.after_optimizer_step()


@pytest.mark.parametrize("name", METHODS)
def test_noise_changes_training_loss_only_in_train_mode(tiny_model_dir, name):
    model = build(tiny_model_dir)
    recipe = {"batch_size": 4, "accumulation_steps": 2, "memory_size": 8}
    batch = examples(8)[: 4 if name == "inbatch" else 8]

    def loss(noise):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        return get_method(name)(model, recipe, noise).accumulate(batch)["loss"]

    clean = loss(None)
    assert loss(FANoise(0.5)) != clean
    assert loss(FANoise(0.5).eval()) == clean
    assert loss(FANoise(0.0)) == clean
