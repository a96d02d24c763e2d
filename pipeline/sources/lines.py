"""The reading core every source shares: an input opened as bytes (gzip detected from the bytes,
hashed as stored), read line by line under a length cap, each line decoded as UTF-8 and parsed as
JSON, and every problem recorded with file:line in one `Problems` list."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import zlib
from pathlib import Path
from typing import Iterator

from pipeline.core.common import PipelineError

# One runaway line (a file without newlines, a binary blob) must not exhaust memory.
MAX_LINE_BYTES = 10 * 1024 * 1024
MAX_ERRORS = 20
INVALID_JSON = object()
GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


class Problems:
    """Input problems, each already worded as `<file>:<line>: <what is wrong>`, so one run shows
    most of what to fix instead of one problem per attempt. With `stop_early` the MAX_ERRORS-th
    problem raises at once, which spares reading on through a 13 GB file already known to be bad;
    otherwise problems past MAX_ERRORS are only counted. `what` names the input in the summary."""

    def __init__(self, what: str = "", stop_early: bool = False):
        self.what, self.stop_early = what, stop_early
        self.items: list[str] = []
        self.dropped = 0

    def add(self, msg: str) -> None:
        if len(self.items) < MAX_ERRORS:
            self.items.append(msg)
        else:
            self.dropped += 1
        if self.stop_early and len(self.items) >= MAX_ERRORS:
            self.raise_if_any(stopped=True)

    def raise_if_any(self, stopped: bool = False) -> None:
        if not self.items:
            return
        if len(self.items) == 1 and not stopped:
            raise PipelineError(self.items[0])
        where = f" in {self.what}" if self.what else ""
        if stopped:
            tail = f"\n  ... (stopped at the first {MAX_ERRORS} problems)"
        else:
            tail = f"\n  ... and {self.dropped} more" if self.dropped else ""
        listed = "\n  ".join(self.items)
        raise PipelineError(f"{len(self.items) + self.dropped} problems{where}:\n  {listed}{tail}")


def require_file(path: Path, label: str, role: str = "") -> None:
    """Refuse a missing or empty input before reading it, naming it as the user gave it."""
    suffix = f" ({role})" if role else ""
    if not path.is_file():
        raise PipelineError(f"{label}: file not found{suffix}")
    if path.stat().st_size == 0:
        raise PipelineError(f"{label}:1: file is empty{suffix}")


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def gzip_problem(exc: BaseException) -> str:
    return (f"truncated or corrupt gzip ({exc}); delete the file and download it again"
            if isinstance(exc, GZIP_ERRORS) else str(exc))


class _HashingReader(io.RawIOBase):
    """Hashes the raw bytes of a file as they are read, so a gzip input is hashed as stored."""

    def __init__(self, fh, digest):
        self._fh, self._digest = fh, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self._fh.readinto(buf)
        if n:
            self._digest.update(memoryview(buf)[:n])
        return n or 0


@contextlib.contextmanager
def open_input(path: Path, digest, gunzip: bool = True) -> Iterator[io.BufferedIOBase]:
    """A binary stream of the file's content, hashed into `digest` as stored, and decompressed
    when `gunzip` and it starts with the gzip magic."""
    with open(path, "rb") as raw:
        gz = gunzip and raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = io.BufferedReader(_HashingReader(raw, digest), buffer_size=1 << 20)
        if gz:
            with gzip.GzipFile(fileobj=stream, mode="rb") as g:
                yield g
        else:
            yield stream


def iter_lines(path: Path, label: str, errors: Problems, digest, *, gunzip: bool = True,
               too_long_hint: str = "") -> Iterator[tuple[int, str]]:
    """(line number, text without line ending) for each non-blank line of a (gzipped) text file,
    read in one pass that also hashes it. A line over MAX_LINE_BYTES is recorded and skipped."""
    lineno = 0
    try:
        with open_input(path, digest, gunzip) as fh:
            while True:
                raw = fh.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    break
                lineno += 1
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    _skip_rest_of_line(fh, raw)
                    errors.add(f"{label}:{lineno}: line longer than {MAX_LINE_BYTES:,} bytes{too_long_hint}")
                    continue
                text = decode_line(raw, lineno, label, errors)
                if text:
                    yield lineno, text
    except GZIP_ERRORS as exc:
        raise PipelineError(f"{label}:{lineno + 1}: {gzip_problem(exc)}") from None


def _skip_rest_of_line(fh, raw: bytes) -> None:
    # Reading the oversized line to its end keeps the numbers of the lines after it right.
    while raw and not raw.endswith(b"\n"):
        raw = fh.readline(1 << 20)


def parse_json_line(text: str, where: str, errors):
    """The JSON value of one line, or INVALID_JSON after recording the problem with file:line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        errors.add(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})")
        return INVALID_JSON


def decode_line(raw: bytes, lineno: int, label: str, errors) -> str | None:
    """One raw line as text without its line ending (None when blank or not UTF-8, which is
    recorded in `errors` with file:line)."""
    if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte-order mark is harmless; tools on Windows add it
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        errors.add(f"{label}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte "
                   f"{exc.start + 1} of the line); save the file as UTF-8")
        return None
    text = text.rstrip("\r\n")
    return text if text.strip() else None
