"""DPR's Top-k answer accuracy for open-domain QA (NQ, TriviaQA, WebQuestions, CuratedTREC).

A question counts as answered at k when one of its k best-ranked passages has an answer
(`pipeline.sources.answer_matching`: token-sequence match after NFD and lower-casing, or regex search for
CuratedTREC). acc@k is the fraction of the split's questions answered at k; a question the
ranking does not cover counts as unanswered. The per-query value is 0/1 at k = 20.

The split's questions and answers come from `answers/<split>.jsonl` of the normalised dataset
(written by `python -m pipeline.sources.prepare --source dpr`); only the texts of retrieved passages are read.
"""

from __future__ import annotations

from pipeline.sources.answer_matching import AnswerMatcher, load_answers, read_passage_texts
from pipeline.core.common import PipelineError
from . import register_protocol
from .base import EvalProtocol, Results

CUTOFFS = (1, 5, 20, 100)


@register_protocol("answers")
class AnswerAccuracy(EvalProtocol):
    metric_keys = tuple(f"acc@{k}" for k in CUTOFFS)
    per_query_metric = "acc@20"
    headline = ("acc@20", "acc@100")
    summary_metrics = ("acc@5", "acc@20", "acc@100")   # DPR's and the ContAccum paper's Top-5/20/100

    def __init__(self, dataset, split: str):
        super().__init__(dataset, split)
        self.answers = load_answers(dataset.root, split)
        missing = [q for q in self.answers if q not in dataset.queries]
        if missing:
            raise PipelineError(f"{dataset.root}/answers/{split}.jsonl: question ids {missing[:5]} are not in "
                                f"queries.jsonl")

    def query_ids(self) -> list[str]:
        return list(self.answers)

    @property
    def depth(self) -> int:
        return max(CUTOFFS)

    def passage_texts(self, doc_ids: set[str]) -> dict[str, str]:
        """Texts of the retrieved passages only. DPR matches the passage text, not its title.
        With the corpus in memory (`dataset.corpus`) they come from there; a dataset object
        whose corpus is empty (a lazy loader for a 21M-passage corpus) gets them in one streaming
        pass over corpus.jsonl."""
        corpus = getattr(self.dataset, "corpus", None)
        if corpus:
            texts = {d: (corpus[d].get("text") or "") for d in doc_ids if d in corpus}
        else:
            texts = read_passage_texts(self.dataset.root / "corpus.jsonl", doc_ids)
        missing = sorted(doc_ids - texts.keys())
        if missing:
            raise PipelineError(f"rankings hold doc ids {missing[:5]} that are not in "
                                f"{self.dataset.root}/corpus.jsonl")
        return texts

    def first_hits(self, results: Results) -> dict[str, int | None]:
        """Question id -> 0-based rank of the first answer-bearing passage within the depth, or None."""
        ranked = {qid: [d for d, _s in sorted((results.get(qid) or {}).items(), key=lambda kv: -kv[1])][: self.depth]
                  for qid in self.answers}
        texts = self.passage_texts({d for docs in ranked.values() for d in docs})
        hits: dict[str, int | None] = {}
        for qid, (answers, regex_mode) in self.answers.items():
            matcher = AnswerMatcher(answers, regex_mode=regex_mode)
            hits[qid] = next((rank for rank, doc_id in enumerate(ranked[qid]) if matcher.matches(texts[doc_id])),
                             None)
        return hits

    def evaluate(self, results: Results) -> tuple[dict[str, float], dict[str, float]]:
        hits = self.first_hits(results)
        n = len(hits)
        metrics = {f"acc@{k}": sum(1 for h in hits.values() if h is not None and h < k) / n for k in CUTOFFS}
        per_query = {qid: float(h is not None and h < 20) for qid, h in hits.items()}
        return metrics, per_query
