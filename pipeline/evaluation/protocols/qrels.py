"""BEIR's graded-relevance metrics (NDCG, Recall, MRR) through pytrec_eval."""

from __future__ import annotations

from pipeline.core.common import PipelineError
from . import register_protocol
from .base import EvalProtocol, Results

K_VALUES = (1, 3, 5, 10, 100)


@register_protocol("qrels")
class QrelsMetrics(EvalProtocol):
    """NDCG@{1,3,5,10,100}, Recall@{10,100} and MRR@10 against the split's qrels, computed by
    BEIR's `EvaluateRetrieval` (pytrec_eval underneath) exactly as BEIR reports them.

    No document is ever dropped from a ranking: BEIR's `ignore_identical_ids` (on by default in
    beir 2.2.0) removes a hit whose doc id equals the query id, which is wrong for datasets
    whose query and doc id spaces overlap by accident (numeric ids), so it is passed as False.
    """

    metric_keys = tuple(f"ndcg@{k}" for k in K_VALUES) + ("recall@10", "recall@100", "mrr@10")
    per_query_metric = "ndcg@10"
    headline = ("ndcg@10", "recall@100", "mrr@10")
    k_values: tuple[int, ...] = K_VALUES      # NDCG cut-offs (and the cut-offs pytrec_eval computes)
    recall_k: tuple[int, ...] = (10, 100)

    def __init__(self, dataset, split: str):
        super().__init__(dataset, split)
        qrels = dataset.split(split)
        missing = [q for q in qrels if q not in dataset.queries]
        if missing:
            raise PipelineError(f"{dataset.root}/qrels/{split}.tsv: query ids {missing[:5]} are not in queries.jsonl")
        # Restricted to the evaluated queries: BEIR's MRR divides by len(qrels).
        self.qrels = {q: dict(d) for q, d in qrels.items()}

    def query_ids(self) -> list[str]:
        return list(self.qrels)

    @property
    def depth(self) -> int:
        return max(self.k_values)

    def evaluate(self, results: Results) -> tuple[dict[str, float], dict[str, float]]:
        import pytrec_eval
        from beir.retrieval.evaluation import EvaluateRetrieval

        cutoffs = sorted(set(self.k_values) | set(self.recall_k))
        ndcg, _map, recall, _prec = EvaluateRetrieval.evaluate(self.qrels, results, cutoffs,
                                                               ignore_identical_ids=False)
        mrr = EvaluateRetrieval.evaluate_custom(self.qrels, results, [10], metric="mrr")
        metrics = {f"ndcg@{k}": ndcg[f"NDCG@{k}"] for k in self.k_values}
        metrics.update({f"recall@{k}": recall[f"Recall@{k}"] for k in self.recall_k})
        metrics["mrr@10"] = mrr["MRR@10"]
        cut = self.per_query_metric.split("@")[1]  # the per-query metric is an NDCG cut-off
        per_query = pytrec_eval.RelevanceEvaluator(self.qrels, {f"ndcg_cut.{cut}"}).evaluate(results)
        return metrics, {qid: float(v[f"ndcg_cut_{cut}"]) for qid, v in per_query.items()}
