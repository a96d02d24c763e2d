"""The interface every evaluation protocol implements (BEIR qrels metrics, answer accuracy, ...)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

Results = dict[str, dict[str, float]]  # qid -> {docid: score}, best first


class EvalProtocol(ABC):
    """Scores rankings of one split of a normalised dataset.

    `metric_keys` are the columns a metrics row carries, in table order; `per_query_metric` is
    the one per-query value kept in per_query.json and compared by the paired significance
    tests; `headline` are the metrics the one-line-per-run tables show. The constructor checks
    the split and fails with a PipelineError naming the file when it cannot be evaluated.
    """

    name: ClassVar[str] = ""
    metric_keys: ClassVar[tuple[str, ...]] = ()
    per_query_metric: ClassVar[str] = ""
    headline: ClassVar[tuple[str, ...]] = ()          # (main metric, second metric) of the headline table
    summary_metrics: ClassVar[tuple[str, ...]] = ()   # the summary table's metric columns (default: headline)

    @classmethod
    def table_metrics(cls) -> tuple[str, ...]:
        return cls.summary_metrics or cls.headline

    def __init__(self, dataset, split: str):
        self.dataset = dataset
        self.split = split

    @abstractmethod
    def query_ids(self) -> list[str]:
        """The evaluated queries, in a deterministic order."""

    def query_texts(self) -> list[str]:
        return [self.dataset.queries[q] for q in self.query_ids()]

    @property
    def depth(self) -> int:
        """How many documents per query the metrics look at (the search must return at least these)."""
        return 100

    @abstractmethod
    def evaluate(self, results: Results) -> tuple[dict[str, float], dict[str, float]]:
        """(aggregate metrics keyed by `metric_keys`, {qid: per_query_metric})."""


_LABELS = {"ndcg": "NDCG", "recall": "Recall", "mrr": "MRR", "acc": "Top-"}


def metric_label(metric: str) -> str:
    """How tables name a metric key: ndcg@10 -> NDCG@10, recall@100 -> Recall@100, acc@20 -> Top-20
    (DPR's name for answer accuracy at k)."""
    name, _, k = metric.partition("@")
    label = _LABELS.get(name, name)
    return f"{label}{k}" if label.endswith("-") else f"{label}@{k}" if k else label
