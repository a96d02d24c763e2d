"""pipeline.export.mteb_eval: MTEB, run on an export over the embedded scifact-mini folder (no download),
computes the same NDCG@10 as the pipeline's own encoding, search and qrels metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core.common import PipelineError
from pipeline.sources.datasets import load_dataset
from pipeline.models.encoder import BiEncoder, EncoderSpec
from pipeline.export.export import ExportJob, export

MINI = Path(__file__).resolve().parents[2] / "data" / "embedded" / "scifact-mini"


def pipeline_metrics(model: BiEncoder, dataset_dir: Path) -> dict:
    """The evaluate step's numbers (dot product, exact search, the qrels protocol), computed in-process."""
    from pipeline.evaluation import distribution_normalization as dn
    from pipeline.evaluation.protocols import get_protocol

    ds = load_dataset(dataset_dir)
    protocol = get_protocol("qrels")(ds, "test")
    qids = protocol.query_ids()
    docs = model.encode_texts(ds.passages(), "passage", progress=False)
    queries = model.encode_texts([ds.queries[q] for q in qids], "query", progress=False)
    scores, rows = dn.exact_search(queries, docs, 100)
    return protocol.evaluate(dn.to_results(qids, ds.doc_ids(), scores, rows))[0]


def test_mteb_ndcg_equals_the_pipelines(tmp_path, tiny_model_dir):
    from pipeline.core.layout import mteb_ndcg_at_10 as ndcg_at_10
    from pipeline.export.mteb_eval import RUN_INFO, evaluate

    # Mean pooling: a random BERT's [CLS] vector is nearly constant (every score within ~1e-6), so
    # its rankings are float noise that any two implementations order differently.
    spec = EncoderSpec(model=str(tiny_model_dir), tied=False, pooling="mean", normalize=True,
                       query_max_length=32, passage_max_length=64)
    model = BiEncoder.from_spec(spec)
    model.save(tmp_path / "model")
    out = export(ExportJob(dataset="scifact-mini", run="r", tag="seed1", model_dir=tmp_path / "model",
                           train_summary={}, recipe={"method": "inbatch", "encoder": spec.__dict__}),
                 tmp_path / "export")
    scores = evaluate(out, MINI, "test", tmp_path / "mteb", batch_size=16)
    ours = pipeline_metrics(model, MINI)
    assert ours["ndcg@10"] > 0  # a real ranking, not an empty one
    assert abs(scores["ndcg_at_10"] - ours["ndcg@10"]) <= 1e-4
    assert abs(scores["recall_at_100"] - ours["recall@100"]) <= 1e-4
    assert ndcg_at_10(tmp_path / "mteb") == pytest.approx(scores["ndcg_at_10"], abs=1e-6)
    info = json.loads((tmp_path / "mteb" / RUN_INFO).read_text())
    assert info["split"] == "test" and info["mteb_version"]

    # The same scores when the documents' embeddings come from the pipeline's index of the model.
    from pipeline.retrieval.index import run as build_index

    build_index(str(tmp_path / "model"), str(MINI), str(tmp_path / "index"), {"index_types": ["flat"]})
    reused = evaluate(out, MINI, "test", tmp_path / "mteb-index", batch_size=16, corpus_index=tmp_path / "index")
    assert abs(reused["ndcg_at_10"] - scores["ndcg_at_10"]) <= 1e-5
    assert json.loads((tmp_path / "mteb-index" / RUN_INFO).read_text())["corpus_sample_max_abs_diff"] <= 1e-5
    # An index of another model is refused.
    other = BiEncoder.from_spec(EncoderSpec(**{**spec.__dict__, "pooling": "cls"}))
    other.save(tmp_path / "other")
    build_index(str(tmp_path / "other"), str(MINI), str(tmp_path / "other-index"), {"index_types": ["flat"]})
    with pytest.raises(PipelineError, match="does not reproduce these embeddings"):
        evaluate(out, MINI, "test", tmp_path / "mteb-x", corpus_index=tmp_path / "other-index")


def test_bad_inputs(tmp_path):
    from pipeline.core.layout import mteb_ndcg_at_10 as ndcg_at_10
    from pipeline.export.mteb_eval import evaluate

    with pytest.raises(PipelineError, match="missing modules.json"):
        evaluate(tmp_path, MINI, "test", tmp_path / "out")
    (tmp_path / "modules.json").write_text("[]")
    with pytest.raises(PipelineError, match="missing corpus.jsonl"):
        evaluate(tmp_path, tmp_path, "test", tmp_path / "out")
    assert ndcg_at_10(tmp_path / "nothing") is None
