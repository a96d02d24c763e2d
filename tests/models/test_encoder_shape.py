"""pipeline.models.encoder_shape: an encoder section's `layers` / `shape` checked without torch,
the config attributes they change, the truncated and randomly shaped models they build, and
gradient-checkpointing support read from transformers' sources (equal to the loaded class)."""

from __future__ import annotations

import pytest
import torch
import transformers

from pipeline.models import encoder_shape as S
from pipeline.models.encoder import BiEncoder, EncoderSpec
from tests.core.test_config import hf_folder
from tests.training.test_pairs import SHAPE, assert_same, state


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "xlm-roberta", "mpnet", "xlnet"])
def test_checkpointing_support_read_from_sources_equals_the_class_attribute(tmp_path, model_type):
    """Validation reads transformers' sources (no torch); the train job reads the loaded class's
    `supports_gradient_checkpointing`. They must agree."""
    supported, class_name = S.checkpointing_support(str(hf_folder(tmp_path / model_type, model_type)))
    assert supported is getattr(transformers, class_name).supports_gradient_checkpointing


def test_truncated_minilm_keeps_its_first_layers():
    full = BiEncoder.from_spec(EncoderSpec())
    cut = BiEncoder.from_spec(EncoderSpec(layers=2))
    assert cut.query_model.config.num_hidden_layers == 2 and len(cut.query_model.encoder.layer) == 2
    full_state, cut_state = state(full.query_model), state(cut.query_model)
    assert all(torch.equal(v, full_state[k]) for k, v in cut_state.items())
    assert not any(k.startswith("encoder.layer.2.") for k in cut_state)


def test_random_shape_is_seeded():
    spec = EncoderSpec(random_init=True, shape=SHAPE)
    torch.manual_seed(1)
    a = BiEncoder.from_spec(spec)
    torch.manual_seed(1)
    b = BiEncoder.from_spec(spec)
    torch.manual_seed(2)
    c = BiEncoder.from_spec(spec)
    assert a.query_model.config.hidden_size == 32 and a.query_model.config.intermediate_size == 64
    assert a.tokenizer.vocab_size == 30522  # the packaged MiniLM tokenizer
    assert_same(state(a), state(b))
    words = [m.query_model.embeddings.word_embeddings.weight for m in (a, c)]
    assert not torch.equal(*words)


def test_layers_and_shape_problems_name_the_key():
    assert S.encoder_problems({"layers": 2}, depth=6) == []
    assert S.encoder_problems({"model": "m", "layers": 7}, "runs.r.encoder", depth=6) == [
        "runs.r.encoder.layers: 7 is more than the 6 layers of 'm'"]
    assert S.encoder_problems({"layers": 0}, depth=6) == ["encoder.layers: expected a positive integer, got 0"]
    assert S.encoder_problems({"random_init": True, "shape": SHAPE}) == []
    problems = S.encoder_problems({"layers": 2, "shape": {"hidden": 30, "heads": 4}})
    assert problems[0].startswith("encoder.shape: builds a randomly initialised encoder; set random_init: true")
    assert problems[1] == "encoder.layers: give either layers (truncate the model) or shape.layers, not both"
    assert problems[2].startswith("encoder.shape: missing key(s) ['intermediate', 'layers']")
    assert problems[3] == "encoder.shape: hidden 30 is not a multiple of heads 4"
    # Without a depth, the packaged MiniLM's config.json gives it (6 layers).
    assert S.encoder_problems({"model": "minilm", "layers": 7}) == [
        "encoder.layers: 7 is more than the 6 layers of 'minilm'"]


def test_config_overrides_and_the_local_config_json(tmp_path):
    assert S.config_overrides({"layers": 3}) == {"num_hidden_layers": 3}
    assert S.config_overrides({"shape": SHAPE}) == {"num_hidden_layers": 2, "hidden_size": 32,
                                                    "num_attention_heads": 2, "intermediate_size": 64}
    assert S.config_overrides({}) == {}
    assert S.model_config_json("minilm")["num_hidden_layers"] == 6
    assert S.model_config_json(str(hf_folder(tmp_path / "m", "bert")))["model_type"] == "bert"
    assert S.model_config_json(str(tmp_path / "absent")) is None


def test_checkpointing_problem_names_the_model_and_its_class(tmp_path):
    mpnet = str(hf_folder(tmp_path / "mpnet", "mpnet"))
    (problem,) = S.checkpointing_problems({"model": mpnet}, "runs.r.gradient_checkpointing")
    assert problem.startswith(f"runs.r.gradient_checkpointing: the encoder {mpnet!r} (MPNetModel) does not support")
    assert S.checkpointing_problems({}, "training.gradient_checkpointing") == []  # the packaged MiniLM (BERT)
