"""One record of a DPR-format input checked and turned into plain values: a training question
of DPR's JSON array (and its passages, shared with the Tevatron format) and the answers cell of
a QA file. A check returns the value or the problem, worded with the record's file:line."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from pipeline.sources.answer_matching import check_answer_regex, tokenize
from pipeline.sources.dpr_json import iter_json_array
from pipeline.sources.lines import Problems

TRAIN_FIELDS = ("question", "answers", "positive_ctxs", "negative_ctxs", "hard_negative_ctxs")
Passage = tuple[str, str, str]   # (id, title, text)


@dataclass
class TrainQuestion:
    qid: str
    question: str
    positives: list[Passage]
    hard_negatives: list[Passage]
    negatives: list[Passage] = field(default_factory=list)
    where: str = ""     # "<file>:<line>" (plus the element index for a JSON array), for messages


def type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def _ctx_id(ctx: dict, id_keys: tuple[str, ...]) -> str | None:
    for key in id_keys:
        if key in ctx:
            value = ctx[key]
            if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
                return None
            return str(value).strip()
    return None


def _check_ctx(ctx: Any, at: str, id_keys: tuple[str, ...], title_required: bool) -> tuple[Passage | None, str | None]:
    if not isinstance(ctx, dict):
        return None, f"{at}: expected an object with 'title', 'text' and an id, got {type_name(ctx)}"
    if "text" not in ctx:
        return None, f"{at}: passage without 'text'"
    if not isinstance(ctx["text"], str):
        return None, f"{at}: 'text' must be a string, got {type_name(ctx['text'])}"
    title = ctx.get("title", None if title_required else "")
    if title is None and not title_required:
        title = ""
    if not isinstance(title, str):
        return None, (f"{at}: missing 'title'" if title is None
                      else f"{at}: 'title' must be a string, got {type_name(title)}")
    pid = _ctx_id(ctx, id_keys)
    if pid is None:
        names = " or ".join(repr(k) for k in id_keys)
        return None, f"{at}: missing or empty passage id ({names})"
    return (pid, title, ctx["text"]), None


def check_ctxs(rec: dict, key: str, where: str, id_keys: tuple[str, ...], title_required: bool
               ) -> tuple[list[Passage], str | None]:
    """[(id, title, text)] of rec[key], or an error message."""
    ctxs = rec[key]
    if not isinstance(ctxs, list):
        return [], f"{where}: '{key}' must be a list of passages, got {type_name(ctxs)}"
    out = []
    for j, ctx in enumerate(ctxs):
        passage, problem = _check_ctx(ctx, f"{where}: {key}[{j}]", id_keys, title_required)
        if problem:
            return [], problem
        out.append(passage)
    return out, None


def question_of(rec: Any, fields, question_key: str, what: str, where: str) -> tuple[str | None, str | None]:
    """The stripped question text of a training record, or the problem: not an object, a
    missing field, an empty question."""
    if not isinstance(rec, dict):
        return None, f"{where}: expected an object with {list(fields)}, got {type_name(rec)}"
    missing = [k for k in fields if k not in rec]
    if missing:
        names = ", ".join(repr(k) for k in missing)
        return None, f"{where}: missing {names} ({what} has {list(fields)})"
    q = rec[question_key]
    if not isinstance(q, str) or not q.strip():
        return None, f"{where}: '{question_key}' must be a non-empty string, got {q!r:.40}"
    return q.strip(), None


def check_dpr_record(rec: Any, index: int, where: str) -> tuple[TrainQuestion | None, str | None]:
    q, problem = question_of(rec, TRAIN_FIELDS, "question", "a DPR training question", where)
    if problem:
        return None, problem
    answers = rec["answers"]
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        return None, f"{where}: 'answers' must be a list of strings, got {answers!r:.60}"
    lists = {}
    for key in ("positive_ctxs", "negative_ctxs", "hard_negative_ctxs"):
        lists[key], problem = check_ctxs(rec, key, where, ("passage_id", "psg_id"), title_required=True)
        if problem:
            return None, problem
    return TrainQuestion(f"train-{index}", q, lists["positive_ctxs"], lists["hard_negative_ctxs"],
                         lists["negative_ctxs"], where), None


def iter_dpr_training(path: Path, label: str, errors: Problems, digest) -> Iterator[TrainQuestion]:
    """The valid questions of a DPR training JSON array; the others are recorded in `errors`."""
    for index, line, rec in iter_json_array(path, label, digest):
        q, problem = check_dpr_record(rec, index, f"{label}:{line}: element {index}")
        if problem:
            errors.add(problem)
        elif q is not None:
            yield q


def parse_answers_cell(cell: str, regex_mode: bool) -> tuple[list[str] | None, str | None]:
    """The answers column of a DPR QA file (a JSON or Python list literal of strings)."""
    try:
        value = json.loads(cell)
    except json.JSONDecodeError:
        try:
            value = ast.literal_eval(cell)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None, f"answers column is not a list literal, like [\"Paris\"] (got {cell[:60]!r})"
    if not isinstance(value, list) or not value:
        return None, f"answers column must be a non-empty list of strings, got {cell[:60]!r}"
    for i, a in enumerate(value):
        problem = _answer_problem(a, regex_mode, cell)
        if problem:
            return None, f"answer {i} {problem}"
    return value, None


def _answer_problem(a: Any, regex_mode: bool, cell: str) -> str | None:
    if not isinstance(a, str):
        return f"is {type_name(a)}, not a string ({cell[:60]!r})"
    if regex_mode:
        reason = check_answer_regex(a) if a.strip() else "empty pattern"
        return f"{a[:40]!r} is not a valid regular expression ({reason})" if reason else None
    return None if tokenize(a) else f"{a!r} has no tokens (empty or only spaces)"
