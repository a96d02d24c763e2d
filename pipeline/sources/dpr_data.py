"""DPR-format and Tevatron-format data -> the pipeline's normalised BEIR layout, plus answers.

Inputs (each a local path or an http(s) URL; gzip is detected from the bytes, not the name):

  training JSON   DPR's biencoder-*-train.json(.gz): one JSON array of
                  {question, answers, positive_ctxs, negative_ctxs, hard_negative_ctxs}, each ctx
                  {title, text, passage_id (or psg_id)}. Read element by element.
  Tevatron JSONL  one {query_id?, query, positive_passages, negative_passages} per line, each
                  passage {docid, title?, text}.
  QA file         DPR's *.qa.csv(.gz): `question<TAB>["answer", ...]` per line, no header;
                  CuratedTREC's answers are regular expressions (--answer-regex).
  passages TSV    DPR's psgs_w100.tsv(.gz): `id<TAB>text<TAB>title` (optional header line),
                  21,015,324 lines for the full Wikipedia split.

Output folder (written under a temporary name and swapped in, like every pipeline step):

  corpus.jsonl                 the passages TSV in file order, then any training ctx whose id the
                               TSV lacks (first occurrence wins), {"_id", "title", "text"}
  queries.jsonl                training questions (ids train-<element index>, or Tevatron's
                               query_id) and QA questions (ids <split>-<line index>, 0-based)
  qrels/train.tsv              the first positive ctx per training question (what DPR trains on;
                               --dpr-positives all keeps every positive); questions without a
                               positive are skipped, as DPR's loader does
  hard_negatives/train.jsonl   {"query_id", "negatives": [ids]} per training question in
                               pipeline.training.hardneg's format, from hard_negative_ctxs (Tevatron:
                               negative_passages), in the file's order; a question without any
                               takes its negative_ctxs instead, as DPR's hard_neg_fallback does.
                               DPR draws one of them per question per epoch at random
                               (pipeline.training.hardneg.draw_per_epoch)
  answers/<split>.jsonl        {"_id", "answers": [...], "regex": bool} per QA question. A split
                               with an answers file is answer-evaluated (protocol "answers"); it
                               has no qrels file, because it has no judged passages.
  manifest.json                counts, input and output sha256, the sources

Memory does not grow with the corpus: lines are streamed to the output, and the only per-passage
state is one bit per numeric passage id (ids that are not plain decimal numbers go into a set).
Every problem is reported as `<file>:<line>: <what is wrong>`; inside a JSON array the message
also names the element index (0-based) whose text starts on that line.
"""

from __future__ import annotations

import ast
import codecs
import contextlib
import csv
import datetime as _dt
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

from pipeline.core.common import PipelineError, atomic_dir, atomic_write_text, log, sha256_file
from pipeline.core.layout import MANIFEST_VERSION
from pipeline.sources.download import download
from pipeline.sources.lines import INVALID_JSON, decode_line, parse_json_line
from pipeline.sources.answer_matching import check_answer_regex, tokenize

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LOCK = REPO_ROOT / "config" / "checksums.lock"
MAX_LINE_BYTES = 10 * 1024 * 1024
MAX_ELEMENT_CHARS = 64 * 1024 * 1024
MAX_ERRORS = 20

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

_SPLIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
TRAIN_FIELDS = ("question", "answers", "positive_ctxs", "negative_ctxs", "hard_negative_ctxs")
TEVATRON_FIELDS = ("query", "positive_passages", "negative_passages")


