"""pipeline.training.hardneg: BM25 hard negatives exclude relevant docs, follow BM25 order, are
deterministic, and round-trip through load_hard_negatives."""

from __future__ import annotations

import json

import pytest

from pipeline.sources import prepare as D
from pipeline.training import hardneg as H
from pipeline.core.common import PipelineError
from pipeline.sources.datasets import load_dataset, training_examples


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "scifact-mini"
    D.prepare_embedded("scifact-mini", out)
    return out


def test_scifact_mini_negatives(mini, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    argv = ["--dataset", str(mini), "--split", "train", "--top-k", "20"]
    H.main(argv + ["--out", str(a)])
    H.main(argv + ["--out", str(b)])
    assert a.read_bytes() == b.read_bytes()  # deterministic across runs

    ds = load_dataset(mini)
    split = ds.split("train")
    negs = H.load_hard_negatives(a)
    assert list(negs) == list(split)  # every train query, in qrels order
    for qid, docs in negs.items():
        relevant = {d for d, g in split[qid].items() if g > 0}
        assert not relevant & set(docs), qid
        assert len(docs) == len(set(docs)) <= 20
        assert all(d in ds.corpus for d in docs)
    assert sum(len(v) == 20 for v in negs.values()) >= 0.95 * len(negs)

    examples = training_examples(ds, "train", hard_negatives=negs, per_query=1)
    assert len(examples) == 343 and all(len(e.negatives) == 1 for e in examples)


def test_ranking_follows_bm25_and_skips_relevant_and_zero_scores():
    corpus = {
        "rel": {"title": "", "text": "zebra stripes zebra"},
        "hard": {"title": "zebra", "text": "zebra zebra stripes"},
        "mid": {"title": "", "text": "stripes on a shirt and more words here"},
        "none": {"title": "", "text": "completely unrelated text"},
        "judged0": {"title": "", "text": "zebra in a zoo"},
    }
    queries = {"q": "zebra stripes", "empty": "the and of"}
    split = {"q": {"rel": 1, "judged0": 0}, "empty": {"rel": 1}}
    rows = H.mine(corpus, queries, split, top_k=10)
    assert rows[0]["query_id"] == "q"
    negatives = rows[0]["negatives"]
    assert "rel" not in negatives and "none" not in negatives  # relevant / no shared term
    assert negatives[0] == "hard" and set(negatives) == {"hard", "mid", "judged0"}  # grade 0 stays eligible
    assert rows[1] == {"query_id": "empty", "negatives": []}  # only stop words: nothing is "hard"
    assert H.mine(corpus, queries, split, top_k=1)[0]["negatives"] == ["hard"]


def test_ties_break_by_corpus_order():
    corpus = {f"d{i}": {"title": "", "text": "same words"} for i in range(5)}
    rows = H.mine(corpus, {"q": "same"}, {"q": {"d2": 1}}, top_k=3)
    assert rows[0]["negatives"] == ["d0", "d1", "d3"]


def test_bad_arguments_and_files(tmp_path, mini):
    with pytest.raises(PipelineError, match="--top-k"):
        H.mine({"d": {"title": "", "text": "x"}}, {"q": "x"}, {"q": {}}, top_k=0)
    with pytest.raises(PipelineError, match="no qrels split 'dev'"):
        H.main(["--dataset", str(mini), "--split", "dev", "--out", str(tmp_path / "x.jsonl")])
    assert not (tmp_path / "x.jsonl").exists()
    with pytest.raises(PipelineError, match="not found"):
        H.load_hard_negatives(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query_id": "q", "negatives": ["a"]}) + "\n{oops\n")
    with pytest.raises(PipelineError, match=f"{bad}:2: invalid JSON"):
        H.load_hard_negatives(bad)
    bad.write_text(json.dumps({"query_id": "q", "negatives": "a"}) + "\n")
    with pytest.raises(PipelineError, match=f"{bad}:1: 'negatives' must be a list"):
        H.load_hard_negatives(bad)
    bad.write_text(json.dumps({"query_id": "q", "negatives": []}) + "\n" + json.dumps({"query_id": "q", "negatives": []}) + "\n")
    with pytest.raises(PipelineError, match=f"{bad}:2: duplicate query_id 'q'"):
        H.load_hard_negatives(bad)
