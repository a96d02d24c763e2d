"""pipeline.sources.beir_folder: validation of BEIR-format input (every error names file:line,
several reported together), the variants real files have, and a normalised folder that BEIR's own
loader reads."""

from __future__ import annotations

import pytest

from pipeline.core.common import PipelineError
from pipeline.sources import prepare as D
from tests.sources.test_prepare import CORPUS, QUERIES, TEST, TRAIN, corpus_with, jsonl, make_beir


BAD_INPUTS = [
    ("malformed-json", {"corpus.jsonl": corpus_with('{"_id": "d2", "text": ')}, "corpus.jsonl:2", "invalid JSON"),
    ("non-object-line", {"queries.jsonl": jsonl(QUERIES[:2]) + "[1, 2]\n"}, "queries.jsonl:3", "JSON object"),
    ("json-string-line", {"corpus.jsonl": corpus_with('"just a string"')}, "corpus.jsonl:2", "got str"),
    ("missing-_id", {"corpus.jsonl": corpus_with('{"title": "x", "text": "y"}')}, "corpus.jsonl:2", "missing '_id'"),
    ("missing-text-corpus", {"corpus.jsonl": corpus_with('{"_id": "d2", "title": "x"}')}, "corpus.jsonl:2",
     "missing 'text'"),
    ("missing-text-query", {"queries.jsonl": jsonl([{"_id": "q1"}] + QUERIES[1:])}, "queries.jsonl:1",
     "missing 'text'"),
    ("non-string-text", {"corpus.jsonl": corpus_with('{"_id": "d2", "text": ["a", "b"]}')}, "corpus.jsonl:2",
     "'text' must be a string"),
    ("null-text", {"queries.jsonl": jsonl([QUERIES[0], {"_id": "q2", "text": None}, QUERIES[2]])},
     "queries.jsonl:2", "'text' must be a string"),
    ("non-string-title", {"corpus.jsonl": corpus_with('{"_id": "d2", "title": 7, "text": "y"}')},
     "corpus.jsonl:2", "'title' must be a string"),
    ("non-string-id", {"corpus.jsonl": corpus_with('{"_id": {"a": 1}, "text": "y"}')}, "corpus.jsonl:2",
     "'_id' must be a string"),
    ("empty-id", {"corpus.jsonl": corpus_with('{"_id": " ", "text": "y"}')}, "corpus.jsonl:2", "'_id' is empty"),
    ("duplicate-doc-id", {"corpus.jsonl": jsonl(CORPUS + [CORPUS[0]])}, "corpus.jsonl:5",
     "duplicate _id 'd1' (first on line 1)"),
    ("duplicate-query-id", {"queries.jsonl": jsonl(QUERIES + [QUERIES[1]])}, "queries.jsonl:4",
     "duplicate _id 'q2'"),
    ("qrels-unknown-query", {"qrels/train.tsv": TRAIN + "q9\td1\t1\n"}, "qrels/train.tsv:4",
     "query-id 'q9' is not in"),
    ("qrels-unknown-doc", {"qrels/test.tsv": TEST + "q3\tnope\t1\n"}, "qrels/test.tsv:4",
     "corpus-id 'nope' is not in"),
    ("empty-split", {"qrels/test.tsv": "query-id\tcorpus-id\tscore\n"}, "qrels/test.tsv:1", "empty split"),
    ("missing-header", {"qrels/train.tsv": "q1\td1\t1\nq2\td2\t1\n"}, "qrels/train.tsv:1", "missing header"),
    ("wrong-header", {"qrels/train.tsv": "qid\tdocid\trel\nq1\td1\t1\n"}, "qrels/train.tsv:1", "wrong header"),
    ("space-separated", {"qrels/train.tsv": "query-id\tcorpus-id\tscore\nq1 d1 1\n"}, "qrels/train.tsv:2",
     "expected 3 tab-separated columns"),
    ("too-many-columns", {"qrels/train.tsv": TRAIN + "q1\td2\t1\textra\n"}, "qrels/train.tsv:4",
     "got 4"),
    ("non-integer-score", {"qrels/test.tsv": "query-id\tcorpus-id\tscore\nq3\td3\t1.5\n"}, "qrels/test.tsv:2",
     "score '1.5' is not an integer"),
    ("conflicting-grades", {"qrels/train.tsv": TRAIN + "q1\td1\t2\n"}, "qrels/train.tsv:4",
     "on line 2"),
    ("invalid-utf8", {"corpus.jsonl": jsonl(CORPUS[:1]).encode() + '{"_id": "d2", "text": "caf\u00e9"}\n'
                      .encode("latin-1") + jsonl(CORPUS[2:]).encode()}, "corpus.jsonl:2", "not valid UTF-8"),
    ("invalid-utf8-qrels", {"qrels/test.tsv": TEST.encode() + b"q3\td\xff\t1\n"}, "qrels/test.tsv:4",
     "not valid UTF-8"),
    ("empty-corpus-file", {"corpus.jsonl": ""}, "corpus.jsonl:1", "file is empty"),
    ("blank-queries-file", {"queries.jsonl": "\n\n"}, "queries.jsonl:1", "no queries"),
    ("empty-qrels-file", {"qrels/test.tsv": ""}, "qrels/test.tsv:1", "file is empty"),
    ("missing-corpus", {"corpus.jsonl": None}, "corpus.jsonl", "file not found"),
    ("missing-queries", {"queries.jsonl": None}, "queries.jsonl", "file not found"),
    ("missing-qrels", {"qrels/train.tsv": None, "qrels/test.tsv": None}, "qrels", "no qrels/<split>.tsv"),
]


