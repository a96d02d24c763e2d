"""`gradient_checkpointing: true` recomputes encoder activations in backward without changing
the gradients, for every method, with dropout on (torch replays the RNG state on recomputation,
and GradCache's no-grad first pass runs through the checkpointed layers unchanged)."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.common import PipelineError
from pipeline.models.encoder import BiEncoder, EncoderSpec
from pipeline.training.methods import Example, available, get_method

RECIPES = {
    "inbatch": {"batch_size": 6},
    "gradaccum": {"batch_size": 3, "accumulation_steps": 2},
    "gradcache": {"batch_size": 4, "accumulation_steps": 2},
    "contaccum": {"batch_size": 3, "accumulation_steps": 2, "memory_size": 6},
    "sogclr": {"batch_size": 3, "accumulation_steps": 2},
}
DEFAULT_RECIPE = {"batch_size": 3, "accumulation_steps": 2}  # a method registered later than this file


def examples(n):
    return [Example(f"question {i} about subject {i * 7}", f"passage {i} on subject {i * 7} " * (1 + i % 3),
                    [f"unrelated text {i}"], query_id=f"q{i}", positive_id=f"d{i}", negative_ids=[f"n{i}"])
            for i in range(n)]


def gradients(model_dir, name, checkpointing, updates=2, seed=0):
    """The flattened gradient of each of `updates` updates (no optimizer step, so banks and
    SogCLR's state carry over and are used by the second update)."""
    model = BiEncoder.from_spec(EncoderSpec(model=str(model_dir), tied=False, query_max_length=16,
                                            passage_max_length=24)).train()
    method = get_method(name)(model, {**RECIPES.get(name, DEFAULT_RECIPE), "gradient_checkpointing": checkpointing})
    assert model.gradient_checkpointing() == checkpointing
    data = examples(method.examples_per_update * updates)
    torch.manual_seed(seed)
    out = []
    for u in range(updates):
        model.zero_grad(set_to_none=True)
        method.accumulate(data[u * method.examples_per_update:(u + 1) * method.examples_per_update])
        out.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]))
        method.after_optimizer_step()
    return out


@pytest.mark.parametrize("name", available())
def test_checkpointing_leaves_gradients_unchanged_with_dropout(tiny_dropout_model_dir, name):
    plain = gradients(tiny_dropout_model_dir, name, False)
    ckpt = gradients(tiny_dropout_model_dir, name, True)
    for u, (a, b) in enumerate(zip(plain, ckpt)):
        err = float(torch.linalg.vector_norm(b - a) / torch.linalg.vector_norm(a))
        assert err <= 1e-6, f"{name} update {u + 1}: relative gradient error {err:.2e}"
    # Dropout is really on: another seed draws other masks, hence other gradients.
    other = gradients(tiny_dropout_model_dir, name, False, updates=1, seed=1)[0]
    assert float(torch.linalg.vector_norm(other - plain[0])) > 0


def test_a_model_without_checkpointing_support_is_a_clear_error(tiny_model_dir):
    spec = EncoderSpec(model=str(tiny_model_dir))
    tower = torch.nn.Linear(4, 4)  # a plain module: no Hugging Face checkpointing support
    model = BiEncoder(spec, tower, tower, tokenizer=None)
    with pytest.raises(PipelineError, match="gradient_checkpointing: .*does not support"):
        get_method("inbatch")(model, {"gradient_checkpointing": True})
    get_method("inbatch")(model, {"gradient_checkpointing": False})  # off: nothing to support


def test_config_rejects_a_non_boolean(tmp_path):
    from pipeline.core.config import ConfigError, validate

    config = {"datasets": {"d": {"source": "embedded"}},
              "runs": {"r": {"method": "inbatch", "gradient_checkpointing": "often"}}}
    with pytest.raises(ConfigError, match="runs.r.gradient_checkpointing"):
        validate(config)
    config["runs"]["r"]["gradient_checkpointing"] = True
    assert validate(config)["runs"]["r"]["gradient_checkpointing"] is True
