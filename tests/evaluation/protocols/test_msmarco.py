"""pipeline.evaluation.protocols.msmarco: the ContAccum paper's Table 1 cut-offs over BEIR's
evaluation, next to MS MARCO's MRR@10."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytrec_eval

from pipeline.evaluation.protocols import get_protocol, metric_label


def test_msmarco_protocol_reports_the_table1_cutoffs():
    """NDCG@20/100 and Recall@20/100 (Table 1) next to MRR@10, from the same BEIR evaluation as
    the qrels protocol; graded judgements can make NDCG@20 exceed NDCG@100 (TREC-DL 2019)."""
    qrels = {"q1": {"d1": 3, "d2": 1, "d30": 2}, "q2": {"d5": 1}}
    ds = SimpleNamespace(root="mem", queries={"q1": "a", "q2": "b"}, split=lambda name: qrels)
    ranking = {f"d{i}": 100.0 - i for i in range(1, 120)}
    results = {"q1": dict(ranking), "q2": dict(ranking)}
    proto = get_protocol("msmarco")(ds, "test")
    metrics, per_query = proto.evaluate(results)
    assert list(metrics) == list(proto.metric_keys) == ["ndcg@10", "ndcg@20", "ndcg@100", "recall@20", "recall@100",
                                                        "mrr@10"]
    assert metrics["recall@20"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-5) and metrics["recall@100"] == 1.0
    assert metrics["mrr@10"] == pytest.approx((1 + 1 / 5) / 2, abs=1e-5)

    ndcg20 = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.20"}).evaluate(results)
    assert per_query == {q: pytest.approx(v["ndcg_cut_20"]) for q, v in ndcg20.items()}
    qrels_metrics, qrels_pq = get_protocol("qrels")(ds, "test").evaluate(results)
    assert set(qrels_metrics) == {"ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "ndcg@100", "recall@10", "recall@100",
                                  "mrr@10"}
    assert qrels_pq["q1"] == pytest.approx(metrics["ndcg@10"] * 2 - qrels_pq["q2"], abs=1e-4)
    assert [metric_label(m) for m in ("ndcg@20", "recall@100", "mrr@10", "acc@5")] == [
        "NDCG@20", "Recall@100", "MRR@10", "Top-5"]
