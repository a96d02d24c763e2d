"""`python -m pipeline.sources.prepare`: a dataset source -> one validated, normalised folder with
a manifest.

The sources (pipeline.sources.kinds, one registered class each) feed the same validator and writer:
  beir      the official BEIR zip, downloaded once into a cache, checksum-verified, safely extracted
  local     a BEIR-format folder already on disk
  embedded  a small dataset shipped in this repository under data/embedded/<name>/
  dpr       DPR-format and Tevatron files (streamed), with answers for QA splits

The output folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv, manifest.json) is what
`pipeline.sources.datasets.load_dataset` reads; every later step trusts it, so all checking happens
while it is written, and every problem is reported as `<file>:<line>: <what is wrong>`.

Examples:
  python -m pipeline.sources.prepare --name scifact-mini --source embedded --out results/data/scifact-mini
  python -m pipeline.sources.prepare --name scifact --source local --path ../shared/data/scifact --out results/data/scifact
  python -m pipeline.sources.prepare --name scifact --source beir --out results/data/scifact
  python -m pipeline.sources.prepare --name nq --source dpr --dpr-dataset nq --out results/data/nq
"""

from __future__ import annotations

import argparse
import re
import time

from pipeline.core.common import PipelineError, log, run_main
from pipeline.core.layout import Layout
from pipeline.sources.beir_folder import BeirData, counts, read_beir_folder, write_dataset_folder, write_normalized
from pipeline.sources.beir_zip import KNOWN_CHECKSUMS
from pipeline.sources.dev_split import parse
from pipeline.sources.kinds import all_sources, get_source
from pipeline.sources.kinds.base import Source
from pipeline.sources.kinds.beir import prepare_beir
from pipeline.sources.kinds.embedded import prepare_embedded
from pipeline.sources.kinds.local import prepare_local

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_name(name: str) -> str:
    # The name becomes part of paths and URLs, so it must not be able to climb out of them.
    if not _NAME_RE.match(name):
        raise PipelineError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (starting with a letter or digit)")
    return name


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
    p.add_argument("--source", required=True, choices=[cls.name for cls in all_sources()],
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


def _refuse_other_sources_flags(args: argparse.Namespace) -> None:
    """An option of another source is a mistake, never silently ignored. Sources are checked in
    the order their options appear in --help, so the first wrong option is the one reported."""
    position = {dest: i for i, dest in enumerate(vars(args))}
    others = [cls for cls in all_sources() if cls.name != args.source and cls.flags]
    for cls in sorted(others, key=lambda cls: position[cls.flags[0]]):
        problem = cls.misused_flags(args)
        if problem:
            raise PipelineError(problem)


def _dev_split(args: argparse.Namespace, source: type[Source]) -> dict | None:
    if not args.dev_split:
        return None
    if source.dev_split_refusal:
        raise PipelineError(source.dev_split_refusal)
    return parse(args.dev_split)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    name = check_name(args.name)
    out = args.out or str(Layout().data(name))
    source = get_source(args.source)
    _refuse_other_sources_flags(args)
    if args.retries < 0 or args.backoff < 0 or args.timeout <= 0:
        raise PipelineError("--retries and --backoff must be >= 0 and --timeout > 0")
    dev_split = _dev_split(args, source)
    t0 = time.perf_counter()
    manifest = source().prepare(name, out, args, dev_split)
    c = manifest["counts"]
    splits = ", ".join(f"{s}: {v['queries']} queries / {v['pairs']} pairs" for s, v in c["splits"].items())
    log.info("%s: %d docs, %d queries (%s) -> %s in %.1fs", name, c["docs"], c["queries"], splits, out,
             time.perf_counter() - t0)
    return manifest


# The programmatic API other steps, scripts and tests call.
__all__ = ["BeirData", "build_parser", "check_name", "counts", "main", "prepare_beir", "prepare_embedded",
           "prepare_local", "read_beir_folder", "write_dataset_folder", "write_normalized"]


if __name__ == "__main__":
    run_main(main)
