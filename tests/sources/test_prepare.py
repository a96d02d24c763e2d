"""pipeline.sources.prepare: normalised output, manifest, atomic replacement and the command line
(the BEIR-format checks are in test_beir_folder, the sources in kinds/)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.sources import beir_folder, prepare as D
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
