"""pipeline.sources.dpr_convert: the id set that holds 21M passage ids as bits (canonical numbers)
or strings, and query ids that clash between files refused naming the line, before anything is
written."""

from __future__ import annotations

import json

import pytest

from pipeline.core.common import PipelineError
from pipeline.sources.dpr_convert import IdSet
from tests.sources.kinds.test_dpr import MINI, convert


def test_id_set_bits_and_strings():
    s = IdSet()
    assert s.add("5") and s.add("0") and s.add("21015324") and s.add("doc-a") and s.add("007")
    assert not s.add("5") and not s.add("doc-a") and not s.add("007")
    assert "5" in s and "21015324" in s and "6" not in s and "007" in s and "7" not in s and "99999999" not in s
    assert s.count == 5 and len(s._other) == 2  # "007" is not canonical, so it is kept as a string
    t = IdSet()
    for k in ("5", "0", "21015324", "doc-a", "007"):
        t.add(k)
    assert not s.missing_from(t)
    t2 = IdSet()
    t2.add("5")
    assert s.missing_from(t2) and not t2.missing_from(s)


def test_query_id_clashes_name_the_line(tmp_path):
    tev = tmp_path / "tev.jsonl"
    line = {"query_id": "q1", "query": "q", "positive_passages": [{"docid": "1", "text": "t"}], "negative_passages": []}
    tev.write_text(json.dumps(line) + "\n" + json.dumps({**line, "query": "again"}) + "\n")
    with pytest.raises(PipelineError, match=r"tev.jsonl:2: duplicate query id 'q1'"):
        convert(tmp_path / "out", "--tevatron-train", str(tev))
    tev.write_text(json.dumps({**line, "query_id": "test-1"}) + "\n")
    with pytest.raises(PipelineError, match=r"test.qa.csv:2: query id 'test-1' is also a training query id"):
        convert(tmp_path / "out", "--tevatron-train", str(tev), "--dpr-qa", str(MINI / "test.qa.csv"))
    assert not (tmp_path / "out").exists()
