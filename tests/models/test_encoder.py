"""pipeline.models.encoder: the bi-encoder's towers (tied or not), pooling and normalisation, the
batched inference path equal to the differentiable one in input order, a saved model that loads
back to the same embeddings, and model names resolved with errors that name the value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.common import PipelineError
from pipeline.models.encoder import BiEncoder, EncoderSpec, describe, pool, resolve_model_path

TEXTS = ["a short one", "a much longer passage about retrieval and negatives " * 3, "mid length text here", "x"]


def spec(model_dir, **keys) -> EncoderSpec:
    return EncoderSpec(model=str(model_dir), query_max_length=16, passage_max_length=32, **keys)


def test_pooling_ignores_padding_and_cls_takes_the_first_token():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0]]


def test_batched_encoding_equals_the_forward_in_input_order(tiny_model_dir):
    model = BiEncoder.from_spec(spec(tiny_model_dir, pooling="mean")).eval()
    with torch.no_grad():
        direct = model(TEXTS, "passage").numpy()
    batched = model.encode_texts(TEXTS, "passage", batch_size=3, progress=False)
    assert batched.dtype == np.float32 and batched.shape == (4, model.embedding_dim)
    np.testing.assert_allclose(batched, direct, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert model.encode_texts([], "query", progress=False).shape == (0, model.embedding_dim)
    with pytest.raises(PipelineError, match="index.precision: expected one of"):
        model.encode_texts(TEXTS, "query", precision="int8", progress=False)


def test_tied_towers_are_one_module_untied_start_equal(tiny_model_dir):
    tied = BiEncoder.from_spec(spec(tiny_model_dir))
    assert tied.passage_model is tied.query_model and "tied" in describe(tied)
    untied = BiEncoder.from_spec(spec(tiny_model_dir, tied=False))
    assert untied.passage_model is not untied.query_model
    q, p = untied.query_parameters(), untied.passage_parameters()
    assert all(torch.equal(a, b) for a, b in zip(q, p)) and q[0] is not p[0]


def test_saved_model_loads_back_to_the_same_embeddings(tiny_model_dir, tmp_path):
    model = BiEncoder.from_spec(spec(tiny_model_dir, tied=False, pooling="cls", normalize=False))
    with torch.no_grad():
        next(model.passage_model.parameters()).add_(0.01)  # the towers differ after training
    model.save(tmp_path / "model")
    again = BiEncoder.load(tmp_path / "model")
    assert again.spec == model.spec
    for side in ("query", "passage"):
        np.testing.assert_array_equal(again.encode_texts(TEXTS, side, progress=False),
                                      model.encode_texts(TEXTS, side, progress=False))
    model.save(tmp_path / "zero-shot", weights=False)  # only the spec: the named model is reloaded
    assert sorted(p.name for p in (tmp_path / "zero-shot").iterdir()) == ["bi_encoder.json"]
    with pytest.raises(PipelineError, match="not a trained model folder"):
        BiEncoder.load(tmp_path)


def test_model_names_resolve_or_name_the_value(tmp_path, monkeypatch):
    assert resolve_model_path("minilm").endswith("model")
    (tmp_path / "file").write_text("")
    (tmp_path / "empty").mkdir()
    for name, message in ((tmp_path / "file", "is a file"), (tmp_path / "empty", "has no config.json"),
                          (tmp_path / "absent", "does not exist"), ("a/b/c", "does not exist")):
        with pytest.raises(PipelineError, match=f"encoder.model: .*{message}"):
            resolve_model_path(str(name))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PipelineError, match="not in the Hugging Face cache, and HF_HUB_OFFLINE=1"):
        resolve_model_path("nobody/no-such-model")
    with pytest.raises(PipelineError, match=r"encoder.pooling: expected 'mean' or 'cls', got 'max'"):
        EncoderSpec.from_dict({"pooling": "max"})
    with pytest.raises(PipelineError, match=r"encoder: unknown key\(s\) \['size'\]"):
        EncoderSpec.from_dict({"size": 3})


def test_describe_names_the_weights_that_were_loaded():
    from pipeline.models.encoder import _weights

    shaped = EncoderSpec(model="m", random_init=True, shape={"layers": 2, "hidden": 128, "heads": 2, "intermediate": 512})
    assert _weights(shaped) == "random-init BERT (2 layers, hidden 128) with m's tokenizer"
    assert _weights(EncoderSpec(model="m", random_init=True)) == "m's architecture with random weights"
    assert _weights(EncoderSpec(model="m", layers=1)) == "m cut to its first 1 layer(s)"
    assert _weights(EncoderSpec(model="m")) == "m"