# ----------------------------------------------------------------------------- small pieces
class _Errors:
    """Up to MAX_ERRORS problems, then stop: one run shows most of what to fix without reading
    on through a 13 GB file that is already known to be bad."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        self.items.append(msg)
        if len(self.items) >= MAX_ERRORS:
            self.raise_if_any(more=True)

    def raise_if_any(self, more: bool = False) -> None:
        if not self.items:
            return
        if len(self.items) == 1 and not more:
            raise PipelineError(self.items[0])
        tail = "\n  ... (stopped at the first %d problems)" % MAX_ERRORS if more else ""
        raise PipelineError(f"{len(self.items)} problems:\n  " + "\n  ".join(self.items) + tail)


class IdSet:
    """A set of passage ids whose memory does not grow per id for DPR's ids (plain decimal
    numbers below 2**28 take one bit each in a bytearray); other ids go into a Python set."""

    _LIMIT = 1 << 28

    def __init__(self) -> None:
        self._bits = bytearray()
        self._other: set[str] = set()
        self.count = 0

    def _num(self, key: str) -> int | None:
        if key.isdigit() and key.isascii() and (key == "0" or key[0] != "0") and len(key) < 10:
            n = int(key)
            return n if n < self._LIMIT else None
        return None

    def __contains__(self, key: str) -> bool:
        n = self._num(key)
        if n is None:
            return key in self._other
        byte = n >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (n & 7)))

    def add(self, key: str) -> bool:
        """Add `key`; False if it was already there."""
        n = self._num(key)
        if n is None:
            if key in self._other:
                return False
            self._other.add(key)
        else:
            byte = n >> 3
            if byte >= len(self._bits):
                self._bits.extend(b"\0" * max(byte + 1 - len(self._bits), len(self._bits)))
            mask = 1 << (n & 7)
            if self._bits[byte] & mask:
                return False
            self._bits[byte] |= mask
        self.count += 1
        return True

    def missing_from(self, other: "IdSet") -> bool:
        """True if some id of self is not in `other`."""
        if any(k not in other for k in self._other):
            return True
        a, b = self._bits, other._bits
        for i in range(0, len(a), 1 << 20):
            chunk = a[i:i + (1 << 20)]
            theirs = b[i:i + len(chunk)].ljust(len(chunk), b"\0")
            if int.from_bytes(chunk, "little") & ~int.from_bytes(theirs, "little"):
                return True
        return False


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
def open_input(path: Path, digest) -> Iterator[io.BufferedIOBase]:
    """A binary stream of the file's content, decompressed when it starts with the gzip magic."""
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = io.BufferedReader(_HashingReader(raw, digest), buffer_size=1 << 20)
        if gz:
            with gzip.GzipFile(fileobj=stream, mode="rb") as g:
                yield g
        else:
            yield stream


_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def _gzip_problem(exc: BaseException) -> str:
    return (f"truncated or corrupt gzip ({exc}); delete the file and download it again"
            if isinstance(exc, _GZIP_ERRORS) else str(exc))


def iter_lines(path: Path, label: str, errors: _Errors, digest) -> Iterator[tuple[int, str]]:
    """(line number, text without line ending) for each non-blank line of a (gzipped) text file.
    Lines are read with a length cap, decoded as UTF-8 with a file:line error otherwise."""
    lineno = 0
    try:
        with open_input(path, digest) as fh:
            while True:
                raw = fh.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    break
                lineno += 1
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    while raw and not raw.endswith(b"\n"):
                        raw = fh.readline(1 << 20)
                    errors.add(f"{label}:{lineno}: line longer than {MAX_LINE_BYTES:,} bytes")
                    continue
                text = decode_line(raw, lineno, label, errors)
                if text:
                    yield lineno, text
    except _GZIP_ERRORS as exc:
        raise PipelineError(f"{label}:{lineno + 1}: {_gzip_problem(exc)}") from None


