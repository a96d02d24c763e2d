"""pipeline.sources.kinds.local: a BEIR-format folder on disk normalised with its path recorded;
the full SciFact from the shared data folder, fast and with the official hashes."""

from __future__ import annotations

import argparse

import pytest

from pipeline.core.common import PipelineError
from pipeline.sources import prepare as D
from pipeline.sources.datasets import load_dataset
from pipeline.sources.kinds.local import LocalSource, prepare_local
from tests.sources.test_prepare import make_beir


def test_a_local_folder_is_normalised_with_its_path(tmp_path):
    src = make_beir(tmp_path / "src")
    manifest = prepare_local("toy", src, tmp_path / "out")
    assert manifest["source"] == "local" and manifest["path"] == str(src) and manifest["name"] == "toy"
    assert sorted(load_dataset(tmp_path / "out").qrels) == ["test", "train"]
    with pytest.raises(PipelineError, match="--source local needs --path"):
        LocalSource().prepare("toy", str(tmp_path / "o2"), argparse.Namespace(path=None), None)


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
