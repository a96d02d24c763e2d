"""pipeline.evaluation.protocols.base and the protocol registry: a protocol is one registered
class; its table metrics default to the headline; metric keys read as the papers name them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline.core.registry import Registry
from pipeline.evaluation.protocols import EvalProtocol, available_protocols, get_protocol, metric_label


def test_metric_labels():
    assert [metric_label(m) for m in ("ndcg@10", "recall@100", "mrr@10", "acc@20", "map@5", "f1")] == \
        ["NDCG@10", "Recall@100", "MRR@10", "Top-20", "map@5", "f1"]


def test_a_protocol_is_one_registered_class():
    registry = Registry("pipeline.evaluation.protocols", "evaluation protocol", "protocol",
                        lambda cls, name: setattr(cls, "name", name))

    @registry.register("first-hit")
    class FirstHit(EvalProtocol):
        metric_keys = ("hit@1",)
        per_query_metric = "hit@1"
        headline = ("hit@1",)

        def query_ids(self):
            return sorted(self.dataset.queries)

        def evaluate(self, results):
            per_query = {q: float(max(results[q], key=results[q].get) == q.upper()) for q in self.query_ids()}
            return {"hit@1": sum(per_query.values()) / len(per_query)}, per_query

    assert registry.get("first-hit") is FirstHit and FirstHit.name == "first-hit"
    proto = FirstHit(SimpleNamespace(queries={"b": "bee", "a": "ay"}), "test")
    assert proto.query_texts() == ["ay", "bee"] and proto.depth == 100 and FirstHit.table_metrics() == ("hit@1",)
    assert proto.evaluate({"a": {"A": 2.0, "B": 1.0}, "b": {"A": 2.0, "B": 1.0}}) == ({"hit@1": 0.5}, {"a": 1.0, "b": 0.0})
    with pytest.raises(TypeError):
        EvalProtocol(None, "test")  # abstract: query_ids and evaluate are required


def test_the_shipped_protocols_table_metrics():
    assert {"qrels", "answers", "msmarco"} <= set(available_protocols())
    assert get_protocol("qrels").table_metrics() == ("ndcg@10", "recall@100", "mrr@10")
    assert get_protocol("answers").table_metrics() == ("acc@5", "acc@20", "acc@100")
