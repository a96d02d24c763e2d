"""Tevatron's training format: one {query_id?, query, positive_passages, negative_passages} per
line, each passage {docid, title?, text}; read into the same questions as DPR's JSON array."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from pipeline.sources.dpr_records import TrainQuestion, check_ctxs, question_of
from pipeline.sources.lines import INVALID_JSON, Problems, iter_lines, parse_json_line

TEVATRON_FIELDS = ("query", "positive_passages", "negative_passages")


def check_tevatron_record(rec: Any, lineno: int, where: str) -> tuple[TrainQuestion | None, str | None]:
    q, problem = question_of(rec, TEVATRON_FIELDS, "query", "a Tevatron line", where)
    if problem:
        return None, problem
    qid = rec.get("query_id")
    if qid is None:
        qid = f"train-{lineno - 1}"
    elif isinstance(qid, bool) or not isinstance(qid, (str, int)) or not str(qid).strip():
        return None, f"{where}: 'query_id' must be a non-empty string, got {qid!r:.40}"
    pos, problem = check_ctxs(rec, "positive_passages", where, ("docid",), title_required=False)
    if problem:
        return None, problem
    neg, problem = check_ctxs(rec, "negative_passages", where, ("docid",), title_required=False)
    if problem:
        return None, problem
    return TrainQuestion(str(qid).strip(), q.strip(), pos, neg, where=where), None


def iter_tevatron_training(path: Path, label: str, errors: Problems, digest) -> Iterator[TrainQuestion]:
    """The valid questions of a Tevatron JSONL file; the others are recorded in `errors`."""
    for lineno, text in iter_lines(path, label, errors, digest):
        where = f"{label}:{lineno}"
        rec = parse_json_line(text, where, errors)
        if rec is INVALID_JSON:
            continue
        q, problem = check_tevatron_record(rec, lineno, where)
        if problem:
            errors.add(problem)
        elif q is not None:
            yield q
