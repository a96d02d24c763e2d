"""The `beir` source: the official BEIR zip (or one at --url), downloaded once into the cache,
checksum-verified, safely extracted, then read like a local folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pipeline.sources.beir_folder import read_beir_folder, write_dataset_folder
from pipeline.sources.beir_zip import BEIR_URL, dataset_root_in, digests, expected_checksums, extract_zip, fetch_zip
from pipeline.sources.download import default_cache_dir as _cache_dir
from pipeline.sources.kinds import register_source
from pipeline.sources.kinds.base import Source


def default_cache_dir() -> Path:
    return _cache_dir("beir", own_folder_under_env=False)


def prepare_beir(name: str, out: str | os.PathLike, *, url: str | None = None, sha256: str | None = None,
                 md5: str | None = None, cache_dir: str | os.PathLike | None = None, retries: int = 3,
                 backoff: float = 1.0, timeout: float = 60.0, progress: bool = True,
                 dev_split: dict | None = None) -> dict:
    url = url or BEIR_URL.format(name=name)
    expected = expected_checksums(name, url, sha256, md5)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    zip_path = fetch_zip(name, url, cache, expected, retries=retries, backoff=backoff, timeout=timeout,
                         progress=progress)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-extract.", dir=cache) as tmp:
        extract_zip(zip_path, Path(tmp), f"{url} (cached as {zip_path})")
        root, top = dataset_root_in(Path(tmp), name, f"{url} (cached as {zip_path})")
        data = read_beir_folder(root, label=f"{zip_path.name}:{top}" if top else zip_path.name)
    # Input hashes are keyed by member path inside the zip, which is stable, unlike the temp folder.
    data.input_sha256 = {(f"{top}/{rel}" if top else rel): h for rel, h in data.input_sha256.items()}
    info = {"name": name, "source": "beir", "url": url, "zip_sha256": digests(zip_path)["sha256"],
            "checksum_verified": sorted(expected)}
    return write_dataset_folder(data, out, info, dev_split)


@register_source("beir")
class BeirSource(Source):
    listed = 0
    flags = ("url", "sha256", "md5")

    def prepare(self, name, out, args, dev_split):
        return prepare_beir(name, out, url=args.url, sha256=args.sha256, md5=args.md5, cache_dir=args.cache_dir,
                            retries=args.retries, backoff=args.backoff, timeout=args.timeout,
                            progress=not args.no_progress, dev_split=dev_split)
