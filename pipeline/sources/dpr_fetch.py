"""The `dpr` source's inputs: a local path, or an http(s) URL fetched into the cache and verified
by sha256, either pinned here or recorded in the checksum lock file on first download."""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import gzip
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline.core.common import PipelineError, atomic_write_text, log, sha256_file
from pipeline.sources.download import download, temp_beside, url_key
from pipeline.sources.lines import GZIP_ERRORS, gzip_problem, is_gzip, require_file

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LOCK = REPO_ROOT / "config" / "checksums.lock"

# The official files, from the resource list of facebookresearch/DPR (dpr/data/download_data.py).
DPR_BASE = "https://dl.fbaipublicfiles.com/dpr"
PASSAGES_URL = f"{DPR_BASE}/wikipedia_split/psgs_w100.tsv.gz"
OFFICIAL: dict[str, dict[str, Any]] = {
    "nq": {"train": f"{DPR_BASE}/data/retriever/biencoder-nq-train.json.gz",
           "qa": {"dev": f"{DPR_BASE}/data/retriever/nq-dev.qa.csv",
                  "test": f"{DPR_BASE}/data/retriever/nq-test.qa.csv"}},
    "trivia": {"train": f"{DPR_BASE}/data/retriever/biencoder-trivia-train.json.gz",
               "qa": {"dev": f"{DPR_BASE}/data/retriever/trivia-dev.qa.csv.gz",
                      "test": f"{DPR_BASE}/data/retriever/trivia-test.qa.csv.gz"}},
    "webq": {"train": f"{DPR_BASE}/data/retriever/biencoder-webquestions-train.json.gz",
             "qa": {"test": f"{DPR_BASE}/data/retriever/webquestions-test.qa.csv"}},
    "curatedtrec": {"train": f"{DPR_BASE}/data/retriever/biencoder-curatedtrec-train.json.gz",
                    "qa": {"test": f"{DPR_BASE}/data/retriever/curatedtrec-test.qa.csv"},
                    "regex": True},
}
# Checksums the publisher gives, keyed by URL. DPR publishes none (its download script has URLs
# only), so every official DPR file is verified through the lock file instead: its sha256 is
# recorded there on first download and every later use must match it.
PINNED_SHA256: dict[str, str] = {}
_PINNED_WHERE = "pinned in pipeline/sources/dpr_fetch.py"


@dataclass
class Input:
    role: str
    spec: str           # as given: path or URL
    path: Path
    label: str          # how messages name it

    def describe(self) -> str:
        return self.spec


def is_url(spec: str) -> bool:
    return urlparse(str(spec)).scheme in ("http", "https")


def resolve_input(role: str, spec: str, *, cache_dir: Path, lock_path: Path, **net) -> Input:
    if is_url(spec):
        path, _sha = fetch_verified(spec, cache_dir, lock_path, **net)
        return Input(role, spec, path, Path(urlparse(spec).path).name)
    path = Path(spec)
    require_file(path, spec, role)
    return Input(role, spec, path, spec)


def default_lock_path() -> Path:
    return Path(os.environ.get("PIPELINE_CHECKSUM_LOCK", DEFAULT_LOCK))


