"""Training pairs derived from the corpus, beside the qrels (the recipe's `pairs:` section).

* `title`: a passage's title as the query, its text (without the title) as the positive. The
  pairs are the same every epoch.
* `crop`: Contriever-style independent cropping (Izacard et al., 2022, "Unsupervised Dense
  Information Retrieval with Contrastive Learning"): the query and the positive are two spans of
  the same passage's text, each of a length drawn uniformly from [min_words, max_words] words
  (clamped to the passage) at a uniform start, drawn independently so they may overlap or not.
  The spans are drawn afresh each epoch from (seed, epoch) alone, so a run resumed at any update
  replays the same pairs.

Every derived pair keeps ids: its positive id is the passage's doc id and its query id a derived
one (`title:<doc>`, `crop:<doc>`), so the false-negative masks and the `distinct` sampler treat a
passage that is both a qrels positive and a crop/title positive as the same passage.

Passages without a title are left out of `title` pairs and passages with fewer than min_words
words out of `crop` pairs (counted in the run's provenance); a corpus where no passage qualifies
is an error, raised when the training job starts, before any update.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.common import PipelineError
from pipeline.sources.datasets import Dataset, Example, known_positives, training_examples
from pipeline.training.hardneg import draw_per_epoch

TITLE, CROP = "title", "crop"
_CROP_STREAM = 0xC809  # keeps the crop draws apart from any other (seed, epoch) stream


def derived_query_id(source: str, doc_id: str) -> str:
    return f"{source}:{doc_id}"


def title_pairs(ds: Dataset) -> list[Example]:
    """One (title -> text) pair per passage that has both, in corpus order."""
    pairs = []
    for doc_id, doc in ds.corpus.items():
        title, text = (doc.get("title") or "").strip(), (doc.get("text") or "").strip()
        if title and text:
            pairs.append(Example(title, text, query_id=derived_query_id(TITLE, doc_id), positive_id=doc_id))
    if not pairs:
        raise PipelineError(f"{ds.root}/corpus.jsonl: pairs.sources has 'title' but none of its {len(ds.corpus)} "
                            "passages has both a title and a text; drop 'title' from pairs.sources")
    return pairs


class Cropper:
    """Two independent spans of each long-enough passage, redrawn per epoch."""

    def __init__(self, ds: Dataset, min_words: int, max_words: int):
        if min_words > max_words:
            raise PipelineError(f"pairs.crop: min_words {min_words} is above max_words {max_words}")
        self.min_words, self.max_words = min_words, max_words
        self.passages = [(doc_id, (doc.get("text") or "").split()) for doc_id, doc in ds.corpus.items()]
        longest = max((len(words) for _, words in self.passages), default=0)
        self.passages = [(doc_id, words) for doc_id, words in self.passages if len(words) >= min_words]
        self.skipped = len(ds.corpus) - len(self.passages)
        if not self.passages:
            raise PipelineError(f"{ds.root}/corpus.jsonl: pairs.crop.min_words is {min_words} but the longest "
                                f"passage text has {longest} words; lower min_words")

    def epoch(self, seed: int, epoch: int) -> list[Example]:
        rng = np.random.default_rng([seed, epoch, _CROP_STREAM])
        pairs = []
        for doc_id, words in self.passages:
            query, positive = (self._span(rng, words) for _ in range(2))
            pairs.append(Example(query, positive, query_id=derived_query_id(CROP, doc_id), positive_id=doc_id))
        return pairs

    def _span(self, rng: np.random.Generator, words: list[str]) -> str:
        length = int(rng.integers(self.min_words, min(self.max_words, len(words)) + 1))
        start = int(rng.integers(0, len(words) - length + 1))
        return " ".join(words[start:start + length])


__all__ = ["TITLE", "CROP", "derived_query_id", "title_pairs", "Cropper"]


class TrainingData:
    """The training examples of each epoch of one run.

    BM25 negatives (`hard_negatives.source: bm25`) and no negatives give the same examples every
    epoch: the first `per_query` mined negatives of each query. The dataset's own negatives
    (`source: dataset`, DPR's hard_negative_ctxs) are drawn afresh each epoch, `per_query` per
    question uniformly from its candidates that are not relevant to it, as DPR's trainer does
    (`pipeline.training.hardneg.draw_per_epoch`). A draw depends only on (seed, epoch, query id), so a run
    resumed from a checkpoint (the loop knows the epoch from the step) replays the same negatives.
    The example count and order do not depend on the epoch's draw.

    `pairs` (the recipe's `pairs:` section, pipeline.training.pairs) adds pairs derived from the corpus
    after the qrels examples: title -> text (fixed), and independent crops (redrawn per epoch
    from (seed, epoch)); without `qrels` in its sources the split's judged pairs are left out.
    """

    def __init__(self, ds: Dataset, split: str, hard_negatives: dict[str, list[str]] | None = None,
                 params: dict | None = None, seed: int = 0, pairs: dict | None = None):
        self.ds, self.split, self.seed = ds, split, seed
        self.pairs = pairs
        self.sources = list(pairs["sources"]) if pairs else ["qrels"]
        self.titles = title_pairs(ds) if "title" in self.sources else []
        crop = (pairs or {}).get("crop") or {}
        self.cropper = Cropper(ds, crop["min_words"], crop["max_words"]) if "crop" in self.sources else None
        params = params or {}
        self.per_query = int(params.get("per_query") or 0) if hard_negatives else 0
        self.draw_negatives = params.get("source") == "dataset" and self.per_query > 0
        self.per_epoch = self.draw_negatives or self.cropper is not None
        self.hard_negatives = hard_negatives
        if self.draw_negatives:
            qrels = ds.split(split)
            unknown = sorted({d for negs in hard_negatives.values() for d in negs} - ds.corpus.keys())
            if unknown:
                raise PipelineError(f"{ds.root}: hard negatives name doc ids {unknown[:5]} that are not in corpus.jsonl")
            # Candidates that are relevant to their own question are never negatives.
            self.hard_negatives = {q: [d for d in negs if (qrels.get(q) or {}).get(d, 0) <= 0]
                                   for q, negs in hard_negatives.items()}
        self._epoch: int | None = None
        self._examples: list[Example] = []

    def epoch(self, epoch: int) -> list[Example]:
        if self._epoch is None or (self.per_epoch and epoch != self._epoch):
            self._examples = self._qrels_examples(epoch) + self.titles
            if self.cropper is not None:
                self._examples += self.cropper.epoch(self.seed, epoch)
            self._epoch = epoch
        return self._examples

    def _qrels_examples(self, epoch: int) -> list[Example]:
        if "qrels" not in self.sources:
            return []
        negatives = self.hard_negatives
        if self.draw_negatives:
            negatives = draw_per_epoch(self.hard_negatives, self.seed, epoch, self.per_query)
        return training_examples(self.ds, self.split, negatives, self.per_query)

    def known_positives(self) -> dict[str, set[str]]:
        """Judged positives of the split plus each derived query's own passage."""
        positives = known_positives(self.ds, self.split) if self.split in self.ds.qrels else {}
        for example in self.titles:
            positives[example.query_id] = {example.positive_id}
        for doc_id, _ in self.cropper.passages if self.cropper else ():
            positives[derived_query_id(CROP, doc_id)] = {doc_id}
        return positives

    def provenance(self) -> dict:
        """What the run trained on beyond the qrels, for train_summary.json (empty without `pairs`)."""
        if not self.pairs:
            return {}
        first = self.epoch(0) if self._epoch is None else self._examples
        counts = {"qrels": len(first) - len(self.titles) - (len(self.cropper.passages) if self.cropper else 0),
                  "title": len(self.titles), "crop": len(self.cropper.passages) if self.cropper else 0}
        skipped = {"title": len(self.ds.corpus) - len(self.titles) if self.titles else 0,
                   "crop": self.cropper.skipped if self.cropper else 0}
        return {"pairs": {**self.pairs, "per_epoch": counts, "passages_left_out": skipped}}
