"""Shared plumbing for every pipeline step: user-facing errors, atomic outputs, seeding and
the `main()` wrapper that turns a PipelineError into one clear line on stderr and exit code 2."""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

log = logging.getLogger("pipeline")


class PipelineError(Exception):
    """An error caused by the user's input (config, data file, model path). The message must name
    the file, line or config key and say what was expected; it is shown without a traceback."""


# ----------------------------------------------------------------------------- full disks
SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
# What C++ writers (torch, FAISS, safetensors) put in the message when they wrap such an errno.
_SPACE_TEXT = ("No space left", "File too large", "quota exceeded")


class DiskFullError(PipelineError):
    """A write that failed for lack of space (ENOSPC, EDQUOT) or a file-size limit (EFBIG). It
    names the output and the bytes it needs; the previous output of that name is untouched."""

    def __init__(self, path: Path, written: int, needed: int | None, cause: BaseException | str):
        self.path, self.written, self.needed, self.cause = Path(path), written, needed, cause
        free = shutil.disk_usage(_existing_parent(self.path)).free
        limit = _file_size_limit()
        need = f"{needed} bytes needed" if needed else f"at least {max(written, 1)} bytes needed"
        super().__init__(f"{self.path}: no space to write it ({need}, {written} written before the write failed; "
                         f"{free} bytes free on its file system"
                         + (f", file-size limit {limit} bytes" if limit is not None else "")
                         + f"): {cause}. Nothing was replaced; free space and run the step again")

    def at(self, path: Path) -> "DiskFullError":
        """The same error named after the final output (a temporary folder's file -> its real path)."""
        return DiskFullError(path, self.written, self.needed, self.cause)


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _file_size_limit() -> int | None:
    import resource

    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def out_of_space(exc: BaseException, written: int) -> bool:
    """Whether a failed write ran out of space: the errno when the writer kept it, else the
    writer's message, the file-size limit reached, or a file system with under 1 MiB free."""
    if isinstance(exc, OSError) and exc.errno in SPACE_ERRNOS:
        return True
    if any(text in str(exc) for text in _SPACE_TEXT):
        return True
    limit = _file_size_limit()
    return (limit is not None and written >= limit) or shutil.disk_usage(Path.cwd()).free < 2**20


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


# ----------------------------------------------------------------------------- atomic outputs
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_sibling(path: Path, suffix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); outputs get the permissions a plain open() would.
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


KILL_BEFORE_RENAME = "PIPELINE_KILL_BEFORE_RENAME"


def _kill_point(path: Path) -> None:
    """Test hook: when PIPELINE_KILL_BEFORE_RENAME is a glob matching an output's name, the
    process SIGKILLs itself after the write and before the rename (what a killed job leaves)."""
    pattern = os.environ.get(KILL_BEFORE_RENAME)
    if pattern and fnmatch.fnmatch(path.name, pattern):
        os.kill(os.getpid(), signal.SIGKILL)


