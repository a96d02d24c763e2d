"""pipeline.sources.prepare: validation of BEIR-format input (every error names file:line), normalised output,
manifest, atomic replacement, and the local / embedded sources."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.sources import beir_folder, lines as line_reader, prepare as D
from pipeline.core.common import PipelineError, sha256_file
from pipeline.sources.datasets import load_dataset

REPO = Path(__file__).resolve().parents[2]

CORPUS = [
    {"_id": "d1", "title": "Apples", "text": "Apples are red fruit.", "metadata": {"x": 1}},
    {"_id": "d2", "title": "Bananas", "text": "Bananas are yellow fruit."},
    {"_id": "d3", "text": "Cherries are small."},
    {"_id": "d4", "title": "Dates", "text": "Dates are sweet."},
]
QUERIES = [
    {"_id": "q1", "text": "which fruit is red", "metadata": {}},
    {"_id": "q2", "text": "yellow fruit"},
    {"_id": "q3", "text": "small fruit"},
]
TRAIN = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n"
TEST = "query-id\tcorpus-id\tscore\nq3\td3\t1\nq3\td4\t0\n"


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def make_beir(root: Path, **overrides) -> Path:
    """Write a small valid BEIR folder; an override (file relpath -> str/bytes/None) replaces or,
    with None, deletes that file."""
    files = {"corpus.jsonl": jsonl(CORPUS), "queries.jsonl": jsonl(QUERIES),
             "qrels/train.tsv": TRAIN, "qrels/test.tsv": TEST}
    files.update(overrides)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        if content is None:
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return root


def corpus_with(line2: str) -> str:
    """The valid corpus with its second line replaced by `line2`."""
    lines = jsonl(CORPUS).splitlines(keepends=True)
    lines[1] = line2 + "\n"
    return "".join(lines)


# (case id, file overrides, expected location "file:line", expected words in the message)
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


def test_several_errors_are_reported_together(tmp_path):
    root = make_beir(tmp_path / "ds", **{"corpus.jsonl": corpus_with("not json"),
                                         "qrels/test.tsv": TEST + "q3\td3\tx\n"})
    with pytest.raises(PipelineError) as info:
        D.read_beir_folder(root)
    msg = str(info.value)
    assert msg.startswith("2 problems in")
    assert "corpus.jsonl:2: invalid JSON" in msg and "qrels/test.tsv:4: score 'x'" in msg


def test_error_count_is_capped(tmp_path):
    rows = "".join(f"q1\tmissing{i}\t1\n" for i in range(line_reader.MAX_ERRORS + 5))
    root = make_beir(tmp_path / "ds", **{"qrels/train.tsv": "query-id\tcorpus-id\tscore\n" + rows})
    with pytest.raises(PipelineError, match=r"and 5 more") as info:
        D.read_beir_folder(root)
    assert str(info.value).count("is not in") == line_reader.MAX_ERRORS


def test_tolerated_variants(tmp_path):
    """CRLF line endings (as in BEIR's own SciFact qrels), a UTF-8 BOM, blank lines, numeric ids,
    a null title, an exact duplicate qrels row and an empty document text all load."""
    corpus = ('\ufeff{"_id": 1, "title": null, "text": ""}\n\n' + jsonl(CORPUS)).encode("utf-8")
    train = TRAIN.replace("\n", "\r\n") + "q1\td1\t1\r\n" + "q2\t1\t2\r\n"
    root = make_beir(tmp_path / "ds", **{"corpus.jsonl": corpus, "qrels/train.tsv": train})
    data = D.read_beir_folder(root)
    assert data.corpus["1"] == {"_id": "1", "title": "", "text": ""}
    assert data.qrels["train"] == {"q1": {"d1": 1}, "q2": {"d2": 1, "1": 2}}


def test_normalized_output_and_manifest(tmp_path):
    src = make_beir(tmp_path / "src")
    out = tmp_path / "out"
    manifest = D.prepare_local("toy", src, out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "corpus.jsonl", "manifest.json", "qrels/test.tsv", "qrels/train.tsv", "queries.jsonl"]
    first = json.loads((out / "corpus.jsonl").read_text().splitlines()[0])
    assert first == {"_id": "d1", "title": "Apples", "text": "Apples are red fruit."}  # metadata dropped
    assert json.loads((out / "corpus.jsonl").read_text().splitlines()[2])["title"] == ""
    assert json.loads((out / "queries.jsonl").read_text().splitlines()[0]) == {"_id": "q1", "text": "which fruit is red"}
    assert (out / "qrels/test.tsv").read_text() == TEST
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["name"] == "toy" and manifest["source"] == "local" and manifest["path"] == str(src)
    assert manifest["counts"] == {"docs": 4, "queries": 3, "splits": {
        "test": {"queries": 1, "pairs": 2, "relevant_pairs": 1},
        "train": {"queries": 2, "pairs": 2, "relevant_pairs": 2}}}
    assert manifest["input_sha256"]["corpus.jsonl"] == sha256_file(src / "corpus.jsonl")
    for rel, sha in manifest["output_sha256"].items():
        assert sha256_file(out / rel) == sha
    assert "created_at" not in json.dumps(manifest)
    ds = load_dataset(out)
    assert ds.qrels == {"test": {"q3": {"d3": 1, "d4": 0}}, "train": {"q1": {"d1": 1}, "q2": {"d2": 1}}}
    assert ds.manifest == manifest


def test_output_is_deterministic(tmp_path):
    src = make_beir(tmp_path / "src")
    D.prepare_local("toy", src, tmp_path / "a")
    D.prepare_local("toy", src, tmp_path / "b")
    for rel in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/test.tsv", "manifest.json"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_failure_keeps_existing_good_output(tmp_path):
    out = tmp_path / "results" / "toy"
    D.prepare_local("toy", make_beir(tmp_path / "good"), out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = make_beir(tmp_path / "bad", **{"qrels/test.tsv": TEST + "q3\tnope\t1\n"})
    with pytest.raises(PipelineError):
        D.prepare_local("toy", bad, out)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy"]  # no temp folders left


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "results" / "toy"
    D.prepare_local("toy", make_beir(tmp_path / "good"), out)
    good = (out / "manifest.json").read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(beir_folder, "write_normalized", boom)
    with pytest.raises(OSError):
        D.prepare_local("toy", make_beir(tmp_path / "good2"), out)
    assert (out / "manifest.json").read_bytes() == good
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy"]


def test_beir_loader_reads_the_output(tmp_path):
    from beir.datasets.data_loader import GenericDataLoader

    out = tmp_path / "out"
    D.prepare_local("toy", make_beir(tmp_path / "src"), out)
    corpus, queries, qrels = GenericDataLoader(str(out)).load(split="train")
    assert len(corpus) == 4 and set(queries) == {"q1", "q2"} and qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}


@pytest.mark.parametrize("argv,words", [
    (["--name", "../evil", "--source", "embedded"], "--name '../evil'"),
    (["--name", "nope", "--source", "embedded"], "no embedded dataset"),
    (["--name", "x", "--source", "local"], "--source local needs --path"),
    (["--name", "x", "--source", "embedded", "--path", "y"], "--path is only used with --source local"),
    (["--name", "x", "--source", "beir", "--sha256", "abc"], "expected 64 hex digits"),
])
def test_cli_argument_errors(tmp_path, argv, words):
    with pytest.raises(PipelineError, match=words.replace("(", r"\(")):
        D.main(argv + ["--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_cli_exit_code_and_help(tmp_path):
    root = make_beir(tmp_path / "ds", **{"corpus.jsonl": corpus_with("oops")})
    run = subprocess.run([sys.executable, "-m", "pipeline.sources.prepare", "--name", "toy", "--source", "local",
                          "--path", str(root), "--out", str(tmp_path / "out")],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2
    assert f"error: {root}/corpus.jsonl:2: invalid JSON" in run.stderr
    assert "Traceback" not in run.stderr
    help_text = subprocess.run([sys.executable, "-m", "pipeline.sources.prepare", "--help"], cwd=REPO,
                               capture_output=True, text=True).stdout
    assert "{beir,local,embedded,dpr}" in help_text and "--cache-dir" in help_text


# ----------------------------------------------------------------------------- real data
MINI_COUNTS = {"docs": 1000, "queries": 400, "splits": {
    "test": {"queries": 100, "pairs": 115, "relevant_pairs": 115},
    "train": {"queries": 300, "pairs": 343, "relevant_pairs": 343}}}


def test_embedded_scifact_mini(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the embedded folder is found relative to the package, not the CWD
    manifest = D.main(["--name", "scifact-mini", "--source", "embedded", "--out", "results/data/scifact-mini"])
    assert manifest["counts"] == MINI_COUNTS
    assert manifest["path"] == "data/embedded/scifact-mini"
    ds = load_dataset(tmp_path / "results/data/scifact-mini")
    assert len(ds.corpus) == 1000 and len(ds.queries) == 400
    assert {s: (len(q), sum(map(len, q.values()))) for s, q in ds.qrels.items()} == {
        "train": (300, 343), "test": (100, 115)}
    # The committed files are already normalised, so normalising changes no byte.
    assert manifest["input_sha256"] == manifest["output_sha256"]
    files = [p for p in (REPO / "data/embedded/scifact-mini").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 2_000_000
    readme = (REPO / "data/embedded/scifact-mini/README.md").read_text()
    assert "CC BY-NC 2.0" in readme and "Wadden" in readme and "Thakur" in readme


@pytest.mark.shared
def test_local_full_scifact(shared_data, tmp_path):
    import time

    t0 = time.perf_counter()
    manifest = D.prepare_local("scifact", shared_data / "scifact", tmp_path / "scifact")
    assert time.perf_counter() - t0 < 10
    assert manifest["counts"]["docs"] == 5183
    assert manifest["counts"]["splits"]["test"] == {"queries": 300, "pairs": 339, "relevant_pairs": 339}
    assert manifest["counts"]["splits"]["train"] == {"queries": 809, "pairs": 919, "relevant_pairs": 919}
    # PROVENANCE.md's hashes: the shared files are the official BEIR ones.
    assert manifest["input_sha256"]["corpus.jsonl"].startswith("dec31c8182f3d744")
    assert manifest["input_sha256"]["qrels/test.tsv"].startswith("0864bb985e0ca236")
    ds = load_dataset(tmp_path / "scifact")
    assert len(ds.corpus) == 5183 and len(ds.split("test")) == 300 and len(ds.split("train")) == 809


@pytest.mark.shared
def test_scifact_mini_is_reproducible(shared_data, tmp_path):
    spec = importlib.util.spec_from_file_location("make_scifact_mini", REPO / "scripts/make_scifact_mini.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "mini"
    mod.main(["--source", str(shared_data / "scifact"), "--out", str(out)])
    committed = REPO / "data/embedded/scifact-mini"
    names = sorted(p.relative_to(committed).as_posix() for p in committed.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    for rel in names:
        assert (out / rel).read_bytes() == (committed / rel).read_bytes(), rel
