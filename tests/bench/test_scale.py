"""pipeline.bench.scale: the synthetic corpus is a valid normalised dataset whose queries point at
their passage, a measured step reports its own peak memory (not the parent's), and the outputs
hold one row per size."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from pipeline.bench import scale
from pipeline.sources.datasets import load_dataset


def test_synthetic_corpus_is_a_dataset_with_answerable_queries(tmp_path):
    ds = load_dataset(scale.make_corpus(tmp_path / "data", num_docs=50, num_queries=5, vocab=100))
    assert len(ds.corpus) == 50 and len(ds.queries) == 5
    for qid, docs in ds.split("test").items():
        (doc,) = docs
        assert doc == "d" + qid[1:] and ds.corpus[doc]["text"].startswith(ds.queries[qid])
    again = scale.make_corpus(tmp_path / "again", num_docs=50, num_queries=5, vocab=100)
    assert (again / "corpus.jsonl").read_bytes() == (tmp_path / "data" / "corpus.jsonl").read_bytes()


def test_measure_reports_the_childs_own_peak_and_failures(tmp_path):
    big = scale.measure([sys.executable, "-c", "x = bytearray(200 * 2**20); x[::4096] = b'1' * len(x[::4096])"],
                        tmp_path / "big.log")
    small = scale.measure([sys.executable, "-c", "pass"], tmp_path / "small.log")
    assert big["peak_rss_mb"] - small["peak_rss_mb"] > 150 and small["peak_rss_mb"] < 100
    assert big["seconds"] > 0
    with pytest.raises(RuntimeError, match=r"failed \(3\); see .*bad.log"):
        scale.measure([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], tmp_path / "bad.log")
    assert "boom" in (tmp_path / "bad.log").read_text()


def test_outputs_hold_one_row_per_size(tmp_path):
    rows = [{"passages": n, "embeddings_mb": n / 1000, **{f"{s}_s": n / 100 for s in scale.STEPS},
             **{f"{s}_rss_mb": 300 + n / 100 for s in scale.STEPS}} for n in (1000, 10000)]
    scale.write_outputs(rows, tmp_path)
    assert pd.read_csv(tmp_path / "scale.csv").passages.tolist() == [1000, 10000]
    assert (tmp_path / "scale.md").read_text().split("|")[1].strip() == "passages"
    assert (tmp_path / "scale.png").read_bytes()[:4] == b"\x89PNG"
