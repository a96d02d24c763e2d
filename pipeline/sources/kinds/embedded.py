"""The `embedded` source: a small dataset shipped in this repository under data/embedded/<name>/,
found relative to the package so it works from any working directory."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.core.common import PipelineError
from pipeline.sources.beir_folder import read_beir_folder, write_dataset_folder
from pipeline.sources.kinds import register_source
from pipeline.sources.kinds.base import Source

REPO_ROOT = Path(__file__).resolve().parents[3]
EMBEDDED_ROOT = REPO_ROOT / "data" / "embedded"


def embedded_path(name: str) -> Path:
    return EMBEDDED_ROOT / name


def prepare_embedded(name: str, out: str | os.PathLike, dev_split: dict | None = None) -> dict:
    folder = embedded_path(name)
    if not folder.is_dir():
        available = sorted(p.name for p in EMBEDDED_ROOT.iterdir() if p.is_dir()) if EMBEDDED_ROOT.is_dir() else []
        raise PipelineError(f"--name {name!r}: no embedded dataset at {folder}; available: {available}")
    data = read_beir_folder(folder, label=f"data/embedded/{name}")
    return write_dataset_folder(data, out, {"name": name, "source": "embedded", "path": f"data/embedded/{name}"},
                                dev_split)


@register_source("embedded")
class EmbeddedSource(Source):
    listed = 2

    def prepare(self, name, out, args, dev_split):
        return prepare_embedded(name, out, dev_split)
