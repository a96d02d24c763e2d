"""Dataset sources -> one validated, normalised BEIR-layout folder with a manifest.

Three sources feed the same validator and writer:
  beir      the official BEIR zip, downloaded once into a cache, checksum-verified, safely extracted
  local     a BEIR-format folder already on disk
  embedded  a small dataset shipped in this repository under data/embedded/<name>/

The output folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv, manifest.json) is what
`pipeline.sources.datasets.load_dataset` reads; every later step trusts it, so all checking happens here
and every problem is reported as `<file>:<line>: <what is wrong>`.

Examples:
  python -m pipeline.sources.prepare --name scifact-mini --source embedded --out results/data/scifact-mini
  python -m pipeline.sources.prepare --name scifact --source local --path ../shared/data/scifact --out results/data/scifact
  python -m pipeline.sources.prepare --name scifact --source beir --out results/data/scifact
  python -m pipeline.sources.prepare --name nq --source dpr --dpr-dataset nq --out results/data/nq

The `dpr` source (DPR-format and Tevatron files, answers for QA splits) lives in pipeline.sources.dpr_data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from pipeline.core.common import PipelineError, atomic_dir, log, run_main, sha256_file
from pipeline.core.layout import MANIFEST, MANIFEST_VERSION, Layout
from pipeline.sources.download import default_cache_dir as _cache_dir, download, human_size, url_key
from pipeline.sources.lines import INVALID_JSON, MAX_ERRORS, Problems, iter_lines, parse_json_line, require_file
from pipeline.sources.dpr_data import parse_qa_args, prepare_dpr
from pipeline.sources.dev_split import carve, parse

REPO_ROOT = Path(__file__).resolve().parents[2]
EMBEDDED_ROOT = REPO_ROOT / "data" / "embedded"
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
QRELS_HEADER = ("query-id", "corpus-id", "score")
_NOT_LINES = " (is this really a line-oriented text file?)"

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

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# ----------------------------------------------------------------------------- validation
def _read_jsonl_records(path: Path, label: str, kind: str, errors: Problems, digest,
                        allow_title: bool) -> dict[str, dict]:
    records: dict[str, dict] = {}
    first_line: dict[str, int] = {}
    seen_any = False
    for lineno, text in iter_lines(path, label, errors, digest, gunzip=False, too_long_hint=_NOT_LINES):
        seen_any = True
        where = f"{label}:{lineno}"
        obj = parse_json_line(text, where, errors)
        if obj is INVALID_JSON:
            continue
        if not isinstance(obj, dict):
            errors.add(f"{where}: expected a JSON object per line, got {type(obj).__name__}")
            continue
        if "_id" not in obj:
            errors.add(f"{where}: missing '_id'")
            continue
        raw_id = obj["_id"]
        # Some BEIR-style exports write numeric ids; BEIR itself treats every id as a string.
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            errors.add(f"{where}: '_id' must be a string, got {type(raw_id).__name__}")
            continue
        doc_id = str(raw_id)
        if not doc_id.strip():
            errors.add(f"{where}: '_id' is empty")
            continue
        if "text" not in obj:
            errors.add(f"{where}: missing 'text' (id {doc_id!r})")
            continue
        if not isinstance(obj["text"], str):
            errors.add(f"{where}: 'text' must be a string, got {type(obj['text']).__name__} (id {doc_id!r})")
            continue
        title = obj.get("title")
        if allow_title and title is not None and not isinstance(title, str):
            errors.add(f"{where}: 'title' must be a string, got {type(title).__name__} (id {doc_id!r})")
            continue
        if doc_id in records:
            errors.add(f"{where}: duplicate _id {doc_id!r} (first on line {first_line[doc_id]})")
            continue
        first_line[doc_id] = lineno
        records[doc_id] = ({"_id": doc_id, "title": title or "", "text": obj["text"]} if allow_title
                           else {"_id": doc_id, "text": obj["text"]})
    if not seen_any:
        errors.add(f"{label}:1: no {kind} (file has only blank lines)")
    return records


def _read_qrels(path: Path, label: str, errors: Problems, digest, corpus: dict, queries: dict,
                queries_label: str, corpus_label: str, check_ids: bool) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    header_seen = False
    data_lines = 0
    for lineno, text in iter_lines(path, label, errors, digest, gunzip=False, too_long_hint=_NOT_LINES):
        where = f"{label}:{lineno}"
        cols = text.split("\t")
        if not header_seen:
            header_seen = True
            if tuple(c.strip() for c in cols) == QRELS_HEADER:
                continue
            looks_like_data = len(cols) == 3 and cols[2].strip().lstrip("-").isdigit()
            errors.add(f"{where}: " + ("missing header line" if looks_like_data else "wrong header")
                       + f"; expected 'query-id<TAB>corpus-id<TAB>score', got {text[:80]!r}")
            continue
        data_lines += 1
        if len(cols) != 3:
            errors.add(f"{where}: expected 3 tab-separated columns (query-id, corpus-id, score), got {len(cols)}")
            continue
        qid, did, score_text = (c.strip() for c in cols)
        try:
            score = int(score_text)
        except ValueError:
            errors.add(f"{where}: score {score_text!r} is not an integer")
            continue
        if not check_ids:
            continue
        bad = False
        if qid not in queries:
            errors.add(f"{where}: query-id {qid!r} is not in {queries_label}")
            bad = True
        if did not in corpus:
            errors.add(f"{where}: corpus-id {did!r} is not in {corpus_label}")
            bad = True
        if bad:
            continue
        key = (qid, did)
        if key in first_line:
            if qrels[qid][did] != score:
                errors.add(f"{where}: ({qid!r}, {did!r}) judged {score} here but {qrels[qid][did]} "
                           f"on line {first_line[key]}")
            continue  # an exact repeat carries no information; keep the first
        first_line[key] = lineno
        qrels.setdefault(qid, {})[did] = score
    if not header_seen:
        errors.add(f"{label}:1: no header and no judgements (file has only blank lines)")
    elif data_lines == 0:
        errors.add(f"{label}:1: empty split (a header but no judgements)")
    return qrels


@dataclass
class BeirData:
    corpus: dict[str, dict]
    queries: dict[str, dict]
    qrels: dict[str, dict[str, dict[str, int]]]
    input_sha256: dict[str, str] = field(default_factory=dict)


def read_beir_folder(root: str | os.PathLike, label: str | None = None) -> BeirData:
    """Read and validate a BEIR-format folder. `label` replaces the folder in error messages (for
    a temporary extraction folder the user never sees); every message names file and line."""
    root = Path(root)
    label = label if label is not None else str(root)
    if not root.is_dir():
        raise PipelineError(f"{label}: dataset folder not found")
    errors = Problems(label)
    hashes: dict[str, str] = {}

    def read(rel: str, reader: Callable):
        path = root / rel
        where = f"{label}/{rel}"
        require_file(path, where)
        digest = hashlib.sha256()
        result = reader(path, where, digest)
        hashes[rel] = digest.hexdigest()
        return result

    corpus = read("corpus.jsonl", lambda p, w, d: _read_jsonl_records(p, w, "documents", errors, d, True))
    queries = read("queries.jsonl", lambda p, w, d: _read_jsonl_records(p, w, "queries", errors, d, False))
    # A broken corpus or queries line would make every qrels row that points at it look wrong
    # too; that noise would hide the real cause, so ids are only resolved against clean files.
    check_ids = not errors.items
    qrels_dir = root / "qrels"
    split_files = sorted(qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
    if not split_files:
        raise PipelineError(f"{label}/qrels: no qrels/<split>.tsv files found")
    qrels = {}
    for path in split_files:
        rel = f"qrels/{path.name}"
        qrels[path.stem] = read(rel, lambda p, w, d: _read_qrels(
            p, w, errors, d, corpus, queries, f"{label}/queries.jsonl", f"{label}/corpus.jsonl", check_ids))
    errors.raise_if_any()
    return BeirData(corpus, queries, qrels, hashes)


# ----------------------------------------------------------------------------- writing
def _jsonl_line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")) + "\n"


def write_normalized(data: BeirData, folder: Path) -> dict[str, str]:
    """Write the BEIR layout into `folder` (an existing, empty folder) and return the sha256 of
    each file written, keyed by its path relative to the folder."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(_jsonl_line({"_id": d["_id"], "title": d["title"], "text": d["text"]})
                      for d in data.corpus.values())
    with open(folder / "queries.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(_jsonl_line({"_id": q["_id"], "text": q["text"]}) for q in data.queries.values())
    for split, judged in data.qrels.items():
        with open(folder / "qrels" / f"{split}.tsv", "w", encoding="utf-8", newline="\n") as fh:
            fh.write("\t".join(QRELS_HEADER) + "\n")
            for qid, docs in judged.items():
                fh.writelines(f"{qid}\t{did}\t{score}\n" for did, score in docs.items())
    rels = ["corpus.jsonl", "queries.jsonl"] + [f"qrels/{s}.tsv" for s in data.qrels]
    return {rel: sha256_file(folder / rel) for rel in sorted(rels)}


def counts(data: BeirData) -> dict:
    return {
        "docs": len(data.corpus),
        "queries": len(data.queries),
        "splits": {split: {"queries": len(judged), "pairs": sum(len(d) for d in judged.values()),
                           "relevant_pairs": sum(1 for d in judged.values() for g in d.values() if g > 0)}
                   for split, judged in sorted(data.qrels.items())},
    }


def write_dataset_folder(data: BeirData, out: str | os.PathLike, source_info: dict,
                         dev_split: dict | None = None) -> dict:
    """Write the normalised folder and its manifest atomically; return the manifest. `dev_split`
    (pipeline.sources.dev_split.parse) first moves a seeded set of training queries into a split of their own."""
    if dev_split:
        source_info = {**source_info, "dev_split": carve(data.qrels, dev_split)}
    with atomic_dir(out) as tmp:
        output_sha = write_normalized(data, tmp)
        manifest = {"manifest_version": MANIFEST_VERSION, **source_info, "counts": counts(data),
                    "input_sha256": dict(sorted(data.input_sha256.items())), "output_sha256": output_sha}
        # Written directly: the whole folder is swapped in by atomic_dir.
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                           encoding="utf-8")
    return manifest


