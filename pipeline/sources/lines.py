"""One line of an input file: decoded as UTF-8 (a byte-order mark dropped) and parsed as JSON, each
problem recorded with file:line (shared by pipeline.sources.prepare and pipeline.sources.dpr_data)."""

from __future__ import annotations

import json


INVALID_JSON = object()


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
