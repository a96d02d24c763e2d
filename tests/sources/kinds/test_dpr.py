"""pipeline.sources.kinds.dpr: DPR-format and Tevatron files -> the normalised layout (+ answers, hard
negatives) on the committed fixture (tests/evaluation/protocols/test_answers.py scores it)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from pipeline.sources import prepare as D
from pipeline.sources.kinds import dpr as P
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


def test_truncated_gzip_input_names_the_file(tmp_path):
    gz = gzip.compress((MINI / "psgs.tsv").read_bytes())
    (tmp_path / "psgs.tsv.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(PipelineError, match=r"psgs.tsv.gz:\d+: truncated or corrupt gzip"):
        convert(tmp_path / "out", "--dpr-qa", str(MINI / "test.qa.csv"), "--dpr-passages",
                str(tmp_path / "psgs.tsv.gz"))
    assert not (tmp_path / "out").exists()


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
