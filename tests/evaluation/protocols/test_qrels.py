"""pipeline.evaluation.protocols.qrels: BEIR's NDCG / Recall / MRR against a split's qrels, on
rankings whose values are known by hand; a document whose id equals the query id is kept."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.core.common import PipelineError
from pipeline.evaluation.protocols import get_protocol
from pipeline.sources.datasets import Dataset


def dataset(qrels: dict) -> Dataset:
    return Dataset(Path("/tiny"), {}, {"q1": "first", "q2": "second", "3": "numeric"}, {"test": qrels})


def test_metrics_equal_the_hand_computed_values():
    proto = get_protocol("qrels")(dataset({"q1": {"d1": 1}, "q2": {"d2": 2, "d4": 1}}), "test")
    assert proto.query_ids() == ["q1", "q2"] and proto.depth == 100
    assert proto.query_texts() == ["first", "second"]
    results = {"q1": {"d9": 3.0, "d1": 2.0}, "q2": {"d2": 5.0, "d3": 4.0, "d4": 3.0}}
    metrics, per_query = proto.evaluate(results)
    assert list(metrics) == list(proto.metric_keys)
    q1 = 1 / math.log2(3)                                               # the relevant doc at rank 2
    # Grades 2 and 1 at ranks 1 and 3; trec_eval's gain is the grade itself (not 2^grade - 1).
    q2 = (2 + 1 / math.log2(4)) / (2 + 1 / math.log2(3))
    assert per_query == {"q1": pytest.approx(q1), "q2": pytest.approx(q2)}
    assert metrics["ndcg@10"] == pytest.approx((q1 + q2) / 2, abs=1e-5)
    assert metrics["mrr@10"] == pytest.approx((1 / 2 + 1) / 2, abs=1e-5)
    assert metrics["recall@10"] == 1.0 and metrics["ndcg@1"] == pytest.approx(0.5, abs=1e-5)


def test_a_document_with_the_query_id_counts():
    proto = get_protocol("qrels")(dataset({"3": {"3": 1}}), "test")
    metrics, per_query = proto.evaluate({"3": {"3": 1.0, "4": 0.5}})
    assert per_query == {"3": 1.0} and metrics["ndcg@10"] == 1.0


def test_unknown_query_ids_name_the_qrels_file():
    with pytest.raises(PipelineError, match=r"/tiny/qrels/test.tsv: query ids \['q7'\] are not in queries.jsonl"):
        get_protocol("qrels")(dataset({"q7": {"d1": 1}}), "test")
    with pytest.raises(PipelineError, match=r"no qrels split 'dev'"):
        get_protocol("qrels")(dataset({"q1": {"d1": 1}}), "dev")
