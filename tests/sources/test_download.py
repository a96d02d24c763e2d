"""pipeline.sources.download, through the beir source, against a real HTTP server on 127.0.0.1:
checksums, a damaged cache downloaded again, retries, damaged archives, unreachable hosts. Nothing
here touches the internet."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest

from pipeline.sources import prepare as D
from pipeline.core.common import PipelineError

CORPUS = [{"_id": "d1", "title": "Apples", "text": "Apples are red."},
          {"_id": "d2", "title": "Bananas", "text": "Bananas are yellow."},
          {"_id": "d3", "text": "Cherries are small."},
          {"_id": "d4", "title": "Dates", "text": "Dates are sweet."}]
QUERIES = [{"_id": "q1", "text": "red fruit"}, {"_id": "q2", "text": "yellow fruit"},
           {"_id": "q3", "text": "small fruit"}]
TRAIN = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n"
TEST = "query-id\tcorpus-id\tscore\nq3\td3\t1\nq3\td4\t0\n"


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def beir_zip(name: str = "toyset", extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{name}/", b"")
        zf.writestr(f"{name}/corpus.jsonl", jsonl(CORPUS))
        zf.writestr(f"{name}/queries.jsonl", jsonl(QUERIES))
        zf.writestr(f"{name}/qrels/train.tsv", TRAIN)
        zf.writestr(f"{name}/qrels/test.tsv", TEST)
        for member, content in (extra or {}).items():
            zf.writestr(member, content)
    return buf.getvalue()


GOOD = beir_zip()
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


class Server:
    """Routes: path -> list of responses, served in turn (the last one repeats). A response is
    bytes (200 with that body), an int (that status), or ("short", body) for a body cut off
    before its announced Content-Length."""

    def __init__(self):
        self.routes: dict[str, list] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                n = server.hits.get(self.path, 0)
                server.hits[self.path] = n + 1
                plan = server.routes.get(self.path, [404])
                resp = plan[min(n, len(plan) - 1)]
                if isinstance(resp, int):
                    self.send_error(resp)
                    return
                short = isinstance(resp, tuple)
                body = resp[1] if short else resp
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if short else body)
                if short:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, *responses) -> str:
        self.routes[path] = list(responses)
        return self.base + path


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def fetch(tmp_path, url, **kw):
    kw.setdefault("retries", 2)
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 5)
    return D.prepare_beir("toyset", tmp_path / "out", url=url, cache_dir=tmp_path / "cache", progress=False, **kw)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_bad_checksum_leaves_nothing(server, tmp_path):
    url = server.url("/badsum/toyset.zip", GOOD)
    wrong = "0" * 64
    with pytest.raises(PipelineError) as info:
        fetch(tmp_path, url, sha256=wrong)
    msg = str(info.value)
    assert url in msg and f"expected {wrong}" in msg and f"got {GOOD_SHA}" in msg
    assert leftovers(tmp_path / "cache") == []
    assert not (tmp_path / "out").exists()


def test_md5_checksum_is_checked(server, tmp_path):
    url = server.url("/md5/toyset.zip", GOOD)
    with pytest.raises(PipelineError, match="md5 expected f{32}"):
        fetch(tmp_path, url, md5="f" * 32)
    manifest = fetch(tmp_path, url, md5=hashlib.md5(GOOD).hexdigest())
    assert manifest["checksum_verified"] == ["md5"]


def test_corrupt_cached_zip_is_downloaded_again(server, tmp_path):
    url = server.url("/recache/toyset.zip", GOOD)
    fetch(tmp_path, url, sha256=GOOD_SHA)
    cached = next((tmp_path / "cache").iterdir())
    cached.write_bytes(b"garbage")
    fetch(tmp_path, url, sha256=GOOD_SHA)
    assert server.hits["/recache/toyset.zip"] == 2 and cached.read_bytes() == GOOD


def test_path_traversal_entry_is_rejected(server, tmp_path):
    evil = beir_zip(extra={"toyset/../../evil.txt": b"pwned"})
    url = server.url("/evil/toyset.zip", evil)
    with pytest.raises(PipelineError, match=r"unsafe entry 'toyset/\.\./\.\./evil\.txt'"):
        fetch(tmp_path, url, sha256=hashlib.sha256(evil).hexdigest())
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "cache" / "evil.txt").exists()
    assert not (tmp_path / "out").exists()
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".zip"]  # the extraction folder is gone


def test_truncated_zip_is_a_clear_error(server, tmp_path):
    url = server.url("/trunc/toyset.zip", GOOD[: len(GOOD) // 2])
    with pytest.raises(PipelineError, match="corrupt or truncated zip") as info:
        fetch(tmp_path, url)  # no checksum known for a custom URL, so the damage shows at extraction
    assert url in str(info.value)
    assert not (tmp_path / "out").exists()


def test_transient_503_is_retried(server, tmp_path):
    url = server.url("/flaky/toyset.zip", 503, 503, GOOD)
    manifest = fetch(tmp_path, url, sha256=GOOD_SHA, retries=3)
    assert server.hits["/flaky/toyset.zip"] == 3
    assert manifest["counts"]["docs"] == 4


def test_dropped_connection_is_retried_then_gives_up(server, tmp_path):
    url = server.url("/short/toyset.zip", ("short", GOOD))
    with pytest.raises(PipelineError, match="gave up after 3 attempts") as info:
        fetch(tmp_path, url, sha256=GOOD_SHA, retries=2)
    assert url in str(info.value)
    assert server.hits["/short/toyset.zip"] == 3
    assert leftovers(tmp_path / "cache") == []


def test_persistent_5xx_gives_up(server, tmp_path):
    url = server.url("/down/toyset.zip", 502)
    with pytest.raises(PipelineError, match=r"HTTP 502 .*gave up after 2 attempts"):
        fetch(tmp_path, url, retries=1)
    assert leftovers(tmp_path / "cache") == []


def test_404_is_not_retried(server, tmp_path):
    url = server.url("/missing/toyset.zip", 404)
    with pytest.raises(PipelineError, match="HTTP 404") as info:
        fetch(tmp_path, url, retries=3)
    assert url in str(info.value) and server.hits["/missing/toyset.zip"] == 1


def test_unreachable_host_fails_fast(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    url = f"http://127.0.0.1:{port}/toyset.zip"
    t0 = time.perf_counter()
    with pytest.raises(PipelineError, match="cannot reach") as info:
        fetch(tmp_path, url, retries=3, backoff=5)
    assert time.perf_counter() - t0 < 3
    assert url in str(info.value)
    assert leftovers(tmp_path / "cache") == [] and not (tmp_path / "out").exists()


def test_bad_download_keeps_existing_good_output(server, tmp_path):
    url = server.url("/keep/toyset.zip", GOOD)
    fetch(tmp_path, url, sha256=GOOD_SHA)
    before = (tmp_path / "out" / "manifest.json").read_bytes()
    bad_url = server.url("/keep-bad/toyset.zip", beir_zip(extra={"toyset/qrels/dev.tsv": b"query-id\tcorpus-id\tscore\n"}))
    with pytest.raises(PipelineError, match=r"toyset/qrels/dev.tsv:1: empty split"):
        fetch(tmp_path, bad_url)
    assert (tmp_path / "out" / "manifest.json").read_bytes() == before
    assert leftovers(tmp_path) == ["cache", "out"]