def iter_json_array(path: Path, label: str, digest, chunk_chars: int = 1 << 20
                    ) -> Iterator[tuple[int, int, Any]]:
    """(element index, line the element starts on, element) for each element of a top-level JSON
    array, parsed incrementally with `json.JSONDecoder.raw_decode`: memory holds one element (and
    one read chunk), never the whole array. Errors name the line and the element index."""
    decoder = json.JSONDecoder()
    ws = re.compile(r"[ \t\n\r]*")
    buf = ""
    lc_pos, lc_line = 0, 1   # line number lc_line at buffer position lc_pos (counted incrementally)
    eof = False
    text_stream = None

    def more(n: int) -> bool:
        nonlocal buf, eof
        if eof:
            return False
        try:
            piece = text_stream.read(n)
        except UnicodeDecodeError as exc:
            raise PipelineError(f"{label}:{line_of(len(buf))}: not valid UTF-8 "
                                f"({exc.reason}); save the file as UTF-8") from None
        except _GZIP_ERRORS as exc:
            raise PipelineError(f"{label}:{line_of(len(buf))}: {_gzip_problem(exc)}") from None
        if not piece:
            eof = True
            return False
        buf += piece
        return True

    def skip_ws(pos: int) -> int:
        while True:
            pos = ws.match(buf, pos).end()
            if pos < len(buf) or not more(chunk_chars):
                return pos

    def line_of(pos: int) -> int:
        nonlocal lc_pos, lc_line
        if pos >= lc_pos:
            lc_line += buf.count("\n", lc_pos, pos)
            lc_pos = pos
            return lc_line
        return lc_line - buf.count("\n", pos, lc_pos)

    with open_input(path, digest) as fh:
        text_stream = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="strict", newline="")
        pos = skip_ws(0)
        if pos >= len(buf):
            raise PipelineError(f"{label}:1: file is empty; expected a JSON array of training questions")
        if buf[pos] != "[":
            raise PipelineError(f"{label}:{line_of(pos)}: expected a JSON array ('['), got {buf[pos:pos + 20]!r}")
        pos = skip_ws(pos + 1)
        index = 0
        while True:
            if pos >= len(buf):
                raise PipelineError(f"{label}:{line_of(pos)}: file ends inside the array (after element "
                                    f"{index - 1}; truncated download?)")
            if buf[pos] == "]" and index == 0:
                pos += 1
                break
            start_line = line_of(pos)
            want = chunk_chars
            while True:
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                    if end >= len(buf) and more(want):  # a value cut off at a chunk edge may go on
                        want *= 2
                        continue
                    break
                except json.JSONDecodeError as exc:
                    # Probably cut off by the end of the buffer: read more (doubling, so a long
                    # element costs O(n log n)), up to a cap; only then is the error real.
                    if len(buf) - pos < MAX_ELEMENT_CHARS and more(want):
                        want *= 2
                        continue
                    where = line_of(exc.pos)
                    if eof and exc.pos >= len(buf) - 1:
                        what = "file ends inside this element (truncated download?)"
                    elif len(buf) - pos >= MAX_ELEMENT_CHARS:
                        what = f"invalid JSON or an element longer than {MAX_ELEMENT_CHARS:,} characters ({exc.msg})"
                    else:
                        what = f"invalid JSON ({exc.msg} at column {exc.colno})"
                    raise PipelineError(f"{label}:{where}: element {index} (starting on line {start_line}): "
                                        f"{what}") from None
            yield index, start_line, obj
            index += 1
            pos = skip_ws(end)
            if pos < len(buf) and buf[pos] == ",":
                pos = skip_ws(pos + 1)
            elif pos < len(buf) and buf[pos] == "]":
                pos += 1
                break
            elif pos >= len(buf):
                raise PipelineError(f"{label}:{line_of(pos)}: file ends inside the array (after element "
                                    f"{index - 1}; truncated download?)")
            else:
                raise PipelineError(f"{label}:{line_of(pos)}: expected ',' or ']' after element {index - 1}, "
                                    f"got {buf[pos:pos + 20]!r}")
            # Drop what is parsed so the buffer holds about one element.
            if pos > chunk_chars:
                lc_line = line_of(pos)
                buf = buf[pos:]
                pos = lc_pos = 0
        pos = skip_ws(pos)
        if pos < len(buf):
            raise PipelineError(f"{label}:{line_of(pos)}: unexpected content after the JSON array: "
                                f"{buf[pos:pos + 20]!r}")


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "))  # as pipeline.sources.prepare writes


def _jsonl(obj: dict) -> str:
    return _ENCODER.encode(obj) + "\n"


def _type(value) -> str:
    return "null" if value is None else type(value).__name__


# ----------------------------------------------------------------------------- record checks
def _ctx_id(ctx: dict, id_keys: tuple[str, ...]) -> str | None:
    for key in id_keys:
        if key in ctx:
            value = ctx[key]
            if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
                return None
            return str(value).strip()
    return None


def check_ctxs(rec: dict, key: str, where: str, id_keys: tuple[str, ...], title_required: bool
               ) -> tuple[list[tuple[str, str, str]], str | None]:
    """[(id, title, text)] of rec[key], or an error message."""
    ctxs = rec[key]
    if not isinstance(ctxs, list):
        return [], f"{where}: '{key}' must be a list of passages, got {_type(ctxs)}"
    out = []
    for j, ctx in enumerate(ctxs):
        at = f"{where}: {key}[{j}]"
        if not isinstance(ctx, dict):
            return [], f"{at}: expected an object with 'title', 'text' and an id, got {_type(ctx)}"
        if "text" not in ctx:
            return [], f"{at}: passage without 'text'"
        if not isinstance(ctx["text"], str):
            return [], f"{at}: 'text' must be a string, got {_type(ctx['text'])}"
        title = ctx.get("title", None if title_required else "")
        if title is None and not title_required:
            title = ""
        if not isinstance(title, str):
            return [], (f"{at}: missing 'title'" if title is None
                        else f"{at}: 'title' must be a string, got {_type(title)}")
        pid = _ctx_id(ctx, id_keys)
        if pid is None:
            names = " or ".join(repr(k) for k in id_keys)
            return [], f"{at}: missing or empty passage id ({names})"
        out.append((pid, title, ctx["text"]))
    return out, None


