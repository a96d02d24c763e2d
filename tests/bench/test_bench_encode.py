"""The inference encoding path (`BiEncoder.encode_texts`) against sentence-transformers and against
one-text-at-a-time encoding: same embeddings, input order restored, precision accepted on the CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

TEXTS = ["a short one", "a much longer passage about protein folding and the immune response in mice " * 3,
         "", "medium length text about vitamin D", "x", "the same text", "the same text"]


def test_bench_encode_matches_sentence_transformers(tiny_model_dir, tmp_path, capsys):
    from pipeline.bench import bench_encode

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": str(i), "title": "", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    result = bench_encode.main(["--dataset", str(tmp_path), "--model", str(tiny_model_dir), "--max-length", "16",
                                "--batch-size", "3", "--repeats", "2", "--device", "cpu",
                                "--json-out", str(tmp_path / "bench.json")])
    assert result["texts"] == len(TEXTS)
    assert result["max_abs_diff"] < 1e-5
    assert result["ratio"] > 0 and set(result["passages_per_second"]) == {"ours", "sentence-transformers"}
    assert json.loads((tmp_path / "bench.json").read_text())["max_abs_diff"] == result["max_abs_diff"]
    out = capsys.readouterr().out
    assert "ratio ours / sentence-transformers" in out and "max |embedding difference|" in out


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_encode_texts_restores_order_and_matches_single_texts(tiny_model_dir, precision):
    import torch

    from pipeline.models.encoder import BiEncoder, EncoderSpec

    model = BiEncoder.from_spec(EncoderSpec(model=str(tiny_model_dir), passage_max_length=12, tied=False))
    batched = model.encode_texts(TEXTS, "passage", batch_size=3, progress=False, precision=precision)
    assert batched.dtype == np.float32 and batched.shape == (len(TEXTS), model.embedding_dim)
    with torch.inference_mode():
        single = np.stack([model.forward([t], "passage")[0].numpy() for t in TEXTS])
    np.testing.assert_allclose(batched, single, atol=1e-5)  # bf16 is a CUDA autocast; the CPU stays fp32
    assert model.encode_texts([], "query", progress=False).shape == (0, model.embedding_dim)


def test_encode_texts_rejects_unknown_precision(tiny_model_dir):
    from pipeline.core.common import PipelineError
    from pipeline.models.encoder import BiEncoder, EncoderSpec

    model = BiEncoder.from_spec(EncoderSpec(model=str(tiny_model_dir)))
    with pytest.raises(PipelineError, match="index.precision"):
        model.encode_texts(["x"], "query", progress=False, precision="int8")
