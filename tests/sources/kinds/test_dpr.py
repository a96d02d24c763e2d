"""pipeline.sources.kinds.dpr: DPR-format and Tevatron files -> the normalised layout (+ answers, hard
negatives) on the committed fixture (tests/evaluation/protocols/test_answers.py scores it)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from pipeline.sources import prepare as D
from pipeline.sources.kinds import dpr as P
from pipeline.sources.dpr_convert import IdSet
from pipeline.sources.dpr_json import iter_json_array
from pipeline.core.common import PipelineError
from pipeline.sources.datasets import load_dataset

REPO = Path(__file__).resolve().parents[3]
MINI = REPO / "data" / "embedded" / "dpr-mini"


def convert(out: Path, *extra: str) -> dict:
    return D.main(["--name", "dpr-mini", "--source", "dpr", "--out", str(out), *extra])


def mini_args(folder: Path = MINI) -> list[str]:
    return ["--dpr-train", str(folder / "train.json"), "--dpr-qa", f"test={folder / 'test.qa.csv'}",
            "--dpr-passages", str(folder / "psgs.tsv")]


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("dpr") / "dpr-mini"
    return out, convert(out, *mini_args())


def test_fixture_is_what_the_generator_writes():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "make_dpr_mini.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_dpr_fixture_counts_and_layout(mini):
    out, manifest = mini
    c = manifest["counts"]
    # 300 TSV passages + 2 positives only the training file has; 33 training questions, one
    # without a positive (skipped, as DPR's loader does); 40 QA test questions.
    assert c["docs"] == 302 and manifest["dpr"]["corpus"] == {"from_passages_file": 300, "from_training_file": 2}
    assert manifest["dpr"]["training"]["questions"] == 33 and manifest["dpr"]["training"]["kept"] == 32
    assert manifest["dpr"]["training"]["skipped_no_positive"] == 1
    assert c["queries"] == 32 + 40
    assert c["splits"] == {"train": {"queries": 32, "pairs": 32, "relevant_pairs": 32}}
    assert c["answers"] == {"test": {"questions": 40, "regex": False}}
    assert manifest["answer_splits"] == ["test"] and manifest["source"] == "dpr"
    assert sorted(manifest["output_sha256"]) == ["answers/test.jsonl", "corpus.jsonl", "hard_negatives/train.jsonl",
                                                 "qrels/train.tsv", "queries.jsonl"]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    # An answer-evaluated split has no qrels file: the answers file is what marks it.
    assert not (out / "qrels" / "test.tsv").exists()
    # The normalised folder passes the same validator every other source goes through.
    beir = D.read_beir_folder(out)
    assert len(beir.corpus) == 302 and list(beir.qrels) == ["train"]
    ds = load_dataset(out)
    assert ds.corpus["1"]["title"] == "ETH" and "Zu\u0308rich" in ds.corpus["1"]["text"]
    assert ds.queries["test-0"] == "in which city is the eth university"
    # The first positive is what DPR trains on: train-1's first positive is the passage that
    # psgs.tsv lacks (given with the old 'psg_id' key), added to the corpus from the training file.
    assert ds.split("train")["train-1"] == {"9002": 1}
    assert ds.corpus["9002"]["text"].startswith("São Paulo")


def test_hard_negatives_in_pipeline_hardneg_format(mini):
    from pipeline.sources.datasets import training_examples
    from pipeline.training.hardneg import load_hard_negatives

    out, _ = mini
    hn = load_hard_negatives(out / "hard_negatives" / "train.jsonl")
    ds = load_dataset(out)
    assert list(hn) == list(ds.split("train"))
    assert hn["train-0"] == ["2", "3", "4"] and all(d in ds.corpus for negs in hn.values() for d in negs)
    examples = training_examples(ds, "train", hn, per_query=1)
    assert len(examples) == 32 and all(len(e.negatives) == 1 for e in examples)


def test_gzipped_inputs_give_identical_output(mini, tmp_path):
    out, manifest = mini
    for name in ("train.json", "test.qa.csv", "psgs.tsv"):
        (tmp_path / name).write_bytes(gzip.compress((MINI / name).read_bytes(), mtime=0))
    m2 = convert(tmp_path / "out", *mini_args(tmp_path))
    assert m2["output_sha256"] == manifest["output_sha256"]
    # Inputs are hashed as stored (the gzip bytes), not as decompressed.
    import hashlib

    key = f"passages:{tmp_path / 'psgs.tsv'}"
    assert m2["input_sha256"][key] == hashlib.sha256((tmp_path / "psgs.tsv").read_bytes()).hexdigest()


def test_all_positives_option(tmp_path):
    manifest = convert(tmp_path / "out", *mini_args(), "--dpr-positives", "all")
    assert manifest["counts"]["splits"]["train"]["pairs"] == 34  # two questions have a second positive
    ds = load_dataset(tmp_path / "out")
    assert ds.split("train")["train-0"] == {"1": 1, "9001": 1}


def test_training_file_alone_builds_corpus_from_ctxs(tmp_path):
    manifest = convert(tmp_path / "out", "--dpr-train", str(MINI / "train.json"))
    assert manifest["counts"]["answers"] == {}
    assert manifest["dpr"]["corpus"]["from_passages_file"] == 0
    D.read_beir_folder(tmp_path / "out")  # every qrels id resolves


def test_tevatron_fixture(tmp_path):
    manifest = convert(tmp_path / "out", "--tevatron-train", str(MINI / "tevatron-train.jsonl"),
                       "--dpr-passages", str(MINI / "psgs.tsv"))
    c = manifest["counts"]
    assert c["docs"] == 300 and c["queries"] == 20 and c["splits"]["train"]["pairs"] == 20
    assert manifest["dpr"]["training"]["format"] == "tevatron"
    hn = [json.loads(line) for line in (tmp_path / "out" / "hard_negatives" / "train.jsonl").read_text().splitlines()]
    assert hn[0] == {"query_id": "tev-0", "negatives": ["2", "3"]} and len(hn) == 20


def test_regex_answers_curatedtrec(tmp_path):
    manifest = convert(tmp_path / "out", "--dpr-qa", str(MINI / "curatedtrec-test.qa.csv"),
                       "--dpr-passages", str(MINI / "psgs.tsv"), "--answer-regex")
    assert manifest["counts"]["answers"] == {"test": {"questions": 10, "regex": True}}
    row = json.loads((tmp_path / "out" / "answers" / "test.jsonl").read_text().splitlines()[0])
    assert row == {"_id": "test-0", "answers": ["(Neil )?Armstrong"], "regex": True}


def test_invalid_regex_answer_is_refused_with_file_line(tmp_path):
    qa = tmp_path / "trec.qa.csv"
    qa.write_text('who\t["(Ford"]\n')
    with pytest.raises(PipelineError, match=r"trec.qa.csv:1: answer 0 '\(Ford' is not a valid regular expression"):
        convert(tmp_path / "out", "--dpr-qa", str(qa), "--dpr-passages", str(MINI / "psgs.tsv"), "--answer-regex")
    assert not (tmp_path / "out").exists()


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


# ----------------------------------------------------------------------------- readers
def test_json_array_streamer_matches_json_load_with_tiny_chunks(tmp_path):
    import hashlib

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
    import hashlib

    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(PipelineError) as err:
        list(iter_json_array(path, "x.json", hashlib.sha256(), chunk_chars=4))
    assert expected in str(err.value), str(err.value)


def test_truncated_gzip_input_names_the_file(tmp_path):
    gz = gzip.compress((MINI / "psgs.tsv").read_bytes())
    (tmp_path / "psgs.tsv.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(PipelineError, match=r"psgs.tsv.gz:\d+: truncated or corrupt gzip"):
        convert(tmp_path / "out", "--dpr-qa", str(MINI / "test.qa.csv"), "--dpr-passages",
                str(tmp_path / "psgs.tsv.gz"))
    assert not (tmp_path / "out").exists()


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


def test_cli_rejects_dpr_flags_elsewhere_and_bad_splits(tmp_path):
    with pytest.raises(PipelineError, match="--dpr-train: only used with --source dpr"):
        D.main(["--name", "x", "--source", "local", "--path", "p", "--dpr-train", "t.json"])
    with pytest.raises(PipelineError, match="needs --dpr-dataset"):
        D.main(["--name", "x", "--source", "dpr", "--out", str(tmp_path / "o")])
    with pytest.raises(PipelineError, match="split name 'train' is taken"):
        convert(tmp_path / "o", "--dpr-train", str(MINI / "train.json"), "--dpr-qa", f"train={MINI / 'test.qa.csv'}")
    with pytest.raises(PipelineError, match="not both"):
        convert(tmp_path / "o", "--dpr-train", "a", "--tevatron-train", "b")
    assert P.parse_qa_args(["a.csv", "dev=b.csv"]) == {"test": "a.csv", "dev": "b.csv"}
    with pytest.raises(PipelineError, match="given twice"):
        P.parse_qa_args(["a.csv", "test=b.csv"])
    assert P.parse_qa_args(["https://x.org/q.csv?v=1"]) == {"test": "https://x.org/q.csv?v=1"}


def test_official_dataset_fills_in_urls(monkeypatch, tmp_path):
    seen = {}

    def fake_resolve(role, spec, **net):
        seen[role] = spec
        raise PipelineError("stop here")

    monkeypatch.setattr(P, "resolve_input", fake_resolve)
    with pytest.raises(PipelineError, match="stop here"):
        P.prepare_dpr("nq", tmp_path / "o", dataset="nq")
    assert seen == {"training file": "https://dl.fbaipublicfiles.com/dpr/data/retriever/biencoder-nq-train.json.gz"}
    assert P.OFFICIAL["curatedtrec"]["regex"] is True and P.PASSAGES_URL.endswith("/psgs_w100.tsv.gz")


def test_hard_negative_fallback_to_negative_ctxs(tmp_path):
    ctx = {"title": "T", "text": "t", "passage_id": "1"}
    rec = {"question": "q", "answers": ["a"], "positive_ctxs": [ctx],
           "negative_ctxs": [{**ctx, "passage_id": "2"}, {**ctx, "passage_id": "3"}], "hard_negative_ctxs": []}
    (tmp_path / "t.json").write_text(json.dumps([rec]))
    manifest = convert(tmp_path / "out", "--dpr-train", str(tmp_path / "t.json"))
    assert manifest["dpr"]["training"]["hard_negatives_from_negative_ctxs"] == 1
    row = json.loads((tmp_path / "out" / "hard_negatives" / "train.jsonl").read_text())
    assert row == {"query_id": "train-0", "negatives": ["2", "3"]}


def test_one_hard_negative_drawn_per_query_per_epoch(mini):
    from pipeline.training.hardneg import draw_per_epoch, load_hard_negatives

    out, _ = mini
    hn = load_hard_negatives(out / "hard_negatives" / "train.jsonl")
    e0 = draw_per_epoch(hn, seed=13, epoch=0)
    assert list(e0) == list(hn) and all(len(v) == 1 and v[0] in hn[q] for q, v in e0.items())
    assert e0 == draw_per_epoch(dict(reversed(list(hn.items()))), seed=13, epoch=0)  # order-independent
    e1 = draw_per_epoch(hn, seed=13, epoch=1)
    assert e1 != e0 and draw_per_epoch(hn, seed=14, epoch=0) != e0
    # over many epochs every candidate of a query is drawn
    assert {draw_per_epoch(hn, 13, e)["train-0"][0] for e in range(40)} == set(hn["train-0"])
    assert draw_per_epoch({"q": ["a"]}, 1, 0, k=2) == {"q": ["a"]}


def test_fixture_is_answerable_by_bm25(mini):
    """The fixture's questions can be answered from its passages: BM25 over question words finds
    an answer-bearing passage in the top 20 for most of them (what a retriever is measured on)."""
    import bm25s

    from pipeline.evaluation.protocols import get_protocol

    out, _ = mini
    ds = load_dataset(out)
    ids = list(ds.corpus)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([ds.corpus[d]["title"] + " " + ds.corpus[d]["text"] for d in ids],
                                   stopwords="en", show_progress=False), show_progress=False)
    proto = get_protocol("answers")(ds, "test")
    results = {}
    for qid in proto.query_ids():
        docs, scores = retriever.retrieve(bm25s.tokenize([ds.queries[qid]], stopwords="en", show_progress=False),
                                          k=100, show_progress=False)
        results[qid] = {ids[int(d)]: float(s) for d, s in zip(docs[0], scores[0])}
    metrics, _ = proto.evaluate(results)
    assert metrics["acc@100"] >= metrics["acc@20"] >= metrics["acc@5"] >= metrics["acc@1"]
    assert metrics["acc@20"] >= 0.8, metrics


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