# ----------------------------------------------------------------------------- download
def _digests(path: Path) -> dict[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
            md5.update(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def _mismatch(path: Path, expected: dict[str, str]) -> str | None:
    got = _digests(path)
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
            for info in members:
                reason = _unsafe_member(info)
                if reason:
                    raise PipelineError(f"{label}: refusing to extract unsafe entry {info.filename!r} "
                                        f"({reason})")
            # A hostile or broken archive can claim more bytes than the disk holds; refuse up
            # front instead of failing half-way with a full disk.
            total = sum(info.file_size for info in members)
            free = shutil.disk_usage(target).free
            if total > free:
                raise PipelineError(f"{label}: unpacks to {human_size(total)} but only {human_size(free)} is free "
                                    f"under {target}")
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
    except zipfile.BadZipFile as exc:
        raise PipelineError(f"{label}: corrupt or truncated zip ({exc}); delete it and download again") from None
    except (EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise PipelineError(f"{label}: cannot read zip ({type(exc).__name__}: {exc})") from None


def _dataset_root_in(extracted: Path, name: str, label: str) -> tuple[Path, str]:
    if (extracted / name / "corpus.jsonl").is_file():
        return extracted / name, name
    if (extracted / "corpus.jsonl").is_file():
        return extracted, ""
    tops = [p for p in extracted.iterdir() if p.is_dir()]
    if len(tops) == 1 and (tops[0] / "corpus.jsonl").is_file():
        return tops[0], tops[0].name
    raise PipelineError(f"{label}: no {name}/corpus.jsonl inside the zip (found: "
                        f"{sorted(p.name for p in extracted.iterdir())[:10]})")


# ----------------------------------------------------------------------------- sources
def check_name(name: str) -> str:
    # The name becomes part of paths and URLs, so it must not be able to climb out of them.
    if not _NAME_RE.match(name):
        raise PipelineError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (starting with a letter or digit)")
    return name


def expected_checksums(name: str, url: str, sha256: str | None, md5: str | None) -> dict[str, str]:
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
        root, top = _dataset_root_in(Path(tmp), name, f"{url} (cached as {zip_path})")
        data = read_beir_folder(root, label=f"{zip_path.name}:{top}" if top else zip_path.name)
    # Input hashes are keyed by member path inside the zip, which is stable, unlike the temp folder.
    data.input_sha256 = {(f"{top}/{rel}" if top else rel): h for rel, h in data.input_sha256.items()}
    info = {"name": name, "source": "beir", "url": url, "zip_sha256": _digests(zip_path)["sha256"],
            "checksum_verified": sorted(expected)}
    return write_dataset_folder(data, out, info, dev_split)


def prepare_local(name: str, path: str | os.PathLike, out: str | os.PathLike, dev_split: dict | None = None) -> dict:
    data = read_beir_folder(path)
    return write_dataset_folder(data, out, {"name": name, "source": "local", "path": str(path)}, dev_split)


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


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.sources.prepare",
        description="Fetch or read a BEIR-format dataset, validate every file (errors name file:line), "
                    "and write a normalised folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv, "
                    "manifest.json) atomically.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m pipeline.sources.prepare --name scifact-mini --source embedded --out results/data/scifact-mini\n"
               "  python -m pipeline.sources.prepare --name scifact --source local --path ../shared/data/scifact "
               "--out results/data/scifact\n"
               "  python -m pipeline.sources.prepare --name scifact --source beir --out results/data/scifact\n"
               "  python -m pipeline.sources.prepare --name dpr-mini --source dpr --dpr-train data/embedded/dpr-mini/train.json "
               "--dpr-qa test=data/embedded/dpr-mini/test.qa.csv --dpr-passages data/embedded/dpr-mini/psgs.tsv\n"
               "  python -m pipeline.sources.prepare --name nq --source dpr --dpr-dataset nq   (official URLs, 13 GB passages)\n"
               f"\nknown BEIR checksums: {', '.join(sorted(KNOWN_CHECKSUMS))}",
    )
    p.add_argument("--name", required=True, help="dataset name (BEIR name for --source beir, folder name "
                                                 "under data/embedded/ for --source embedded)")
    p.add_argument("--source", required=True, choices=["beir", "local", "embedded", "dpr"],
                   help="where the data comes from")
    p.add_argument("--path", metavar="DIR", help="BEIR-format folder (required for --source local)")
    p.add_argument("--url", help="zip URL for --source beir (default: the official BEIR URL for --name)")
    p.add_argument("--sha256", metavar="HEX", help="expected sha256 of the zip (overrides the built-in table)")
    p.add_argument("--md5", metavar="HEX", help="expected md5 of the zip (overrides the built-in table)")
    p.add_argument("--cache-dir", metavar="DIR", help="where downloaded zips are kept (default: $PIPELINE_CACHE_DIR or "
                                       "~/.cache/infonce-bench/beir)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: results/data/<name>)")
    p.add_argument("--retries", type=int, default=3, help="retries for transient download failures (default 3)")
    p.add_argument("--backoff", type=float, default=1.0,
                   help="seconds before the first retry; doubles each time (default 1.0)")
    p.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")
    p.add_argument("--no-progress", action="store_true", help="hide the download progress bar")
    p.add_argument("--dev-split", metavar="JSON",
                   help='carve a dev split out of the training queries: {"size": N | "fraction": F, "seed": S, '
                        '"name": "dev", "from": "train"}; queries of any other split are never chosen, the dev '
                        'queries leave the train split, and the manifest records the choice (not for --source dpr)')
    g = p.add_argument_group("--source dpr (DPR-format / Tevatron files; each FILE is a path or an http(s) URL)")
    g.add_argument("--dpr-dataset", choices=["nq", "trivia", "webq", "curatedtrec"],
                   help="use the official DPR URLs for every file not given below (training JSON, QA "
                        "dev/test files, psgs_w100.tsv.gz); curatedtrec implies --answer-regex")
    g.add_argument("--dpr-train", metavar="FILE", help="DPR training JSON (.json or .json.gz)")
    g.add_argument("--tevatron-train", metavar="FILE", help="Tevatron training JSONL (.jsonl or .jsonl.gz)")
    g.add_argument("--dpr-qa", metavar="SPLIT=FILE", action="append",
                   help="QA file (question<TAB>[answers]) evaluated by answer accuracy as SPLIT; repeatable; "
                        "a bare FILE is the split 'test'")
    g.add_argument("--dpr-passages", metavar="FILE", help="passages TSV id<TAB>text<TAB>title (.tsv or .tsv.gz)")
    g.add_argument("--answer-regex", action=argparse.BooleanOptionalAction, default=None,
                   help="the QA answers are regular expressions (CuratedTREC)")
    g.add_argument("--dpr-positives", choices=["first", "all"], default="first",
                   help="positives per training question in qrels/train.tsv: the first (what DPR trains on, "
                        "default) or all")
    g.add_argument("--lock-file", metavar="FILE",
                   help="checksum lock file for downloads (default: $PIPELINE_CHECKSUM_LOCK or "
                        "config/checksums.lock)")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    name = check_name(args.name)
    out = args.out or str(Layout().data(name))
    if args.source != "local" and args.path:
        raise PipelineError(f"--path is only used with --source local (got --source {args.source})")
    if args.source != "beir" and (args.url or args.sha256 or args.md5):
        raise PipelineError(f"--url/--sha256/--md5 are only used with --source beir (got --source {args.source})")
    dpr_flags = [f"--{k.replace('_', '-')}" for k in ("dpr_dataset", "dpr_train", "tevatron_train", "dpr_qa",
                                                       "dpr_passages", "answer_regex", "lock_file")
                 if getattr(args, k) is not None]
    if args.source != "dpr" and (dpr_flags or args.dpr_positives != "first"):
        raise PipelineError(f"{', '.join(dpr_flags) or '--dpr-positives'}: only used with --source dpr "
                            f"(got --source {args.source})")
    if args.retries < 0 or args.backoff < 0 or args.timeout <= 0:
        raise PipelineError("--retries and --backoff must be >= 0 and --timeout > 0")
    dev_split = None
    if args.dev_split:
        if args.source == "dpr":
            raise PipelineError("--dev-split: not available for --source dpr (its QA files already give dev splits)")
        dev_split = parse(args.dev_split)
    t0 = time.perf_counter()
    if args.source == "beir":
        manifest = prepare_beir(name, out, url=args.url, sha256=args.sha256, md5=args.md5,
                                cache_dir=args.cache_dir, retries=args.retries, backoff=args.backoff,
                                timeout=args.timeout, progress=not args.no_progress, dev_split=dev_split)
    elif args.source == "dpr":
        manifest = prepare_dpr(name, out, dataset=args.dpr_dataset, train=args.dpr_train,
                               tevatron_train=args.tevatron_train, qa=parse_qa_args(args.dpr_qa),
                               passages=args.dpr_passages, regex_answers=args.answer_regex,
                               positives=args.dpr_positives, cache_dir=args.cache_dir, lock_file=args.lock_file,
                               retries=args.retries, backoff=args.backoff, timeout=args.timeout,
                               progress=not args.no_progress)
    elif args.source == "local":
        if not args.path:
            raise PipelineError("--source local needs --path (a BEIR-format folder)")
        manifest = prepare_local(name, args.path, out, dev_split)
    else:
        manifest = prepare_embedded(name, out, dev_split)
    c = manifest["counts"]
    splits = ", ".join(f"{s}: {v['queries']} queries / {v['pairs']} pairs" for s, v in c["splits"].items())
    log.info("%s: %d docs, %d queries (%s) -> %s in %.1fs", name, c["docs"], c["queries"], splits, out,
             time.perf_counter() - t0)
    return manifest


if __name__ == "__main__":
    run_main(main)
