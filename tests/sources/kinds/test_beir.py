"""pipeline.sources.kinds.beir: a BEIR zip from a real HTTP server on 127.0.0.1 normalised, its
checksum recorded, the download cached; the same through the command line."""

from __future__ import annotations

import json

from pipeline.sources import prepare as D
from tests.sources.test_download import GOOD, GOOD_SHA, TEST, fetch, server  # noqa: F401  (fixture and helpers)


def test_good_checksum_normalises_and_caches(server, tmp_path):
    url = server.url("/good/toyset.zip", GOOD)
    manifest = fetch(tmp_path, url, sha256=GOOD_SHA)
    out = tmp_path / "out"
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["source"] == "beir" and manifest["url"] == url and manifest["zip_sha256"] == GOOD_SHA
    assert manifest["checksum_verified"] == ["sha256"]
    assert manifest["counts"]["docs"] == 4 and manifest["counts"]["splits"]["train"]["pairs"] == 2
    assert set(manifest["input_sha256"]) == {"toyset/corpus.jsonl", "toyset/queries.jsonl",
                                             "toyset/qrels/test.tsv", "toyset/qrels/train.tsv"}
    assert (out / "qrels/test.tsv").read_text() == TEST
    cached = [p for p in (tmp_path / "cache").iterdir()]
    assert len(cached) == 1 and cached[0].suffix == ".zip"  # no .part file, no extraction folder
    # A second run reuses the cache instead of downloading again.
    fetch(tmp_path, url, sha256=GOOD_SHA)
    assert server.hits["/good/toyset.zip"] == 1


def test_cli_beir_source(server, tmp_path):
    url = server.url("/cli/toyset.zip", GOOD)
    manifest = D.main(["--name", "toyset", "--source", "beir", "--url", url, "--sha256", GOOD_SHA,
                       "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
                       "--retries", "0", "--no-progress"])
    assert manifest["url"] == url and (tmp_path / "out" / "corpus.jsonl").is_file()
