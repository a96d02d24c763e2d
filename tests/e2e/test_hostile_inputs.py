"""The hostile-input table (docs/reliability.md, "Bad input"): every row is a bad config, data file, archive or
model path that must fail with a clear error naming the file, line or key, and must leave the
finished results under results/ untouched."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.common import PipelineError
from tests.sources.test_download import GOOD, Server, beir_zip, jsonl

CORPUS = [{"_id": "d1", "title": "A", "text": "apples are red"}, {"_id": "d2", "title": "B", "text": "bananas"}]
QUERIES = [{"_id": "q1", "text": "red fruit"}, {"_id": "q2", "text": "yellow fruit"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n"


def dataset(root: Path, corpus=None, queries=None, qrels=None) -> Path:
    """A BEIR folder where any file can be replaced by raw bytes/text (None = the good one)."""
    (root / "qrels").mkdir(parents=True)
    files = {"corpus.jsonl": corpus if corpus is not None else jsonl(CORPUS),
             "queries.jsonl": queries if queries is not None else jsonl(QUERIES),
             "qrels/test.tsv": qrels if qrels is not None else QRELS}
    for rel, content in files.items():
        if content is False:
            continue
        path = root / rel
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return root


# ----------------------------------------------------------------------------- the cases
def cfg_case(mutation: dict, results):
    import yaml

    from pipeline.core import config as pcfg
    from conftest import REPO

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for path, value in mutation.items():
        node = cfg
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    target = results.parent / "bad.yaml"
    target.write_text(yaml.safe_dump(cfg))
    pcfg.load(target)


def yaml_syntax(results):
    from pipeline.core import config as pcfg

    target = results.parent / "broken.yaml"
    target.write_text("runs:\n  dpr-8: {method: inbatch\n")
    pcfg.load(target)


def local_data(results, **files):
    from pipeline.sources.prepare import main

    src = dataset(results.parent / "src", **files)
    main(["--name", "finished", "--source", "local", "--path", str(src), "--out", str(results / "data" / "finished")])


def archive(results, body: bytes, sha: str | None = None):
    from pipeline.sources.prepare import prepare_beir

    server = Server()
    try:
        url = server.url("/toyset.zip", body)
        prepare_beir("toyset", results / "data" / "finished", url=url, sha256=sha or hashlib.sha256(body).hexdigest(),
                     cache_dir=results.parent / "cache", retries=1, backoff=0.01, timeout=5, progress=False)
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def truncated_zip() -> bytes:
    return GOOD[: len(GOOD) // 2]


def traversal_zip() -> bytes:
    return beir_zip(extra={"../../evil.txt": b"owned"})


def model_path(results, value: str):
    from pipeline.models.encoder import BiEncoder, EncoderSpec

    BiEncoder.from_spec(EncoderSpec(model=value))


def model_file(results):
    path = results.parent / "weights.bin"
    path.write_bytes(b"\0" * 10)
    model_path(results, str(path))


def model_no_config(results):
    path = results.parent / "empty-model"
    path.mkdir()
    model_path(results, str(path))


def dpr_data(results, train=None, qa=None, passages=None, tevatron=None, regex=False, gz=()):
    """Run the dpr source on raw files (text, or None to leave the file out); `gz` names the
    files to store gzipped."""
    import gzip

    from pipeline.sources.prepare import main

    src = results.parent / "dprsrc"
    src.mkdir(exist_ok=True)
    args = []
    for flag, name, content in (("--dpr-train", "train.json", train), ("--dpr-qa", "test.qa.csv", qa),
                                ("--dpr-passages", "psgs.tsv", passages), ("--tevatron-train", "tev.jsonl", tevatron)):
        if content is None:
            continue
        raw = content.encode("utf-8") if isinstance(content, str) else content
        if name in gz:
            name += ".gz"
            raw = gzip.compress(raw, mtime=0)
            raw = raw[: len(raw) // 2]  # every gzip input here is a truncated download
        (src / name).write_bytes(raw)
        args += [flag, str(src / name)]
    main(["--name", "finished", "--source", "dpr", "--out", str(results / "data" / "finished"), *args,
          *(["--answer-regex"] if regex else [])])


CTX = {"title": "A", "text": "apples are red", "passage_id": "1"}
DPR_Q = {"question": "what is red", "answers": ["apples"], "positive_ctxs": [CTX], "negative_ctxs": [],
         "hard_negative_ctxs": []}
PSGS = "id\ttext\ttitle\n1\tapples are red\tA\n2\tbananas\tB\n"
QA_OK = 'what is red\t["apples"]\n'


def dpr_train(*records) -> str:
    """A DPR training JSON with one record per line after the '[' line: record i is on line i + 2."""
    return "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n"


def without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


HUGE = "x" * (11 * 1024 * 1024)

CASES = [
    # id, callable(results), expected substring of the error
    ("config-unknown-key", lambda r: cfg_case({"runs.dpr-8.bogus": 1}, r), "runs.dpr-8: unknown key(s) ['bogus']"),
    ("config-wrong-type", lambda r: cfg_case({"seeds": "many"}, r), "config key seeds"),
    ("config-lambda-range", lambda r: cfg_case({"evaluation.lambdas": [2.0]}, r), "evaluation.lambdas[0]"),
    ("config-index-type", lambda r: cfg_case({"index.index_types": ["flat", "annoy"]}, r), "index.index_types[1]"),
    ("config-unknown-method", lambda r: cfg_case({"runs.dpr-8.method": "moco"}, r), "runs.dpr-8.method"),
    ("config-yaml-syntax", yaml_syntax, "broken.yaml:"),
    ("corpus-malformed-json", lambda r: local_data(r, corpus='{"_id": "d1", "text": "ok"}\n{"_id": "d2", \n'),
     "corpus.jsonl:2"),
    ("queries-missing-id", lambda r: local_data(r, queries='{"_id": "q1", "text": "a"}\n{"text": "b"}\n'),
     "queries.jsonl:2"),
    ("corpus-missing-text", lambda r: local_data(r, corpus='{"_id": "d1", "title": "t"}\n'), "corpus.jsonl:1"),
    ("corpus-wrong-encoding", lambda r: local_data(r, corpus=b'{"_id": "d1", "text": "caf\xe9"}\n'), "corpus.jsonl:1"),
    ("corpus-truncated", lambda r: local_data(r, corpus=jsonl(CORPUS)[:-15]), "corpus.jsonl:2"),
    ("corpus-huge-line", lambda r: local_data(r, corpus=jsonl(CORPUS) + json.dumps({"_id": "d9", "text": HUGE})),
     "corpus.jsonl:3"),
    ("corpus-duplicate-id", lambda r: local_data(r, corpus=jsonl(CORPUS + CORPUS[:1])), "corpus.jsonl:3"),
    ("corpus-missing-file", lambda r: local_data(r, corpus=False), "corpus.jsonl"),
    ("qrels-unknown-doc", lambda r: local_data(r, qrels=QRELS + "q1\tdX\t1\n"), "test.tsv:4"),
    ("qrels-missing-header", lambda r: local_data(r, qrels="q1\td1\t1\n"), "test.tsv:1"),
    ("qrels-empty-split", lambda r: local_data(r, qrels="query-id\tcorpus-id\tscore\n"), "test.tsv"),
    ("qrels-bad-score", lambda r: local_data(r, qrels=QRELS + "q1\td2\thigh\n"), "test.tsv:4"),
    ("archive-path-traversal", lambda r: archive(r, traversal_zip()), "evil.txt"),
    ("archive-truncated-zip", lambda r: archive(r, truncated_zip()), "toyset.zip"),
    ("archive-wrong-checksum", lambda r: archive(r, GOOD, sha="0" * 64), "sha256"),
    ("dpr-train-missing-field",
     lambda r: dpr_data(r, train=dpr_train(DPR_Q, without(DPR_Q, "hard_negative_ctxs")), passages=PSGS),
     "train.json:3: element 1: missing 'hard_negative_ctxs'"),
    ("dpr-ctx-without-text",
     lambda r: dpr_data(r, train=dpr_train({**DPR_Q, "positive_ctxs": [without(CTX, "text")]}), passages=PSGS),
     "train.json:2: element 0: positive_ctxs[0]: passage without 'text'"),
    ("dpr-train-truncated", lambda r: dpr_data(r, train=dpr_train(DPR_Q, DPR_Q)[:-30], passages=PSGS),
     "train.json:3: element 1 (starting on line 3): file ends inside this element"),
    ("dpr-qa-bad-answers-list", lambda r: dpr_data(r, qa=QA_OK + 'what is yellow\t{"a": "bananas"}\n',
                                                   passages=PSGS),
     "test.qa.csv:2: answers column must be a non-empty list of strings"),
    ("dpr-qa-answer-not-string", lambda r: dpr_data(r, qa=QA_OK + 'what is yellow\t["bananas", 3]\n', passages=PSGS),
     "test.qa.csv:2: answer 1 is int, not a string"),
    ("dpr-qa-answers-not-a-list", lambda r: dpr_data(r, qa=QA_OK + 'what is yellow\tbananas\n', passages=PSGS),
     "test.qa.csv:2: answers column is not a list literal"),
    ("dpr-qa-wrong-column-count", lambda r: dpr_data(r, qa=QA_OK + 'what is yellow\t["bananas"]\textra\n',
                                                     passages=PSGS),
     "test.qa.csv:2: expected 2 tab-separated columns (question, answers list), got 3"),
    ("dpr-qa-bad-regex", lambda r: dpr_data(r, qa='who\t["(Ford"]\n', passages=PSGS, regex=True),
     "test.qa.csv:1: answer 0 '(Ford' is not a valid regular expression"),
    ("dpr-passages-wrong-column-count", lambda r: dpr_data(r, qa=QA_OK, passages=PSGS + "3\tcherries\n"),
     "psgs.tsv:4: expected 3 tab-separated columns (id, text, title), got 2"),
    ("dpr-passages-duplicate-id", lambda r: dpr_data(r, qa=QA_OK, passages=PSGS + "2\tbananas again\tB\n"),
     "psgs.tsv:4: duplicate passage id '2'"),
    ("dpr-passages-truncated-gzip", lambda r: dpr_data(r, qa=QA_OK, passages=PSGS * 1 + "".join(
        f"{i}\tpassage number {i}\tT\n" for i in range(3, 3000)), gz=("psgs.tsv",)), "psgs.tsv.gz:"),
    ("tevatron-missing-field", lambda r: dpr_data(r, tevatron=json.dumps(
        {"query": "q", "positive_passages": [{"docid": "1", "text": "t"}], "negative_passages": []}) + "\n"
        + json.dumps({"query": "q2", "negative_passages": []}) + "\n"), "tev.jsonl:2: missing 'positive_passages'"),
    ("tevatron-passage-without-text", lambda r: dpr_data(r, tevatron=json.dumps(
        {"query": "q", "positive_passages": [{"docid": "1"}], "negative_passages": []}) + "\n"),
     "tev.jsonl:1: positive_passages[0]: passage without 'text'"),
    ("model-missing-folder", lambda r: model_path(r, "./no/such/model"), "encoder.model: folder ./no/such/model"),
    ("model-is-a-file", model_file, "is a file"),
    ("model-no-config", model_no_config, "has no config.json"),
    ("model-unknown-hub-id", lambda r: model_path(r, "someone/not-cached-model"), "not in the Hugging Face cache"),
]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_results(tmp_path) -> Path:
    """A results/ folder holding finished outputs that no failure may touch."""
    from pipeline.sources.prepare import prepare_local

    results = tmp_path / "results"
    prepare_local("finished", dataset(tmp_path / "good"), results / "data" / "finished")
    (results / "tables").mkdir(parents=True)
    (results / "tables" / "summary.csv").write_text("dataset,run,seed,scoring,ndcg@10\nx,y,1,dot,0.5\n")
    return results


@pytest.mark.parametrize("case,expected", [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_clearly_and_keeps_results(case, expected, finished_results, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = snapshot(finished_results)
    with pytest.raises(PipelineError) as err:
        case(finished_results)
    assert expected in str(err.value), str(err.value)
    assert snapshot(finished_results) == before
    leftovers = [p.name for p in (finished_results / "data").iterdir() if p.name.startswith(".")]
    assert not leftovers, f"temporary outputs left behind: {leftovers}"


def test_table_has_at_least_twenty_rows():
    assert len(CASES) >= 20


def test_cli_prints_one_line_error_and_exits_2(tmp_path):
    src = dataset(tmp_path / "src", corpus='{"_id": "d1"}\n')
    proc = subprocess.run([sys.executable, "-m", "pipeline.sources.prepare", "--name", "x", "--source", "local", "--path",
                           str(src), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "corpus.jsonl:1" in proc.stderr
    assert "Traceback" not in proc.stderr
