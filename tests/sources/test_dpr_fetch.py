"""pipeline.sources.dpr_fetch, the dpr source's download path, against a real HTTP server on
127.0.0.1: the checksum lock file (recorded on first download, verified on every later use),
pinned checksums, truncated gzip, unreachable hosts. Every failure is a clear error and leaves
nothing partial: no cache file, no lock entry, no output folder."""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
from pathlib import Path

import pytest

from pipeline.sources import dpr_fetch
from pipeline.sources.kinds import dpr as P
from pipeline.core.common import PipelineError
from tests.sources.test_download import server  # noqa: F401  (the 127.0.0.1 server fixture)

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "data" / "embedded" / "dpr-mini"
PSGS_GZ = gzip.compress((MINI / "psgs.tsv").read_bytes(), mtime=0)
QA = (MINI / "test.qa.csv").read_bytes()


def run(tmp_path, passages_url, qa_url=None, **kw):
    kw.setdefault("retries", 1)
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 5)
    return P.prepare_dpr("mini", tmp_path / "out", qa={"test": qa_url or str(MINI / "test.qa.csv")},
                         passages=passages_url, cache_dir=tmp_path / "cache", lock_file=tmp_path / "checksums.lock",
                         progress=False, **kw)


def cache_files(tmp_path) -> list[str]:
    folder = tmp_path / "cache"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def lock_entries(tmp_path) -> dict:
    return dpr_fetch.read_lock(tmp_path / "checksums.lock")


def test_first_download_records_lock_and_later_uses_verify(server, tmp_path):
    url = server.url("/good/psgs_w100.tsv.gz", PSGS_GZ)
    qa_url = server.url("/good/nq-test.qa.csv", QA)
    manifest = run(tmp_path, url, qa_url)
    assert manifest["counts"]["docs"] == 300 and manifest["counts"]["answers"]["test"]["questions"] == 40
    entries = lock_entries(tmp_path)
    assert entries[url]["sha256"] == hashlib.sha256(PSGS_GZ).hexdigest() and entries[url]["bytes"] == len(PSGS_GZ)
    assert entries[qa_url]["sha256"] == hashlib.sha256(QA).hexdigest()
    assert manifest["inputs"]["passages"] == url
    assert all(not n.startswith(".") for n in cache_files(tmp_path)) and len(cache_files(tmp_path)) == 2
    # A second run verifies the cached copies against the lock and downloads nothing.
    before = (tmp_path / "checksums.lock").read_bytes()
    run(tmp_path, url, qa_url)
    assert server.hits["/good/psgs_w100.tsv.gz"] == 1 and (tmp_path / "checksums.lock").read_bytes() == before
    # A damaged cached copy is downloaded again and checked against the recorded sha256.
    cached = next((tmp_path / "cache").glob("*psgs_w100.tsv.gz"))
    cached.write_bytes(b"garbage")
    run(tmp_path, url, qa_url)
    assert server.hits["/good/psgs_w100.tsv.gz"] == 2 and cached.read_bytes() == PSGS_GZ


def test_checksum_mismatch_against_the_lock_leaves_nothing(server, tmp_path):
    url = server.url("/changed/psgs_w100.tsv.gz", PSGS_GZ)
    recorded = "0" * 64
    (tmp_path / "checksums.lock").write_text(json.dumps({"files": {url: {"sha256": recorded, "bytes": 1}}}))
    before = (tmp_path / "checksums.lock").read_bytes()
    with pytest.raises(PipelineError) as err:
        run(tmp_path, url)
    msg = str(err.value)
    assert f"checksum mismatch for {url}: sha256 expected {recorded}" in msg
    assert "recorded in" in msg and hashlib.sha256(PSGS_GZ).hexdigest() in msg and "deleted" in msg
    assert cache_files(tmp_path) == [] and not (tmp_path / "out").exists()
    assert (tmp_path / "checksums.lock").read_bytes() == before


def test_pinned_checksum_wins_over_the_lock(server, tmp_path, monkeypatch):
    url = server.url("/pinned/psgs_w100.tsv.gz", PSGS_GZ)
    monkeypatch.setitem(dpr_fetch.PINNED_SHA256, url, "f" * 64)
    with pytest.raises(PipelineError, match=r"sha256 expected f{64} \(pinned in pipeline/sources/dpr_fetch.py\)"):
        run(tmp_path, url)
    monkeypatch.setitem(dpr_fetch.PINNED_SHA256, url, hashlib.sha256(PSGS_GZ).hexdigest())
    run(tmp_path, url)
    assert url not in lock_entries(tmp_path)  # a pinned file needs no lock entry


def test_truncated_gzip_is_refused_before_it_is_recorded(server, tmp_path):
    # The server sends every byte it announces, so the transfer itself looks fine; the gzip
    # stream inside is cut off. Nothing may be recorded for it, or every later use would
    # "verify" the broken file.
    url = server.url("/trunc/psgs_w100.tsv.gz", PSGS_GZ[: len(PSGS_GZ) // 2])
    with pytest.raises(PipelineError) as err:
        run(tmp_path, url)
    assert f"{url}: truncated or corrupt gzip" in str(err.value)
    assert cache_files(tmp_path) == [] and not (tmp_path / "out").exists()
    assert not (tmp_path / "checksums.lock").exists()


def test_dropped_connection_gives_up_cleanly(server, tmp_path):
    url = server.url("/short/psgs_w100.tsv.gz", ("short", PSGS_GZ))
    with pytest.raises(PipelineError, match="gave up after 2 attempts"):
        run(tmp_path, url)
    assert cache_files(tmp_path) == [] and not (tmp_path / "checksums.lock").exists()


def test_unreachable_host(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}/psgs_w100.tsv.gz"
    with pytest.raises(PipelineError, match="cannot reach") as err:
        run(tmp_path, url, retries=3, backoff=5)
    assert url in str(err.value)
    assert cache_files(tmp_path) == [] and not (tmp_path / "out").exists()
    assert not (tmp_path / "checksums.lock").exists()


def test_bad_lock_file_is_a_clear_error(server, tmp_path):
    url = server.url("/badlock/psgs_w100.tsv.gz", PSGS_GZ)
    (tmp_path / "checksums.lock").write_text("{not json\n")
    with pytest.raises(PipelineError, match=r"checksums.lock:1: invalid JSON"):
        run(tmp_path, url)
    assert cache_files(tmp_path) == []


def test_committed_lock_file_is_valid():
    assert isinstance(dpr_fetch.read_lock(dpr_fetch.DEFAULT_LOCK), dict)