@dataclass
class TrainQuestion:
    qid: str
    question: str
    positives: list[tuple[str, str, str]]
    hard_negatives: list[tuple[str, str, str]]
    negatives: list[tuple[str, str, str]] = field(default_factory=list)
    where: str = ""     # "<file>:<line>" (plus the element index for a JSON array), for messages


def _question_of(rec: Any, fields, question_key: str, what: str, where: str) -> tuple[str | None, str | None]:
    """The stripped question text of a training record, or the problem: not an object, a
    missing field, an empty question."""
    if not isinstance(rec, dict):
        return None, f"{where}: expected an object with {list(fields)}, got {_type(rec)}"
    missing = [k for k in fields if k not in rec]
    if missing:
        names = ", ".join(repr(k) for k in missing)
        return None, f"{where}: missing {names} ({what} has {list(fields)})"
    q = rec[question_key]
    if not isinstance(q, str) or not q.strip():
        return None, f"{where}: '{question_key}' must be a non-empty string, got {q!r:.40}"
    return q.strip(), None


def check_dpr_record(rec: Any, index: int, where: str) -> tuple[TrainQuestion | None, str | None]:
    q, problem = _question_of(rec, TRAIN_FIELDS, "question", "a DPR training question", where)
    if problem:
        return None, problem
    answers = rec["answers"]
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        return None, f"{where}: 'answers' must be a list of strings, got {answers!r:.60}"
    lists = {}
    for key in ("positive_ctxs", "negative_ctxs", "hard_negative_ctxs"):
        lists[key], problem = check_ctxs(rec, key, where, ("passage_id", "psg_id"), title_required=True)
        if problem:
            return None, problem
    return TrainQuestion(f"train-{index}", q, lists["positive_ctxs"], lists["hard_negative_ctxs"],
                         lists["negative_ctxs"], where), None


def check_tevatron_record(rec: Any, lineno: int, where: str) -> tuple[TrainQuestion | None, str | None]:
    q, problem = _question_of(rec, TEVATRON_FIELDS, "query", "a Tevatron line", where)
    if problem:
        return None, problem
    qid = rec.get("query_id")
    if qid is None:
        qid = f"train-{lineno - 1}"
    elif isinstance(qid, bool) or not isinstance(qid, (str, int)) or not str(qid).strip():
        return None, f"{where}: 'query_id' must be a non-empty string, got {qid!r:.40}"
    pos, problem = check_ctxs(rec, "positive_passages", where, ("docid",), title_required=False)
    if problem:
        return None, problem
    neg, problem = check_ctxs(rec, "negative_passages", where, ("docid",), title_required=False)
    if problem:
        return None, problem
    return TrainQuestion(str(qid).strip(), q.strip(), pos, neg, where=where), None


def parse_answers_cell(cell: str, regex_mode: bool) -> tuple[list[str] | None, str | None]:
    """The answers column of a DPR QA file (a JSON or Python list literal of strings)."""
    try:
        value = json.loads(cell)
    except json.JSONDecodeError:
        try:
            value = ast.literal_eval(cell)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None, f"answers column is not a list literal, like [\"Paris\"] (got {cell[:60]!r})"
    if not isinstance(value, list) or not value:
        return None, f"answers column must be a non-empty list of strings, got {cell[:60]!r}"
    for i, a in enumerate(value):
        if not isinstance(a, str):
            return None, f"answer {i} is {_type(a)}, not a string ({cell[:60]!r})"
        if regex_mode:
            reason = check_answer_regex(a) if a.strip() else "empty pattern"
            if reason:
                return None, f"answer {i} {a[:40]!r} is not a valid regular expression ({reason})"
        elif not tokenize(a):
            return None, f"answer {i} {a!r} has no tokens (empty or only spaces)"
    return value, None


# ----------------------------------------------------------------------------- inputs
def is_url(spec: str) -> bool:
    return urlparse(str(spec)).scheme in ("http", "https")


def default_cache_dir() -> Path:
    base = os.environ.get("PIPELINE_CACHE_DIR")
    if base:
        return Path(base) / "dpr"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "infonce-bench" / "dpr"


