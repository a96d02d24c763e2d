"""pipeline.sources.lines: the line reader every source shares (a huge line capped without losing
later line numbers, undecodable bytes named, gzip read transparently) and the error collector
that reports many problems at once, capped."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from pipeline.core.common import PipelineError
from pipeline.sources import lines as line_reader
from pipeline.sources import prepare as D
from tests.sources.test_prepare import corpus_with, make_beir


def test_huge_line_is_capped_and_later_lines_keep_their_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(line_reader, "MAX_LINE_BYTES", 200)
    big = json.dumps({"_id": "d2", "text": "x" * 5000})
    bad_later = '{"_id": "d5"}'
    root = make_beir(tmp_path / "ds", **{"corpus.jsonl": corpus_with(big) + bad_later + "\n"})
    with pytest.raises(PipelineError) as info:
        D.read_beir_folder(root)
    msg = str(info.value)
    assert f"{root}/corpus.jsonl:2: line longer than 200 bytes" in msg
    assert f"{root}/corpus.jsonl:5: missing 'text'" in msg


def test_error_count_is_capped(tmp_path):
    rows = "".join(f"q1\tmissing{i}\t1\n" for i in range(line_reader.MAX_ERRORS + 5))
    root = make_beir(tmp_path / "ds", **{"qrels/train.tsv": "query-id\tcorpus-id\tscore\n" + rows})
    with pytest.raises(PipelineError, match=r"and 5 more") as info:
        D.read_beir_folder(root)
    assert str(info.value).count("is not in") == line_reader.MAX_ERRORS


def test_gzip_is_read_transparently_and_hashed_as_stored(tmp_path):
    raw = "first\n\nthird caf\u00e9\n".encode()
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(raw, mtime=0))
    digest, errors = hashlib.sha256(), line_reader.Problems("a.txt.gz")
    got = list(line_reader.iter_lines(tmp_path / "a.txt.gz", "a.txt.gz", errors, digest))
    assert got == [(1, "first"), (3, "third caf\u00e9")]  # blank lines are skipped, numbers kept
    assert digest.hexdigest() == hashlib.sha256((tmp_path / "a.txt.gz").read_bytes()).hexdigest()
    assert line_reader.is_gzip(tmp_path / "a.txt.gz")
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe\n")
    errors = line_reader.Problems("bad.txt")
    assert [n for n, _ in line_reader.iter_lines(tmp_path / "bad.txt", "bad.txt", errors, hashlib.sha256())] == [1]
    with pytest.raises(PipelineError, match="bad.txt:2: not valid UTF-8"):
        errors.raise_if_any()
    with pytest.raises(PipelineError, match="missing.txt: file not found"):
        line_reader.require_file(tmp_path / "missing.txt", "missing.txt")
    assert line_reader.parse_json_line(json.dumps({"a": 1}), "x:1", line_reader.Problems("x")) == {"a": 1}


def test_an_early_stop_names_the_cap():
    errors = line_reader.Problems("big.tsv", stop_early=True)
    for i in range(line_reader.MAX_ERRORS - 1):
        errors.add(f"big.tsv:{i + 1}: bad")
    with pytest.raises(PipelineError, match=rf"stopped at the first {line_reader.MAX_ERRORS} problems"):
        errors.add("big.tsv:99: bad")
