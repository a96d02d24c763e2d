"""A top-level JSON array (DPR's training file, up to gigabytes) read element by element: memory
holds one element and one read chunk, never the whole array. Every error names the line and the
index of the element it is in."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any, Iterator

from pipeline.core.common import PipelineError
from pipeline.sources.lines import GZIP_ERRORS, gzip_problem, open_input

MAX_ELEMENT_CHARS = 64 * 1024 * 1024
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def iter_json_array(path: Path, label: str, digest, chunk_chars: int = 1 << 20
                    ) -> Iterator[tuple[int, int, Any]]:
    """(element index, line the element starts on, element) for each element of a top-level JSON
    array in a (gzipped) file, parsed incrementally with `json.JSONDecoder.raw_decode`."""
    with open_input(path, digest) as fh:
        text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="strict", newline="")
        yield from _ArrayReader(text, label, chunk_chars).elements()


class _ArrayReader:
    """A growing text buffer over the stream, the read position in it, and the line number of a
    buffer position (counted incrementally, so finding it never rescans the file)."""

    def __init__(self, stream, label: str, chunk_chars: int):
        self.stream, self.label, self.chunk_chars = stream, label, chunk_chars
        self.decoder = json.JSONDecoder()
        self.buf = ""
        self.eof = False
        self.lc_pos, self.lc_line = 0, 1   # line number lc_line at buffer position lc_pos
        self.end_pos = 0                   # just past the closing ']'

    def elements(self) -> Iterator[tuple[int, int, Any]]:
        pos = self._open_array()
        index = 0
        while pos is not None:
            if pos >= len(self.buf):
                self._fail(pos, f"file ends inside the array (after element {index - 1}; truncated download?)")
            if self.buf[pos] == "]" and index == 0:
                self.end_pos = pos + 1
                break
            start_line = self.line_of(pos)
            obj, end = self._decode_element(pos, index, start_line)
            yield index, start_line, obj
            pos = self._after_element(end, index)
            index += 1
            if pos is not None and pos > self.chunk_chars:
                pos = self._drop_parsed(pos)
        self._expect_end(self.end_pos)

    # ---- the array's frame
    def _open_array(self) -> int:
        pos = self.skip_ws(0)
        if pos >= len(self.buf):
            raise PipelineError(f"{self.label}:1: file is empty; expected a JSON array of training questions")
        if self.buf[pos] != "[":
            self._fail(pos, f"expected a JSON array ('['), got {self.buf[pos:pos + 20]!r}")
        return self.skip_ws(pos + 1)

    def _after_element(self, end: int, index: int) -> int | None:
        """The position of the next element, or None after the closing ']' (kept in end_pos)."""
        pos = self.skip_ws(end)
        if pos < len(self.buf) and self.buf[pos] == ",":
            return self.skip_ws(pos + 1)
        if pos < len(self.buf) and self.buf[pos] == "]":
            self.end_pos = pos + 1
            return None
        if pos >= len(self.buf):
            self._fail(pos, f"file ends inside the array (after element {index}; truncated download?)")
        self._fail(pos, f"expected ',' or ']' after element {index}, got {self.buf[pos:pos + 20]!r}")

    def _expect_end(self, pos: int) -> None:
        pos = self.skip_ws(pos)
        if pos < len(self.buf):
            self._fail(pos, f"unexpected content after the JSON array: {self.buf[pos:pos + 20]!r}")

    # ---- one element
    def _decode_element(self, pos: int, index: int, start_line: int) -> tuple[Any, int]:
        want = self.chunk_chars
        while True:
            try:
                obj, end = self.decoder.raw_decode(self.buf, pos)
            except json.JSONDecodeError as exc:
                # Probably cut off by the end of the buffer: read more (doubling, so a long
                # element costs O(n log n)), up to a cap; only then is the error real.
                if len(self.buf) - pos < MAX_ELEMENT_CHARS and self.more(want):
                    want *= 2
                    continue
                self._fail(exc.pos, f"element {index} (starting on line {start_line}): "
                                    f"{self._element_problem(exc, pos)}")
            if end >= len(self.buf) and self.more(want):  # a value cut off at a chunk edge may go on
                want *= 2
                continue
            return obj, end

    def _element_problem(self, exc: json.JSONDecodeError, pos: int) -> str:
        if self.eof and exc.pos >= len(self.buf) - 1:
            return "file ends inside this element (truncated download?)"
        if len(self.buf) - pos >= MAX_ELEMENT_CHARS:
            return f"invalid JSON or an element longer than {MAX_ELEMENT_CHARS:,} characters ({exc.msg})"
        return f"invalid JSON ({exc.msg} at column {exc.colno})"

    # ---- the buffer
    def more(self, n: int) -> bool:
        """Append up to n more characters; False at the end of the file."""
        if self.eof:
            return False
        try:
            piece = self.stream.read(n)
        except UnicodeDecodeError as exc:
            self._fail(len(self.buf), f"not valid UTF-8 ({exc.reason}); save the file as UTF-8")
        except GZIP_ERRORS as exc:
            self._fail(len(self.buf), gzip_problem(exc))
        if not piece:
            self.eof = True
            return False
        self.buf += piece
        return True

    def skip_ws(self, pos: int) -> int:
        while True:
            pos = _WHITESPACE.match(self.buf, pos).end()
            if pos < len(self.buf) or not self.more(self.chunk_chars):
                return pos

    def _drop_parsed(self, pos: int) -> int:
        """Forget the parsed text before `pos`, so the buffer holds about one element."""
        self.lc_line = self.line_of(pos)
        self.buf = self.buf[pos:]
        self.lc_pos = 0
        return 0

    def line_of(self, pos: int) -> int:
        if pos >= self.lc_pos:
            self.lc_line += self.buf.count("\n", self.lc_pos, pos)
            self.lc_pos = pos
            return self.lc_line
        return self.lc_line - self.buf.count("\n", pos, self.lc_pos)

    def _fail(self, pos: int, what: str):
        raise PipelineError(f"{self.label}:{self.line_of(pos)}: {what}") from None
