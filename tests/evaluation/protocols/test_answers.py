"""pipeline.evaluation.protocols.answers: DPR's Top-k answer accuracy on the committed dpr-mini
fixture (answers at known ranks, regex answers, unanswered questions, passages read from disk
when the corpus is not in memory)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.core.common import PipelineError
from pipeline.evaluation.protocols import get_protocol
from pipeline.sources.answer_matching import read_passage_texts
from pipeline.sources.datasets import load_dataset
from tests.sources.kinds.test_dpr import MINI, convert, mini  # noqa: F401  (fixture and helpers)


def test_answer_accuracy_protocol(mini):
    out, _ = mini
    ds = load_dataset(out)
    proto = get_protocol("answers")(ds, "test")
    assert proto.metric_keys == ("acc@1", "acc@5", "acc@20", "acc@100") and proto.per_query_metric == "acc@20"
    assert proto.headline == ("acc@20", "acc@100") and proto.depth == 100
    qids = proto.query_ids()
    assert len(qids) == 40 and qids[0] == "test-0"
    # Gold passage ids of the fixture: each fact's gold passage is followed by its 4 distractors.
    gold = {f"test-{i}": str(1 + 5 * i) for i in range(40)}
    fillers = [d for d in ds.corpus if int(d) > 200][:30]  # background passages, no answers
    results = {}
    for i, qid in enumerate(qids):
        if i < 10:     # gold at rank 0
            ranking = [gold[qid]] + fillers
        elif i < 20:   # gold at rank 3
            ranking = fillers[:3] + [gold[qid]] + fillers[3:]
        elif i < 30:   # gold at rank 10
            ranking = fillers[:10] + [gold[qid]] + fillers[10:]
        elif i < 35:   # gold beyond everything the metric reads
            ranking = fillers
        else:
            continue   # no ranking at all: unanswered
        results[qid] = {d: 100.0 - r for r, d in enumerate(ranking)}
    metrics, per_query = proto.evaluate(results)
    assert metrics == {"acc@1": 10 / 40, "acc@5": 20 / 40, "acc@20": 30 / 40, "acc@100": 30 / 40}
    assert per_query["test-0"] == 1.0 and per_query["test-25"] == 1.0 and per_query["test-31"] == 0.0
    assert per_query["test-39"] == 0.0 and len(per_query) == 40


def test_answer_protocol_regex_and_missing_split(tmp_path):
    convert(tmp_path / "out", "--dpr-qa", str(MINI / "curatedtrec-test.qa.csv"), "--dpr-passages",
            str(MINI / "psgs.tsv"), "--answer-regex")
    ds = load_dataset(tmp_path / "out")
    proto = get_protocol("answers")(ds, "test")
    # test-0 "(Neil )?Armstrong" is in passage 26 (Apollo 11); test-6 "^tokyo\b" in passage 71.
    metrics, per_query = proto.evaluate({"test-0": {"2": 3.0, "26": 2.0}, "test-6": {"71": 1.0}})
    assert per_query["test-0"] == 1.0 and per_query["test-6"] == 1.0 and metrics["acc@1"] == 1 / 10
    with pytest.raises(PipelineError, match="not answer-evaluated"):
        get_protocol("answers")(ds, "dev")
    with pytest.raises(PipelineError, match=r"doc ids \[.nope.\] that are not in .*corpus.jsonl"):
        proto.evaluate({"test-0": {"nope": 1.0}})


def test_protocol_streams_texts_when_the_corpus_is_not_in_memory(mini):
    out, _ = mini
    ds = load_dataset(out)
    texts = read_passage_texts(out / "corpus.jsonl", ["9002", "1", "absent"])
    assert texts == {"1": ds.corpus["1"]["text"], "9002": ds.corpus["9002"]["text"]}
    results = {f"test-{i}": {str(1 + 5 * i): 2.0, "300": 1.0} for i in range(0, 40, 3)}
    eager = get_protocol("answers")(ds, "test").evaluate(results)
    lazy = get_protocol("answers")(replace(ds, corpus={}), "test").evaluate(results)
    assert eager == lazy and eager[0]["acc@1"] == 14 / 40