@pytest.mark.parametrize("overrides,where,words", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_names_file_and_line(tmp_path, overrides, where, words):
    root = make_beir(tmp_path / "ds", **overrides)
    with pytest.raises(PipelineError) as info:
        D.read_beir_folder(root)
    msg = str(info.value)
    assert f"{root}/{where}" in msg, msg
    assert words in msg, msg


def test_several_errors_are_reported_together(tmp_path):
    root = make_beir(tmp_path / "ds", **{"corpus.jsonl": corpus_with("not json"),
                                         "qrels/test.tsv": TEST + "q3\td3\tx\n"})
    with pytest.raises(PipelineError) as info:
        D.read_beir_folder(root)
    msg = str(info.value)
    assert msg.startswith("2 problems in")
    assert "corpus.jsonl:2: invalid JSON" in msg and "qrels/test.tsv:4: score 'x'" in msg


def test_tolerated_variants(tmp_path):
    """CRLF line endings (as in BEIR's own SciFact qrels), a UTF-8 BOM, blank lines, numeric ids,
    a null title, an exact duplicate qrels row and an empty document text all load."""
    corpus = ('\ufeff{"_id": 1, "title": null, "text": ""}\n\n' + jsonl(CORPUS)).encode("utf-8")
    train = TRAIN.replace("\n", "\r\n") + "q1\td1\t1\r\n" + "q2\t1\t2\r\n"
    root = make_beir(tmp_path / "ds", **{"corpus.jsonl": corpus, "qrels/train.tsv": train})
    data = D.read_beir_folder(root)
    assert data.corpus["1"] == {"_id": "1", "title": "", "text": ""}
    assert data.qrels["train"] == {"q1": {"d1": 1}, "q2": {"d2": 1, "1": 2}}


def test_beir_loader_reads_the_output(tmp_path):
    from beir.datasets.data_loader import GenericDataLoader  # BEIR's own reader

    out = tmp_path / "out"
    D.prepare_local("toy", make_beir(tmp_path / "src"), out)
    corpus, queries, qrels = GenericDataLoader(str(out)).load(split="train")
    assert len(corpus) == 4 and set(queries) == {"q1", "q2"} and qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}
