"""The normalised dataset in memory: reading a dataset folder (BEIR layout, already validated by
`pipeline.sources.prepare`), the passage-text convention, and training examples from a qrels split.
Imports no torch: BM25 mining and config validation use it too."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.common import PipelineError
from pipeline.core.layout import MANIFEST


@dataclass
class Example:
    """One training triple: a query, its positive passage, and optional hard negatives, with the
    ids they come from (so false negatives can be recognised and masked)."""

    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)
    query_id: str | None = None
    positive_id: str | None = None
    negative_ids: list[str] = field(default_factory=list)


def passage_text(doc: dict) -> str:
    """BEIR/MTEB convention: title and text joined by a space."""
    title = (doc.get("title") or "").strip()
    text = (doc.get("text") or "").strip()
    return f"{title} {text}".strip()


@dataclass
class Dataset:
    root: Path
    corpus: dict[str, dict]                         # doc id -> {"title", "text"}
    queries: dict[str, str]                         # query id -> text
    qrels: dict[str, dict[str, dict[str, int]]]     # split -> query id -> doc id -> grade
    manifest: dict = field(default_factory=dict)

    def split(self, name: str) -> dict[str, dict[str, int]]:
        if name not in self.qrels:
            raise PipelineError(f"{self.root}: no qrels split {name!r}; available: {sorted(self.qrels)}")
        return self.qrels[name]

    def doc_ids(self) -> list[str]:
        return list(self.corpus)

    def passages(self, ids: list[str] | None = None) -> list[str]:
        return [passage_text(self.corpus[i]) for i in (ids if ids is not None else self.corpus)]


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        next(reader, None)  # header, checked by pipeline.sources.prepare
        for row in reader:
            if row:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def corpus_digest(manifest: dict) -> str | None:
    """The sha256 of corpus.jsonl that the data step recorded in manifest.json (None if absent):
    what the index records and evaluation compares, instead of re-reading the corpus."""
    return manifest.get("output_sha256", {}).get("corpus.jsonl")


def iter_corpus_ids(root: str | Path):
    """The doc ids of corpus.jsonl in file order (the index's row order), streamed."""
    with open(Path(root) / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield str(json.loads(line)["_id"])


def load_dataset(root: str | Path, corpus: bool = True) -> Dataset:
    """The dataset folder in memory. `corpus=False` leaves the corpus out (an empty dict): the
    evaluation of a 21M-passage corpus needs its queries and qrels, not 21M passage texts."""
    root = Path(root)
    if not (root / "corpus.jsonl").is_file():
        raise PipelineError(f"{root}: not a dataset folder (missing corpus.jsonl)")
    docs, queries = {}, {}
    if corpus:
        with open(root / "corpus.jsonl", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    doc = json.loads(line)
                    docs[str(doc["_id"])] = {"title": doc.get("title") or "", "text": doc.get("text") or ""}
    with open(root / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                query = json.loads(line)
                queries[str(query["_id"])] = query["text"]
    qrels = {p.stem: read_qrels(p) for p in sorted((root / "qrels").glob("*.tsv"))}
    manifest_path = root / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return Dataset(root, docs, queries, qrels, manifest)


def training_examples(ds: Dataset, split: str, hard_negatives: dict[str, list[str]] | None = None,
                      per_query: int = 0) -> list[Example]:
    """One example per relevant (query, doc) pair of `split` (grade > 0), in file order, with up
    to `per_query` mined hard negatives that are not themselves relevant."""
    examples = []
    for qid, docs in ds.split(split).items():
        relevant = {d for d, grade in docs.items() if grade > 0}
        negatives = []
        if hard_negatives and per_query:
            negatives = [d for d in hard_negatives.get(qid, []) if d not in relevant][:per_query]
        for doc_id in docs:
            if doc_id in relevant:
                examples.append(Example(ds.queries[qid], passage_text(ds.corpus[doc_id]),
                                        [passage_text(ds.corpus[n]) for n in negatives],
                                        query_id=qid, positive_id=doc_id, negative_ids=list(negatives)))
    return examples


def known_positives(ds: Dataset, split: str) -> dict[str, set[str]]:
    """Every judged-relevant passage of each query of `split` (grade > 0)."""
    return {qid: {d for d, grade in docs.items() if grade > 0} for qid, docs in ds.split(split).items()}


def false_negative_mask(query_ids: list[str | None], column_ids: list[str | None],
                        positives: dict[str, set[str]]):
    """Bool matrix [rows x columns]: True where column j holds a known positive of row i's query.
    The caller's loss keeps each row's own label column; unknown ids (None) are never masked."""
    import numpy as np

    mask = np.zeros((len(query_ids), len(column_ids)), dtype=bool)
    columns: dict[str, list[int]] = {}
    for j, pid in enumerate(column_ids):
        if pid is not None:
            columns.setdefault(pid, []).append(j)
    for i, qid in enumerate(query_ids):
        for pid in positives.get(qid, ()) if qid is not None else ():
            mask[i, columns.get(pid, [])] = True
    return mask
