"""pipeline.sources.tevatron: Tevatron's JSONL training lines read into questions (their own query
ids, or train-<n> by line), every bad line named with file:line while the good ones are kept."""

from __future__ import annotations

import hashlib
import json

import pytest

from pipeline.core.common import PipelineError
from pipeline.sources.lines import Problems
from pipeline.sources.tevatron import check_tevatron_record, iter_tevatron_training


def line(**keys) -> str:
    rec = {"query": " what is x ", "positive_passages": [{"docid": "1", "title": "", "text": "x is y"}],
           "negative_passages": [{"docid": "2", "text": "z"}], **keys}
    return json.dumps(rec) + "\n"


def test_good_lines_become_questions_and_bad_ones_are_named(tmp_path):
    path = tmp_path / "tev.jsonl"
    path.write_text(line(query_id="q7") + line() + "{oops\n" + line(query_id=True) + line(positive_passages=3))
    errors = Problems("tev.jsonl")
    got = list(iter_tevatron_training(path, "tev.jsonl", errors, hashlib.sha256()))
    assert [(q.qid, q.question) for q in got] == [("q7", "what is x"), ("train-1", "what is x")]
    assert got[0].positives == [("1", "", "x is y")] and got[0].hard_negatives == [("2", "", "z")]
    assert [item.split(":")[1] for item in errors.items] == ["3", "4", "5"]
    with pytest.raises(PipelineError, match=r"3 problems in tev.jsonl:\n  tev.jsonl:3: invalid JSON"):
        errors.raise_if_any()


def test_query_id_must_be_a_non_empty_string():
    _, problem = check_tevatron_record(json.loads(line(query_id=" ")), 1, "t.jsonl:1")
    assert problem == "t.jsonl:1: 'query_id' must be a non-empty string, got ' '"
    question, problem = check_tevatron_record(json.loads(line(query_id=12)), 1, "t.jsonl:1")
    assert problem is None and question.qid == "12"
