"""pipeline.sources.dpr_records: DPR training records and QA answer cells checked one by one, each
problem naming where it is; answers as JSON or Python list literals, regexes compiled."""

from __future__ import annotations

import json

import pytest

from pipeline.sources.dpr_records import check_dpr_record, parse_answers_cell
from tests.sources.kinds.test_dpr import MINI, convert


@pytest.mark.parametrize("line,expected", [
    ("q\t['Paris', 'Lyon']", ["Paris", "Lyon"]),      # Python literal, as some DPR files write it
    ('q\t["Paris"]', ["Paris"]),
    ('"quoted, q"\t["x"]', ["x"]),                     # csv quoting as DPR's reader applies it
])
def test_qa_answer_cells(tmp_path, line, expected):
    qa = tmp_path / "a.qa.csv"
    qa.write_text(line + "\n")
    convert(tmp_path / "out", "--dpr-qa", f"dev={qa}", "--dpr-passages", str(MINI / "psgs.tsv"))
    row = json.loads((tmp_path / "out" / "answers" / "dev.jsonl").read_text())
    assert row["answers"] == expected and row["_id"] == "dev-0"


def test_answer_cells_name_what_is_wrong():
    assert parse_answers_cell('["(Neil )?Armstrong"]', regex_mode=True) == (["(Neil )?Armstrong"], None)
    for cell, regex, problem in (("Paris", False, "answers column is not a list literal"),
                                 ("[]", False, "answers column must be a non-empty list of strings"),
                                 ("[1]", False, "answer 0 is int, not a string"),
                                 ('["ok", "  "]', False, "answer 1 '  ' has no tokens"),
                                 ('["(Ford"]', True, "answer 0 '(Ford' is not a valid regular expression")):
        value, message = parse_answers_cell(cell, regex)
        assert value is None and message.startswith(problem), message


def test_training_records_keep_their_contexts_or_name_the_problem():
    ctx = {"title": "T", "text": "t", "passage_id": "7"}
    rec = {"question": "q?", "answers": ["a"], "positive_ctxs": [ctx], "negative_ctxs": [],
           "hard_negative_ctxs": [{**ctx, "passage_id": "8"}]}
    question, problem = check_dpr_record(rec, 3, "t.json:9: element 3")
    assert problem is None and question.qid == "train-3" and question.question == "q?"
    assert question.positives == [("7", "T", "t")] and question.hard_negatives == [("8", "T", "t")]
    _, problem = check_dpr_record({**rec, "answers": "a"}, 3, "t.json:9: element 3")
    assert problem.startswith("t.json:9: element 3: 'answers' must be a list of strings")
