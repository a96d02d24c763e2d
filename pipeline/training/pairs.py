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
from pipeline.sources.datasets import Dataset, Example

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