# ----------------------------------------------------------------------------- the lock file
@contextlib.contextmanager
def _locked(folder: Path):
    """Serialise read-modify-write of the lock file between parallel jobs (flock on its folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_lock(lock_path: Path) -> dict[str, dict]:
    if not lock_path.is_file():
        return {}
    try:
        data = json.loads(lock_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{lock_path}:{exc.lineno}: invalid JSON in the checksum lock file ({exc.msg})") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(
            isinstance(v, dict) and re.fullmatch(r"[0-9a-f]{64}", str(v.get("sha256", ""))) for v in files.values()):
        raise PipelineError(f"{lock_path}: expected {{\"files\": {{url: {{\"sha256\": <64 hex>, ...}}}}}}")
    return files


def record_in_lock(lock_path: Path, url: str, sha256: str, size: int) -> None:
    with _locked(lock_path.parent):
        files = read_lock(lock_path)
        if url in files:
            if files[url]["sha256"] != sha256:
                raise PipelineError(f"{lock_path}: {url} was recorded with sha256 {files[url]['sha256']} by "
                                    f"another job, this download has {sha256}")
            return
        files[url] = {"sha256": sha256, "bytes": size,
                      "recorded": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        doc = {"about": "sha256 of each downloaded data file, recorded on its first download and checked on "
                        "every later use (see docs/data.md, 'DPR-format data'). Commit this file so every checkout "
                        "verifies the same bytes; delete an entry only to accept a changed file.",
               "files": dict(sorted(files.items()))}
        atomic_write_text(lock_path, json.dumps(doc, indent=2) + "\n")
    log.info("recorded sha256 %s of %s in %s", sha256, url, lock_path)


# ----------------------------------------------------------------------------- verified downloads
def verify_gzip(path: Path, label: str) -> None:
    """Read a gzip file to its end, so a truncated or damaged one fails here, before its checksum
    is recorded, and not hours later in the middle of the conversion."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
    except GZIP_ERRORS as exc:
        raise PipelineError(f"{label}: {gzip_problem(exc)}") from None


def fetch_verified(url: str, cache_dir: Path, lock_path: Path, *, retries: int = 3, backoff: float = 1.0,
                   timeout: float = 60.0, progress: bool = True) -> tuple[Path, str]:
    """A verified local copy of `url`: (path in the cache, sha256). The checksum is the pinned one
    when the publisher gives one, else the one in the lock file; a file not yet in the lock is
    checked for gzip integrity and then recorded. On any failure nothing is left in the cache and
    the lock file is unchanged."""
    name = Path(urlparse(url).path).name or "download"
    cached = cache_dir / f"{url_key(url)}-{name}"
    pinned = PINNED_SHA256.get(url)
    expected, source = (pinned, _PINNED_WHERE) if pinned else \
        (read_lock(lock_path).get(url, {}).get("sha256"), f"recorded in {lock_path}")
    if cached.is_file():
        got = _verified_cached(url, cached, lock_path, expected, source)
        if got is not None:
            return cached, got
    cache_dir.mkdir(parents=True, exist_ok=True)
    got = _download_verified(url, cached, lock_path, expected, source,
                             dict(retries=retries, backoff=backoff, timeout=timeout, progress=progress))
    return cached, got


def _verified_cached(url: str, cached: Path, lock_path: Path, expected: str | None, source: str) -> str | None:
    """The sha256 of a cached copy that passes its check; None after deleting one that does not."""
    got = sha256_file(cached)
    if expected is None or got == expected:
        if expected is None:
            if is_gzip(cached):
                verify_gzip(cached, f"{url} (cached as {cached})")
            record_in_lock(lock_path, url, got, cached.stat().st_size)
        log.info("using cached %s (sha256 verified)", cached)
        return got
    log.warning("cached %s does not match its sha256 (%s %s, got %s); downloading again", cached, source,
                expected, got)
    cached.unlink()
    return None


def _download_verified(url: str, cached: Path, lock_path: Path, expected: str | None, source: str,
                       net: dict) -> str:
    # Verified under a staging name first, so a bad download never lands at the cached name.
    with temp_beside(cached, ".verify") as staging:
        log.info("downloading %s", url)
        download(url, staging, **net)
        got = sha256_file(staging)
        if expected is not None and got != expected:
            raise PipelineError(f"checksum mismatch for {url}: sha256 expected {expected} ({source}), got {got}. "
                                f"The file was deleted; the host may have changed it or the transfer was "
                                f"corrupted (remove its entry from the lock file only to accept a new version)")
        if is_gzip(staging):
            verify_gzip(staging, url)
        if expected is None:
            record_in_lock(lock_path, url, got, staging.stat().st_size)
        os.replace(staging, cached)
        return got
