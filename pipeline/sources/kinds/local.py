"""The `local` source: a BEIR-format folder already on disk."""

from __future__ import annotations

import os

from pipeline.core.common import PipelineError
from pipeline.sources.beir_folder import read_beir_folder, write_dataset_folder
from pipeline.sources.kinds import register_source
from pipeline.sources.kinds.base import Source


def prepare_local(name: str, path: str | os.PathLike, out: str | os.PathLike, dev_split: dict | None = None) -> dict:
    data = read_beir_folder(path)
    return write_dataset_folder(data, out, {"name": name, "source": "local", "path": str(path)}, dev_split)


@register_source("local")
class LocalSource(Source):
    listed = 1
    flags = ("path",)

    def prepare(self, name, out, args, dev_split):
        if not args.path:
            raise PipelineError("--source local needs --path (a BEIR-format folder)")
        return prepare_local(name, args.path, out, dev_split)