def default_lock_path() -> Path:
    return Path(os.environ.get("PIPELINE_CHECKSUM_LOCK", DEFAULT_LOCK))


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


def verify_gzip(path: Path, label: str) -> None:
    """Read a gzip file to its end, so a truncated or damaged one fails here, before its checksum
    is recorded, and not hours later in the middle of the conversion."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
    except _GZIP_ERRORS as exc:
        raise PipelineError(f"{label}: {_gzip_problem(exc)}") from None


def fetch_verified(url: str, cache_dir: Path, lock_path: Path, *, retries: int = 3, backoff: float = 1.0,
                   timeout: float = 60.0, progress: bool = True) -> tuple[Path, str]:
    """A verified local copy of `url`: (path in the cache, sha256). The checksum is the pinned one
    when the publisher gives one, else the one in the lock file; a file not yet in the lock is
    checked for gzip integrity and then recorded. On any failure nothing is left in the cache and
    the lock file is unchanged."""
    name = Path(urlparse(url).path).name or "download"
    key = hashlib.sha256(url.encode()).hexdigest()[:10]
    cached = cache_dir / f"{key}-{name}"
    pinned = PINNED_SHA256.get(url)
    expected, source = (pinned, "pinned in pipeline/sources/dpr_data.py") if pinned else \
        (read_lock(lock_path).get(url, {}).get("sha256"), f"recorded in {lock_path}")
    if cached.is_file():
        got = sha256_file(cached)
        if expected is None or got == expected:
            if expected is None:
                if _is_gzip(cached):
                    verify_gzip(cached, f"{url} (cached as {cached})")
                record_in_lock(lock_path, url, got, cached.stat().st_size)
            log.info("using cached %s (sha256 verified)", cached)
            return cached, got
        log.warning("cached %s does not match its sha256 (%s %s, got %s); downloading again", cached, source,
                    expected, got)
        cached.unlink()
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, staging_name = tempfile.mkstemp(prefix=f".{cached.name}.", suffix=".verify", dir=cache_dir)
    os.close(fd)
    staging = Path(staging_name)
    try:
        log.info("downloading %s", url)
        download(url, staging, retries=retries, backoff=backoff, timeout=timeout, progress=progress)
        got = sha256_file(staging)
        if expected is not None and got != expected:
            raise PipelineError(f"checksum mismatch for {url}: sha256 expected {expected} ({source}), got {got}. "
                                f"The file was deleted; the host may have changed it or the transfer was "
                                f"corrupted (remove its entry from the lock file only to accept a new version)")
        if _is_gzip(staging):
            verify_gzip(staging, url)
        if expected is None:
            record_in_lock(lock_path, url, got, staging.stat().st_size)
        os.replace(staging, cached)
        return cached, got
    finally:
        staging.unlink(missing_ok=True)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


@dataclass
class Input:
    role: str
    spec: str           # as given: path or URL
    path: Path
    label: str          # how messages name it

    def describe(self) -> str:
        return self.spec


def resolve_input(role: str, spec: str, *, cache_dir: Path, lock_path: Path, **net) -> Input:
    if is_url(spec):
        path, _sha = fetch_verified(spec, cache_dir, lock_path, **net)
        return Input(role, spec, path, Path(urlparse(spec).path).name)
    path = Path(spec)
    if not path.is_file():
        raise PipelineError(f"{spec}: file not found ({role})")
    if path.stat().st_size == 0:
        raise PipelineError(f"{spec}:1: file is empty ({role})")
    return Input(role, spec, path, spec)


# ----------------------------------------------------------------------------- conversion
def _iter_training(inp: Input, fmt: str, errors: _Errors, digest) -> Iterator[TrainQuestion]:
    if fmt == "dpr":
        for index, line, rec in iter_json_array(inp.path, inp.label, digest):
            q, problem = check_dpr_record(rec, index, f"{inp.label}:{line}: element {index}")
            if problem:
                errors.add(problem)
            elif q is not None:
                yield q
    else:
        for lineno, text in iter_lines(inp.path, inp.label, errors, digest):
            where = f"{inp.label}:{lineno}"
            rec = parse_json_line(text, where, errors)
            if rec is INVALID_JSON:
                continue
            q, problem = check_tevatron_record(rec, lineno, where)
            if problem:
                errors.add(problem)
            elif q is not None:
                yield q


def _tsv_row(text: str, where: str, errors: _Errors) -> list[str] | None:
    """One tab-separated line read with csv quoting (as DPR reads its files), or None after
    recording bad quoting."""
    try:
        return next(csv.reader([text], delimiter="\t", strict=True))
    except csv.Error as exc:
        errors.add(f"{where}: bad quoting ({exc})")
        return None


def _has_columns(row: list[str], names: tuple[str, ...], first: str, where: str, errors: _Errors) -> bool:
    """True when `row` has one cell per name and a non-empty first cell; else records why."""
    if len(row) != len(names):
        errors.add(f"{where}: expected {len(names)} tab-separated columns ({', '.join(names)}), got {len(row)}")
        return False
    if not row[0].strip():
        errors.add(f"{where}: empty {first}")
        return False
    return True


def _iter_passages(inp: Input, errors: _Errors, digest) -> Iterator[tuple[int, str, str, str]]:
    first = True
    for lineno, text in iter_lines(inp.path, inp.label, errors, digest):
        where = f"{inp.label}:{lineno}"
        # DPR reads this file with csv quoting; without quotes a plain split is the same and faster.
        row = _tsv_row(text, where, errors) if '"' in text else text.split("\t")
        if row is None:
            continue
        if first:
            first = False
            if [c.strip().lower() for c in row] == ["id", "text", "title"]:
                continue
        if _has_columns(row, ("id", "text", "title"), "passage id", where, errors):
            yield lineno, row[0].strip(), row[2], row[1]


def _iter_qa(inp: Input, regex_mode: bool, errors: _Errors, digest) -> Iterator[tuple[int, str, list[str]]]:
    for lineno, text in iter_lines(inp.path, inp.label, errors, digest):
        where = f"{inp.label}:{lineno}"
        row = _tsv_row(text, where, errors)
        if row is None:
            continue
        if not _has_columns(row, ("question", "answers list"), "question", where, errors):
            continue
        question = row[0].strip()
        answers, problem = parse_answers_cell(row[1].strip(), regex_mode)
        if problem:
            errors.add(f"{where}: {problem}")
            continue
        yield lineno, question, answers


class _Out:
    """The output files, open for appending line by line, with their line counts."""

    def __init__(self, root: Path):
        self.root = root
        self._fh: dict[str, Any] = {}
        self.lines: dict[str, int] = {}

    def write(self, rel: str, text: str) -> None:
        fh = self._fh.get(rel)
        if fh is None:
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            fh = self._fh[rel] = open(self.root / rel, "w", encoding="utf-8", newline="\n")
            self.lines[rel] = 0
        fh.write(text)
        self.lines[rel] += 1

    def close(self) -> None:
        for fh in self._fh.values():
            fh.close()
        self._fh.clear()


def convert(out_dir: Path, *, train: Input | None, train_format: str, qa: dict[str, Input],
            passages: Input | None, regex_answers: bool, positives: str) -> dict:
    """Write the normalised files into `out_dir` (an empty folder); return the manifest body."""
    errors = _Errors()
    out = _Out(out_dir)
    hashes: dict[str, str] = {}
    seen_queries: set[str] = set()
    stats: dict[str, Any] = {}
    referenced = IdSet()
    try:
        # 1. training questions: queries, qrels/train.tsv, hard negatives; remember ctx ids
        if train is not None:
            digest = hashlib.sha256()
            n_all = kept = no_hn = fallback = 0
            pairs = 0
            for q in _iter_training(train, train_format, errors, digest):
                n_all += 1
                if not q.positives:
                    continue  # DPR's loader drops questions without a positive passage
                if q.qid in seen_queries:
                    errors.add(f"{q.where}: duplicate query id {q.qid!r}")
                    continue
                seen_queries.add(q.qid)
                kept += 1
                out.write("queries.jsonl", _jsonl({"_id": q.qid, "text": q.question}))
                if not out.lines.get("qrels/train.tsv"):
                    out.write("qrels/train.tsv", "query-id\tcorpus-id\tscore\n")
                chosen = q.positives[:1] if positives == "first" else q.positives
                written: set[str] = set()
                for pid, _t, _x in chosen:
                    if pid not in written:
                        written.add(pid)
                        out.write("qrels/train.tsv", f"{q.qid}\t{pid}\t1\n")
                        pairs += 1
                negs = list(dict.fromkeys(pid for pid, _t, _x in q.hard_negatives if pid not in written))
                if not negs:
                    # DPR's hard_neg_fallback (on by default): no hard negatives -> the other negatives.
                    negs = list(dict.fromkeys(pid for pid, _t, _x in q.negatives if pid not in written))
                    fallback += bool(negs)
                    no_hn += not negs
                out.write("hard_negatives/train.jsonl", json.dumps({"query_id": q.qid, "negatives": negs},
                                                                   ensure_ascii=False) + "\n")
                for group in (q.positives, q.negatives, q.hard_negatives):
                    for pid, _t, _x in group:
                        referenced.add(pid)
            errors.raise_if_any()
            if kept == 0:
                raise PipelineError(f"{train.label}: no training question has a positive passage")
            hashes[f"train:{train.describe()}"] = digest.hexdigest()
            stats["training"] = {"format": train_format, "questions": n_all, "kept": kept,
                                 "skipped_no_positive": n_all - kept, "without_hard_negative": no_hn,
                                 "hard_negatives_from_negative_ctxs": fallback,
                                 "qrels_pairs": pairs, "positives": positives}
        # 2. QA questions and their answers
        answer_counts = {}
        for split, inp in qa.items():
            digest = hashlib.sha256()
            n = 0
            for i, (lineno, question, answers) in enumerate(_iter_qa(inp, regex_answers, errors, digest)):
                qid = f"{split}-{i}"
                if qid in seen_queries:
                    errors.add(f"{inp.label}:{lineno}: query id {qid!r} is also a training query id")
                    break
                seen_queries.add(qid)
                out.write("queries.jsonl", _jsonl({"_id": qid, "text": question}))
                out.write(f"answers/{split}.jsonl", _jsonl({"_id": qid, "answers": answers, "regex": regex_answers}))
                n += 1
            errors.raise_if_any()
            if n == 0:
                raise PipelineError(f"{inp.label}:1: no questions (file has only blank lines)")
            hashes[f"qa/{split}:{inp.describe()}"] = digest.hexdigest()
            answer_counts[split] = {"questions": n, "regex": regex_answers}
        # 3. the passages TSV, streamed
        corpus_ids = IdSet()
        from_tsv = 0
        if passages is not None:
            digest = hashlib.sha256()
            first_line: dict[str, int] = {}
            for lineno, pid, title, text in _iter_passages(passages, errors, digest):
                if not corpus_ids.add(pid):
                    # Only the first line of an id is cheap to find again for referenced ids.
                    errors.add(f"{passages.label}:{lineno}: duplicate passage id {pid!r}"
                               + (f" (first on line {first_line[pid]})" if pid in first_line else ""))
                    continue
                if pid in referenced:
                    first_line[pid] = lineno
                out.write("corpus.jsonl", _jsonl({"_id": pid, "title": title, "text": text}))
                from_tsv += 1
            errors.raise_if_any()
            if from_tsv == 0:
                raise PipelineError(f"{passages.label}:1: no passages")
            hashes[f"passages:{passages.describe()}"] = digest.hexdigest()
        # 4. training ctxs the TSV lacks, from a second pass over the training file
        added = 0
        if train is not None and referenced.missing_from(corpus_ids):
            for q in _iter_training(train, train_format, errors, hashlib.sha256()):
                if not q.positives:
                    continue
                for group in (q.positives, q.negatives, q.hard_negatives):
                    for pid, title, text in group:
                        if corpus_ids.add(pid):
                            out.write("corpus.jsonl", _jsonl({"_id": pid, "title": title, "text": text}))
                            added += 1
            if passages is not None:
                log.warning("%d training passages are not in %s; added them to the corpus from %s", added,
                            passages.label, train.label)
        if not out.lines.get("corpus.jsonl"):
            raise PipelineError("no passages: give --dpr-passages, or a training file whose questions have passages")
        if train is None and not qa:
            raise PipelineError("nothing to convert: give a training file and/or QA files")
        stats["corpus"] = {"from_passages_file": from_tsv, "from_training_file": added}
    finally:
        out.close()
    splits = {}
    if "training" in stats:
        t = stats["training"]
        splits["train"] = {"queries": t["kept"], "pairs": t["qrels_pairs"], "relevant_pairs": t["qrels_pairs"]}
    counts = {"docs": out.lines["corpus.jsonl"], "queries": out.lines.get("queries.jsonl", 0), "splits": splits,
              "answers": answer_counts}
    output = {p.relative_to(out_dir).as_posix(): sha256_file(p) for p in sorted(out_dir.rglob("*")) if p.is_file()}
    return {"counts": counts, "dpr": stats, "input_sha256": hashes, "output_sha256": output,
            "answer_splits": sorted(answer_counts),
            "hard_negatives": "hard_negatives/train.jsonl" if "training" in stats else None}


def _check_split(split: str) -> str:
    if not _SPLIT_RE.match(split):
        raise PipelineError(f"--dpr-qa {split!r}: a split name uses letters, digits, '_' or '-'")
    return split


def parse_qa_args(values: list[str] | None) -> dict[str, str]:
    """`SPLIT=PATH_OR_URL` pairs (a bare PATH is the split 'test')."""
    qa: dict[str, str] = {}
    for value in values or []:
        split, sep, spec = value.partition("=")
        if not sep or not _SPLIT_RE.match(split.strip()):
            split, spec = "test", value
        split = _check_split(split.strip())
        if split in qa:
            raise PipelineError(f"--dpr-qa: split {split!r} given twice")
        qa[split] = spec
    return qa


def prepare_dpr(name: str, out: str | os.PathLike, *, dataset: str | None = None, train: str | None = None,
                tevatron_train: str | None = None, qa: dict[str, str] | None = None,
                passages: str | None = None, regex_answers: bool | None = None, positives: str = "first",
                cache_dir: str | os.PathLike | None = None, lock_file: str | os.PathLike | None = None,
                retries: int = 3, backoff: float = 1.0, timeout: float = 60.0, progress: bool = True) -> dict:
    """Convert DPR/Tevatron files (paths or URLs) into the normalised folder `out`; return the manifest.
    `dataset` (nq, trivia, webq, curatedtrec) fills in the official URLs of the files not given."""
    qa = dict(qa or {})
    for split in qa:
        _check_split(split)
    if positives not in ("first", "all"):
        raise PipelineError(f"--dpr-positives: expected 'first' or 'all', got {positives!r}")
    if train and tevatron_train:
        raise PipelineError("give either --dpr-train or --tevatron-train, not both")
    if dataset is not None:
        if dataset not in OFFICIAL:
            raise PipelineError(f"--dpr-dataset {dataset!r}: expected one of {sorted(OFFICIAL)}")
        official = OFFICIAL[dataset]
        if not tevatron_train:
            train = train or official["train"]
        for split, url in official["qa"].items():
            qa.setdefault(split, url)
        passages = passages or PASSAGES_URL
        if regex_answers is None:
            regex_answers = bool(official.get("regex"))
    regex_answers = bool(regex_answers)
    if "train" in qa and (train or tevatron_train):
        raise PipelineError("--dpr-qa train=...: the split name 'train' is taken by the training file")
    if not (train or tevatron_train or qa):
        raise PipelineError("--source dpr needs --dpr-dataset, or at least one of --dpr-train, --tevatron-train, "
                            "--dpr-qa")
    net = {"cache_dir": Path(cache_dir) if cache_dir else default_cache_dir(),
           "lock_path": Path(lock_file) if lock_file else default_lock_path(),
           "retries": retries, "backoff": backoff, "timeout": timeout, "progress": progress}
    # Every input is fetched and verified before any output is started.
    train_in = resolve_input("training file", train or tevatron_train, **net) if (train or tevatron_train) else None
    qa_in = {split: resolve_input(f"QA file of split {split!r}", spec, **net) for split, spec in qa.items()}
    passages_in = resolve_input("passages file", passages, **net) if passages else None
    with atomic_dir(out) as tmp:
        body = convert(tmp, train=train_in, train_format="tevatron" if tevatron_train else "dpr", qa=qa_in,
                       passages=passages_in, regex_answers=regex_answers, positives=positives)
        sources = {"train": train_in.spec if train_in else None,
                   "qa": {s: i.spec for s, i in qa_in.items()},
                   "passages": passages_in.spec if passages_in else None}
        manifest = {"manifest_version": MANIFEST_VERSION, "name": name, "source": "dpr", "dpr_dataset": dataset,
                    "inputs": sources, **body}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    c = manifest["counts"]
    log.info("%s: %d passages (%d added from the training file), %d queries, answers for %s", name, c["docs"],
             manifest["dpr"]["corpus"]["from_training_file"], c["queries"], sorted(c["answers"]) or "no split")
    return manifest


__all__ = ["IdSet", "OFFICIAL", "PASSAGES_URL", "PINNED_SHA256", "check_dpr_record", "check_tevatron_record",
           "convert", "fetch_verified", "iter_json_array", "iter_lines", "parse_answers_cell", "parse_qa_args",
           "prepare_dpr", "read_lock", "record_in_lock", "verify_gzip"]
