"""MS MARCO passage ranking as the ContAccum paper reports it: BEIR qrels metrics at its Table 1
cut-offs, NDCG@20/100 and Recall@20/100, next to MS MARCO's own MRR@10.

The same protocol scores either evaluation split of BEIR's `msmarco` (a dataset's `test_split`):
`dev` (6,980 queries, about one relevant passage each; MRR@10 is the MS MARCO convention) or
`test` (TREC-DL 2019: 43 queries with graded judgements). Table 1's NDCG@20 exceeds its NDCG@100
in every row, which cannot happen on dev (one relevant passage per query makes IDCG@20 equal
IDCG@100) and fits graded TREC-DL 2019 judgements; see docs/paper.md.
"""

from __future__ import annotations

from . import register_protocol
from .qrels import QrelsMetrics


@register_protocol("msmarco")
class MSMarcoMetrics(QrelsMetrics):
    k_values = (10, 20, 100)
    recall_k = (20, 100)
    metric_keys = ("ndcg@10", "ndcg@20", "ndcg@100", "recall@20", "recall@100", "mrr@10")
    per_query_metric = "ndcg@20"
    headline = ("ndcg@20", "recall@20")
    summary_metrics = ("ndcg@20", "ndcg@100", "recall@20", "recall@100", "mrr@10")
