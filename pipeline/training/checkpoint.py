"""Training checkpoints that survive a torn write: each is written under a temporary name, its
sha256 recorded beside it (`checkpoint-step<N>.pt.sha256`, the format `sha256sum -c` reads), then
renamed into place; the newest two are kept. On resume the newest checkpoint whose bytes match
its recorded digest is used, and any that does not (a write cut short, a file truncated later) is
reported by name and skipped, so a crash costs at most one checkpoint interval more."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pipeline.core.common import atomic_path, atomic_write_text, log, sha256_file

KEEP = 2
LEGACY = "checkpoint.pt"  # un-numbered, without a digest: still resumed from, so older out folders stay resumable
_NAME = re.compile(r"^checkpoint-step(\d+)\.pt$")


def path_for(out: Path, step: int) -> Path:
    return Path(out) / f"checkpoint-step{step}.pt"


def digest_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def checkpoints(out: Path) -> list[Path]:
    """Numbered checkpoints in `out`, newest first."""
    found = [(int(m.group(1)), p) for p in Path(out).glob("checkpoint-step*.pt") if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def latest(out: Path) -> Path | None:
    """The newest checkpoint file, verified or not (for messages and tests)."""
    found = checkpoints(out)
    return found[0] if found else (Path(out) / LEGACY if (Path(out) / LEGACY).exists() else None)


def save(out: Path, step: int, state: dict[str, Any]) -> Path:
    """Write `state` as checkpoint `step` (torch.save through a temporary name, digest first, then
    the rename), and delete all but the newest KEEP checkpoints."""
    import torch

    path = path_for(out, step)
    with atomic_path(path, needed=_tensor_bytes(state)) as tmp:
        torch.save(state, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        # The digest is in place before the checkpoint: a checkpoint file never lacks one.
        atomic_write_text(digest_file(path), f"{sha256_file(tmp)}  {path.name}\n")
    for old in checkpoints(out)[KEEP:]:
        old.unlink(missing_ok=True)
        digest_file(old).unlink(missing_ok=True)
    (Path(out) / LEGACY).unlink(missing_ok=True)
    return path


def _tensor_bytes(obj) -> int:
    """About the size torch.save writes for `obj` (its tensors' bytes), for a full-disk message."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def verified(path: Path) -> bool:
    """Whether `path` holds the bytes its recorded digest names; a mismatch is reported by name."""
    record = digest_file(path)
    if not record.is_file():
        log.warning("checkpoint %s has no recorded sha256 (%s missing): skipped", path, record.name)
        return False
    expected = record.read_text().split()[0] if record.read_text().strip() else ""
    actual = sha256_file(path)
    if actual != expected:
        log.warning("checkpoint %s is damaged (sha256 %s, recorded %s in %s; %d bytes): a write was cut short or "
                    "the file changed since; using the previous checkpoint", path, actual[:12], expected[:12],
                    record.name, path.stat().st_size)
        return False
    return True


def load_latest_good(out: Path, map_location) -> tuple[Path, dict] | None:
    """(path, state) of the newest checkpoint that passes its checksum, or None to start afresh.
    Temporary files of a write that never reached its rename are removed."""
    import torch

    for tmp in Path(out).glob(".checkpoint-step*.pt.*.tmp"):
        log.warning("removing %s: a checkpoint write that never finished", tmp)
        tmp.unlink(missing_ok=True)
    for path in checkpoints(out):
        if verified(path):
            return path, torch.load(path, map_location=map_location, weights_only=False)
    legacy = Path(out) / LEGACY
    if legacy.exists():
        return legacy, torch.load(legacy, map_location=map_location, weights_only=False)
    return None


def remove_all(out: Path) -> None:
    """After a finished run: its checkpoints and their digests (also a digest whose checkpoint
    write was cut short before its rename)."""
    for path in [*checkpoints(out), *Path(out).glob("checkpoint-step*.pt.sha256")]:
        path.unlink(missing_ok=True)
    (Path(out) / LEGACY).unlink(missing_ok=True)