def _rename_into_place(tmp: Path, path: Path) -> None:
    _kill_point(path)
    os.replace(tmp, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write through a temporary file in the same folder and rename, so a reader (or a later
    Snakemake job) never sees a half-written file."""
    path = Path(path)
    tmp = _tmp_sibling(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _rename_into_place(tmp, path)
    except OSError as exc:
        if out_of_space(exc, _size(tmp)):
            raise DiskFullError(path, _size(tmp), len(data), exc) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer that needs a file name (FAISS, torch);
    rename it into place only if the block succeeds. A writer that runs out of space raises
    DiskFullError naming `path` (`needed`: the expected size, when the caller knows it)."""
    path = Path(path)
    tmp = _tmp_sibling(path, suffix=path.suffix)
    try:
        yield tmp
        _rename_into_place(tmp, path)
    except DiskFullError:  # a file written inside the block, already named
        raise
    except Exception as exc:
        if out_of_space(exc, _size(tmp)):
            raise DiskFullError(path, _size(tmp), needed, exc) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a whole output folder under a temporary name and swap it in at the end. A failure
    leaves any previous folder untouched and no partial folder behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    # mkdtemp makes the folder private (0700); give it the permissions a plain mkdir would.
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        try:
            yield tmp
        except DiskFullError as exc:  # raised by a file written inside: name it in the final folder
            inner = exc.path.relative_to(tmp) if exc.path.is_relative_to(tmp) else Path(exc.path.name)
            raise exc.at(path / inner) from exc
        except Exception as exc:
            if not out_of_space(exc, _size(tmp)):
                raise
            files = sorted((p for p in tmp.rglob("*") if p.is_file()), key=lambda p: p.stat().st_mtime_ns)
            failed = path / files[-1].relative_to(tmp) if files else path
            raise DiskFullError(failed, _size(tmp), None, exc) from exc
        _kill_point(path)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- small helpers
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None


def iter_keyed_jsonl(path: str | os.PathLike, key: str) -> Iterator[tuple[str, str, dict]]:
    """(key value, "file:line", row) for every non-blank line of a JSONL file of objects keyed by
    the string field `key`; invalid JSON, a missing key and a repeated key each fail naming the
    line."""
    path = Path(path)
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PipelineError(f"{where}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get(key), str):
                raise PipelineError(f"{where}: expected an object with a string '{key}'")
            if row[key] in seen:
                raise PipelineError(f"{where}: duplicate {key} {row[key]!r}")
            seen.add(row[key])
            yield row[key], where, row


def parse_json_object(text: str, flag: str = "--params-json") -> dict:
    """Parse a JSON-object command-line argument, naming the flag on error."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{flag}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise PipelineError(f"{flag}: expected a JSON object")
    return value


def command_parser(prog: str, description: str):
    """The command line of a tool with subcommands (`python -m pipeline.<stage>.<tool> <command> ...`):
    the parser, with the module docstring as help, and its required subcommand group."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser, parser.add_subparsers(dest="command", required=True)


def step_parser(prog: str, description: str, folders: dict[str, str], params_defaults: dict | None = None):
    """The command line of a step that reads and writes folders (each a required --flag) and, given
    `params_defaults`, takes its parameters as one JSON object whose help shows every default. A
    module docstring as the description keeps its line breaks; a one-line description is wrapped."""
    import argparse

    formatter = argparse.RawDescriptionHelpFormatter if "\n" in description else argparse.HelpFormatter
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=formatter)
    for flag, help_text in folders.items():
        parser.add_argument(f"--{flag}", required=True, help=help_text)
    if params_defaults is not None:
        parser.add_argument("--params-json", default="{}",
                            help="JSON object of parameters; keys left out take these defaults: "
                                 + json.dumps(params_defaults).replace("%", "%%"))
    return parser


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    import torch

    torch.manual_seed(seed)


def git(*args: str) -> str | None:
    """Output of a git command run in this checkout, or None outside one (an installed copy)."""
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def git_commit() -> str:
    """The commit of the code that is running, so published results say what produced them."""
    return (git("rev-parse", "HEAD") or "unknown").strip()


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run_main(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Entry-point wrapper: user errors print one line and exit 2; bugs keep their traceback."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    setup_logging(verbose=os.environ.get("PIPELINE_VERBOSE") == "1")
    try:
        main(argv)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in SPACE_ERRNOS:
            raise
        print(f"error: {exc.filename or 'a write'}: no space to write it ({exc.strerror}); free space and run the "
              "step again", file=sys.stderr)
        sys.exit(2)


def set_threads() -> None:
    """Honour OMP_NUM_THREADS (what Snakemake's `threads:` sets) for torch and FAISS alike."""
    value = os.environ.get("OMP_NUM_THREADS")
    if value and value.isdigit() and int(value) > 0:
        import faiss
        import torch

        torch.set_num_threads(int(value))
        faiss.omp_set_num_threads(int(value))
