"""pipeline.sources.dpr_json: DPR's training JSON array streamed element by element (equal to
json.load whatever the chunk size), each element's line known, every error naming line and element."""

from __future__ import annotations

import hashlib
import json

import pytest

from pipeline.core.common import PipelineError
from pipeline.sources.dpr_json import iter_json_array
from tests.sources.kinds.test_dpr import MINI


def test_json_array_streamer_matches_json_load_with_tiny_chunks(tmp_path):
    data = json.loads((MINI / "train.json").read_text())
    got = list(iter_json_array(MINI / "train.json", "train.json", hashlib.sha256(), chunk_chars=7))
    assert [obj for _i, _line, obj in got] == data
    lines = (MINI / "train.json").read_text().splitlines()
    # every element's reported line is the line its '{' is on
    for index, line, _obj in got:
        assert lines[line - 1].strip() == "{", (index, line)
    compact = tmp_path / "c.json"
    compact.write_text('[{"a": 1},\n {"a": 2}, 3, "x"]')
    got = [(i, line, o) for i, line, o in iter_json_array(compact, "c.json", hashlib.sha256(), chunk_chars=3)]
    assert got == [(0, 1, {"a": 1}), (1, 2, {"a": 2}), (2, 2, 3), (3, 2, "x")]
    empty = tmp_path / "e.json"
    empty.write_text("[ ]\n")
    assert list(iter_json_array(empty, "e.json", hashlib.sha256())) == []


@pytest.mark.parametrize("text,expected", [
    ('[{"a": 1},\n{"a": 2},\n{"a": ', "x.json:3: element 2 (starting on line 3): file ends inside this element"),
    ('[{"a": 1},\n{"a": 2}', "x.json:2: file ends inside the array (after element 1"),
    ('[{"a": 1}\n{"a": 2}]', "x.json:2: expected ',' or ']' after element 0"),
    ('[{"a": 1},\n{"a": tru}]', "x.json:2: element 1 (starting on line 2): invalid JSON"),
    ('{"a": 1}', "x.json:1: expected a JSON array"),
    ('[1] [2]', "x.json:1: unexpected content after the JSON array"),
])
def test_json_array_errors_name_line_and_element(tmp_path, text, expected):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(PipelineError) as err:
        list(iter_json_array(path, "x.json", hashlib.sha256(), chunk_chars=4))
    assert expected in str(err.value), str(err.value)
