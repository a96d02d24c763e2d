"""The official BEIR zips: the download URL and published checksums, a verified copy in the
cache, and a safe extraction (no member may land outside the target folder)."""

from __future__ import annotations

import hashlib
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from pipeline.core.common import PipelineError, log
from pipeline.sources.download import download, human_size, url_key

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"

# md5 values are the ones the BEIR README publishes next to each download link. The scifact sha256
# is the digest independent projects recorded for the same 2,816,079-byte archive; sha256 is
# preferred when both are known because md5 alone is not collision resistant.
KNOWN_CHECKSUMS: dict[str, dict[str, str]] = {
    "msmarco": {"md5": "444067daf65d982533ea17ebd59501e4"},
    "trec-covid": {"md5": "ce62140cb23feb9becf6270d0d1fe6d1"},
    "nfcorpus": {"md5": "a89dba18a62ef92f7d323ec890a0d38d"},
    "nq": {"md5": "d4d3d2e48787a744b6f6e691ff534307"},
    "hotpotqa": {"md5": "f412724f78b0d91183a0e86805e16114"},
    "fiqa": {"md5": "17918ed23cd04fb15047f73e6c3bd9d9"},
    "arguana": {"md5": "8ad3e3c2a5867cdced806d6503f29b99"},
    "webis-touche2020": {"md5": "46f650ba5a527fc69e0a6521c5a23563"},
    "cqadupstack": {"md5": "4e41456d7df8ee7760a7f866133bda78"},
    "quora": {"md5": "18fb154900ba42a600f84b839c173167"},
    "dbpedia-entity": {"md5": "c2a39eb420a3164af735795df012ac2c"},
    "scidocs": {"md5": "38121350fc3a4d2f48850f6aff52e4a9"},
    "fever": {"md5": "5a818580227bfb4b35bb6fa46d9b6c03"},
    "climate-fever": {"md5": "8b66f0a9126c521bae2bde127b4dc99d"},
    "scifact": {"md5": "5f7d1de60b170fc8027bb7898e2efca1",
                "sha256": "536e14446a0ba56ed1398ab1055f39fe852686ecad24a6306c80c490fa8e0165"},
}


def expected_checksums(name: str, url: str, sha256: str | None, md5: str | None) -> dict[str, str]:
    """The checksums the zip must have: the ones given, else the published ones for the official
    URL, else none (with a warning)."""
    for algo, value, length in (("sha256", sha256, 64), ("md5", md5, 32)):
        if value is not None and not re.fullmatch(rf"[0-9a-fA-F]{{{length}}}", value):
            raise PipelineError(f"--{algo} {value!r}: expected {length} hex digits")
    given = {k: v.lower() for k, v in (("sha256", sha256), ("md5", md5)) if v}
    if given:
        return given
    if url == BEIR_URL.format(name=name) and name in KNOWN_CHECKSUMS:
        return dict(KNOWN_CHECKSUMS[name])
    log.warning("no checksum known for %s; the download cannot be verified (pass --sha256 to pin it)", url)
    return {}


def digests(path: Path) -> dict[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
            md5.update(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def _mismatch(path: Path, expected: dict[str, str]) -> str | None:
    got = digests(path)
    for algo in ("sha256", "md5"):
        if algo in expected and got[algo] != expected[algo].lower():
            return f"{algo} expected {expected[algo].lower()}, got {got[algo]}"
    return None


def fetch_zip(name: str, url: str, cache_dir: Path, expected: dict[str, str], *, retries: int = 3,
              backoff: float = 1.0, timeout: float = 60.0, progress: bool = True) -> Path:
    """Return a verified local copy of the zip, downloading it only if the cache lacks a good one."""
    cached = cache_dir / f"{name}-{url_key(url)}.zip"
    if cached.is_file():
        problem = _mismatch(cached, expected) if expected else None
        if problem is None:
            log.info("using cached %s", cached)
            return cached
        log.warning("cached %s fails its checksum (%s); downloading again", cached, problem)
        cached.unlink()
    log.info("downloading %s", url)
    download(url, cached, retries=retries, backoff=backoff, timeout=timeout, progress=progress)
    problem = _mismatch(cached, expected) if expected else None
    if problem is not None:
        cached.unlink(missing_ok=True)
        raise PipelineError(f"checksum mismatch for {url}: {problem}. The file was deleted; the host may "
                            f"have changed it or the transfer was corrupted")
    return cached


def _unsafe_member(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "'..' in path"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic link"
    return None


def extract_zip(zip_path: Path, target: Path, label: str) -> None:
    """Extract every member under `target`, refusing the whole archive if any member could land
    outside it (absolute path, '..', symlink), and turning a damaged archive into a clear error."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            _check_members(members, target, label)
            _extract_members(zf, members, target, label)
    except zipfile.BadZipFile as exc:
        raise PipelineError(f"{label}: corrupt or truncated zip ({exc}); delete it and download again") from None
    except (EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise PipelineError(f"{label}: cannot read zip ({type(exc).__name__}: {exc})") from None


def _check_members(members: list[zipfile.ZipInfo], target: Path, label: str) -> None:
    for info in members:
        reason = _unsafe_member(info)
        if reason:
            raise PipelineError(f"{label}: refusing to extract unsafe entry {info.filename!r} ({reason})")
    # A hostile or broken archive can claim more bytes than the disk holds; refuse up front
    # instead of failing half-way with a full disk.
    total = sum(info.file_size for info in members)
    free = shutil.disk_usage(target).free
    if total > free:
        raise PipelineError(f"{label}: unpacks to {human_size(total)} but only {human_size(free)} is free "
                            f"under {target}")


def _extract_members(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], target: Path, label: str) -> None:
    root = target.resolve()
    for info in members:
        dest = (target / info.filename.replace("\\", "/")).resolve()
        if dest != root and root not in dest.parents:
            raise PipelineError(f"{label}: refusing to extract {info.filename!r} (outside the target)")
        if info.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)


def dataset_root_in(extracted: Path, name: str, label: str) -> tuple[Path, str]:
    """The dataset folder inside an extracted zip and its path there ("" for the top)."""
    if (extracted / name / "corpus.jsonl").is_file():
        return extracted / name, name
    if (extracted / "corpus.jsonl").is_file():
        return extracted, ""
    tops = [p for p in extracted.iterdir() if p.is_dir()]
    if len(tops) == 1 and (tops[0] / "corpus.jsonl").is_file():
        return tops[0], tops[0].name
    raise PipelineError(f"{label}: no {name}/corpus.jsonl inside the zip (found: "
                        f"{sorted(p.name for p in extracted.iterdir())[:10]})")
