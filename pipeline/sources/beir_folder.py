"""A BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) read and validated in
memory, and the normalised folder with its manifest written from it. Every later step trusts the
normalised folder, so all checking happens here; every problem is reported as
`<file>:<line>: <what is wrong>`."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipeline.core.common import PipelineError, atomic_dir, sha256_file
from pipeline.core.layout import MANIFEST, MANIFEST_VERSION
from pipeline.sources.dev_split import carve
from pipeline.sources.lines import INVALID_JSON, Problems, iter_lines, parse_json_line, require_file

QRELS_HEADER = ("query-id", "corpus-id", "score")
_NOT_LINES = " (is this really a line-oriented text file?)"


@dataclass
class BeirData:
    corpus: dict[str, dict]
    queries: dict[str, dict]
    qrels: dict[str, dict[str, dict[str, int]]]
    input_sha256: dict[str, str] = field(default_factory=dict)


def read_beir_folder(root: str | os.PathLike, label: str | None = None) -> BeirData:
    """Read and validate a BEIR-format folder. `label` replaces the folder in error messages (for
    a temporary extraction folder the user never sees); every message names file and line."""
    root = Path(root)
    label = label if label is not None else str(root)
    if not root.is_dir():
        raise PipelineError(f"{label}: dataset folder not found")
    errors = Problems(label)
    hashes: dict[str, str] = {}

    def read(rel: str, reader: Callable):
        path = root / rel
        where = f"{label}/{rel}"
        require_file(path, where)
        digest = hashlib.sha256()
        result = reader(path, where, digest)
        hashes[rel] = digest.hexdigest()
        return result

    corpus = read("corpus.jsonl", lambda p, w, d: _read_records(p, w, "documents", errors, d, True))
    queries = read("queries.jsonl", lambda p, w, d: _read_records(p, w, "queries", errors, d, False))
    # A broken corpus or queries line would make every qrels row that points at it look wrong
    # too; that noise would hide the real cause, so ids are only resolved against clean files.
    ids = _KnownIds(corpus, queries, label) if not errors.items else None
    qrels = {}
    for path in _split_files(root, label):
        qrels[path.stem] = read(f"qrels/{path.name}", lambda p, w, d: _read_qrels(p, w, errors, d, ids))
    errors.raise_if_any()
    return BeirData(corpus, queries, qrels, hashes)


def _split_files(root: Path, label: str) -> list[Path]:
    qrels_dir = root / "qrels"
    split_files = sorted(qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
    if not split_files:
        raise PipelineError(f"{label}/qrels: no qrels/<split>.tsv files found")
    return split_files


# ----------------------------------------------------------------------------- corpus and queries
def _read_records(path: Path, label: str, kind: str, errors: Problems, digest,
                  allow_title: bool) -> dict[str, dict]:
    """The records of a corpus (`allow_title`) or queries file by id; the bad lines recorded."""
    records: dict[str, dict] = {}
    first_line: dict[str, int] = {}
    seen_any = False
    for lineno, text in iter_lines(path, label, errors, digest, gunzip=False, too_long_hint=_NOT_LINES):
        seen_any = True
        where = f"{label}:{lineno}"
        obj = parse_json_line(text, where, errors)
        if obj is INVALID_JSON:
            continue
        record, problem = _check_record(obj, where, allow_title)
        if problem is None and record["_id"] in records:
            problem = f"{where}: duplicate _id {record['_id']!r} (first on line {first_line[record['_id']]})"
        if problem:
            errors.add(problem)
            continue
        first_line[record["_id"]] = lineno
        records[record["_id"]] = record
    if not seen_any:
        errors.add(f"{label}:1: no {kind} (file has only blank lines)")
    return records


def _check_record(obj, where: str, allow_title: bool) -> tuple[dict | None, str | None]:
    """The normalised record of one line, or the problem with it."""
    if not isinstance(obj, dict):
        return None, f"{where}: expected a JSON object per line, got {type(obj).__name__}"
    if "_id" not in obj:
        return None, f"{where}: missing '_id'"
    raw_id = obj["_id"]
    # Some BEIR-style exports write numeric ids; BEIR itself treats every id as a string.
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        return None, f"{where}: '_id' must be a string, got {type(raw_id).__name__}"
    doc_id = str(raw_id)
    if not doc_id.strip():
        return None, f"{where}: '_id' is empty"
    if "text" not in obj:
        return None, f"{where}: missing 'text' (id {doc_id!r})"
    if not isinstance(obj["text"], str):
        return None, f"{where}: 'text' must be a string, got {type(obj['text']).__name__} (id {doc_id!r})"
    title = obj.get("title")
    if allow_title and title is not None and not isinstance(title, str):
        return None, f"{where}: 'title' must be a string, got {type(title).__name__} (id {doc_id!r})"
    if allow_title:
        return {"_id": doc_id, "title": title or "", "text": obj["text"]}, None
    return {"_id": doc_id, "text": obj["text"]}, None


# ----------------------------------------------------------------------------- qrels
@dataclass
class _KnownIds:
    corpus: dict
    queries: dict
    label: str


def _read_qrels(path: Path, label: str, errors: Problems, digest,
                ids: _KnownIds | None) -> dict[str, dict[str, int]]:
    """The judgements of one split, {query id: {doc id: score}}; ids are checked against `ids`
    unless it is None."""
    qrels: dict[str, dict[str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    header_seen = False
    data_lines = 0
    for lineno, text in iter_lines(path, label, errors, digest, gunzip=False, too_long_hint=_NOT_LINES):
        where = f"{label}:{lineno}"
        if not header_seen:
            header_seen = True
            _check_header(text, where, errors)
            continue
        data_lines += 1
        row = _judgement(text, where, errors, ids)
        if row is not None:
            _add_judgement(qrels, first_line, row, lineno, where, errors)
    if not header_seen:
        errors.add(f"{label}:1: no header and no judgements (file has only blank lines)")
    elif data_lines == 0:
        errors.add(f"{label}:1: empty split (a header but no judgements)")
    return qrels


def _check_header(text: str, where: str, errors: Problems) -> None:
    cols = text.split("\t")
    if tuple(c.strip() for c in cols) == QRELS_HEADER:
        return
    looks_like_data = len(cols) == 3 and cols[2].strip().lstrip("-").isdigit()
    errors.add(f"{where}: " + ("missing header line" if looks_like_data else "wrong header")
               + f"; expected 'query-id<TAB>corpus-id<TAB>score', got {text[:80]!r}")


def _judgement(text: str, where: str, errors: Problems, ids: _KnownIds | None) -> tuple[str, str, int] | None:
    """(query id, doc id, score) of one data line, or None after recording what is wrong (or,
    while ids are not checked, once the score is known to be an integer)."""
    cols = text.split("\t")
    if len(cols) != 3:
        errors.add(f"{where}: expected 3 tab-separated columns (query-id, corpus-id, score), got {len(cols)}")
        return None
    qid, did, score_text = (c.strip() for c in cols)
    try:
        score = int(score_text)
    except ValueError:
        errors.add(f"{where}: score {score_text!r} is not an integer")
        return None
    if ids is None:
        return None
    known = True
    if qid not in ids.queries:
        errors.add(f"{where}: query-id {qid!r} is not in {ids.label}/queries.jsonl")
        known = False
    if did not in ids.corpus:
        errors.add(f"{where}: corpus-id {did!r} is not in {ids.label}/corpus.jsonl")
        known = False
    return (qid, did, score) if known else None


def _add_judgement(qrels: dict, first_line: dict, row: tuple[str, str, int], lineno: int, where: str,
                   errors: Problems) -> None:
    qid, did, score = row
    key = (qid, did)
    if key in first_line:
        if qrels[qid][did] != score:
            errors.add(f"{where}: ({qid!r}, {did!r}) judged {score} here but {qrels[qid][did]} "
                       f"on line {first_line[key]}")
        return  # an exact repeat carries no information; keep the first
    first_line[key] = lineno
    qrels.setdefault(qid, {})[did] = score


# ----------------------------------------------------------------------------- writing
def _jsonl_line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")) + "\n"


def write_normalized(data: BeirData, folder: Path) -> dict[str, str]:
    """Write the BEIR layout into `folder` (an existing, empty folder) and return the sha256 of
    each file written, keyed by its path relative to the folder."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(_jsonl_line({"_id": d["_id"], "title": d["title"], "text": d["text"]})
                      for d in data.corpus.values())
    with open(folder / "queries.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(_jsonl_line({"_id": q["_id"], "text": q["text"]}) for q in data.queries.values())
    for split, judged in data.qrels.items():
        with open(folder / "qrels" / f"{split}.tsv", "w", encoding="utf-8", newline="\n") as fh:
            fh.write("\t".join(QRELS_HEADER) + "\n")
            for qid, docs in judged.items():
                fh.writelines(f"{qid}\t{did}\t{score}\n" for did, score in docs.items())
    rels = ["corpus.jsonl", "queries.jsonl"] + [f"qrels/{s}.tsv" for s in data.qrels]
    return {rel: sha256_file(folder / rel) for rel in sorted(rels)}


def counts(data: BeirData) -> dict:
    return {
        "docs": len(data.corpus),
        "queries": len(data.queries),
        "splits": {split: {"queries": len(judged), "pairs": sum(len(d) for d in judged.values()),
                           "relevant_pairs": sum(1 for d in judged.values() for g in d.values() if g > 0)}
                   for split, judged in sorted(data.qrels.items())},
    }


def write_dataset_folder(data: BeirData, out: str | os.PathLike, source_info: dict,
                         dev_split: dict | None = None) -> dict:
    """Write the normalised folder and its manifest atomically; return the manifest. `dev_split`
    (pipeline.sources.dev_split.parse) first moves a seeded set of training queries into a split of their own."""
    if dev_split:
        source_info = {**source_info, "dev_split": carve(data.qrels, dev_split)}
    with atomic_dir(out) as tmp:
        output_sha = write_normalized(data, tmp)
        manifest = {"manifest_version": MANIFEST_VERSION, **source_info, "counts": counts(data),
                    "input_sha256": dict(sorted(data.input_sha256.items())), "output_sha256": output_sha}
        # Written directly: the whole folder is swapped in by atomic_dir.
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                           encoding="utf-8")
    return manifest
