"""pipeline.sources.kinds.embedded: the datasets shipped under data/embedded/ prepared from any
working directory, already normalised; an unknown name lists the available ones."""

from __future__ import annotations

import pytest

from pipeline.core.common import PipelineError
from pipeline.sources import prepare as D
from pipeline.sources.datasets import load_dataset
from pipeline.sources.kinds.embedded import EMBEDDED_ROOT, prepare_embedded
from tests.sources.test_prepare import REPO


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


def test_unknown_name_lists_the_embedded_datasets(tmp_path):
    with pytest.raises(PipelineError, match=r"--name 'nope': no embedded dataset at .*available: \[.*'scifact-mini'"):
        prepare_embedded("nope", tmp_path / "out")
    assert (EMBEDDED_ROOT / "dpr-mini").is_dir() and not (tmp_path / "out").exists()
