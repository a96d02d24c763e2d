"""Downloading a file over HTTP(S) with retries, through a temporary file beside its destination,
into the download cache shared by the sources (BEIR zips, DPR/Tevatron files)."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from pipeline.core.common import PipelineError, log


def default_cache_dir(kind: str, *, own_folder_under_env: bool = True) -> Path:
    """Where downloads of source `kind` are kept: `$PIPELINE_CACHE_DIR/<kind>`, else
    `$XDG_CACHE_HOME/infonce-bench/<kind>` (~/.cache when unset). With `own_folder_under_env`
    False the variable names the kind's folder itself, which is how existing BEIR caches are laid
    out, so they stay valid."""
    base = os.environ.get("PIPELINE_CACHE_DIR")
    if base:
        return Path(base) / kind if own_folder_under_env else Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "infonce-bench" / kind


def url_key(url: str) -> str:
    """A short digest of the URL, part of a cached file's name so that a download from another
    URL never reuses its bytes."""
    return hashlib.sha256(url.encode()).hexdigest()[:10]


@contextlib.contextmanager
def temp_beside(dest: Path, suffix: str) -> Iterator[Path]:
    """An empty temporary file in `dest`'s folder, so that os.replace onto `dest` is atomic;
    removed on the way out unless it was moved there."""
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


class _Transient(Exception):
    """A failure worth retrying (server hiccup, dropped connection, timeout)."""


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def _fetch_once(url: str, dest: Path, timeout: float, progress: bool) -> None:
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "infonce-bench-data/0.1"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise PipelineError(f"download failed: {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout, ConnectionResetError, ConnectionAbortedError)):
            raise _Transient(str(reason)) from None
        # Refused connections and unknown host names do not heal in seconds: fail now.
        raise PipelineError(f"cannot reach {url}: {reason}. Check the network (or proxy settings), or "
                            f"download the zip yourself and use --source local on its extracted folder") from None
    except (TimeoutError, socket.timeout, ConnectionError, http.client.HTTPException) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from None
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        try:
            with open(dest, "wb") as fh, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                                desc=Path(url).name, leave=False,
                                                # None: only draw on a terminal, not into a Snakemake log
                                                disable=None if progress else True) as bar:
                while True:
                    block = response.read(1 << 16)
                    if not block:
                        break
                    fh.write(block)
                    received += len(block)
                    bar.update(len(block))
        except (TimeoutError, socket.timeout, ConnectionError, http.client.HTTPException) as exc:
            raise _Transient(f"connection lost after {human_size(received)}: {type(exc).__name__}") from None
    if total is not None and received != total:
        raise _Transient(f"connection closed after {received} of {total} bytes")


def download(url: str, dest: Path, *, retries: int = 3, backoff: float = 1.0, timeout: float = 60.0,
             progress: bool = True) -> None:
    """Download `url` to `dest` through a temporary file beside it. Transient failures are retried
    `retries` times, waiting backoff, 2*backoff, ... seconds; nothing is left at `dest` on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with temp_beside(dest, ".part") as tmp:
        for attempt in range(retries + 1):
            try:
                _fetch_once(url, tmp, timeout, progress)
                os.replace(tmp, dest)
                return
            except _Transient as exc:
                if attempt == retries:
                    raise PipelineError(f"download failed: {url}: {exc} (gave up after {retries + 1} "
                                        f"attempts)") from None
                wait = backoff * (2 ** attempt)
                log.warning("download of %s failed (%s); retry %d/%d in %.1fs", url, exc, attempt + 1,
                            retries, wait)
                time.sleep(wait)
