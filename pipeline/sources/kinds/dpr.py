"""The `dpr` source: DPR-format and Tevatron-format files -> the normalised layout plus answers.

The conversion is pipeline.sources.dpr_convert; this module fills in the official files,
fetches and verifies every input, and writes the manifest.

Inputs (each a local path or an http(s) URL; gzip is detected from the bytes, not the name):

  training JSON   DPR's biencoder-*-train.json(.gz): one JSON array of
                  {question, answers, positive_ctxs, negative_ctxs, hard_negative_ctxs}, each ctx
                  {title, text, passage_id (or psg_id)}. Read element by element (dpr_json).
  Tevatron JSONL  one {query_id?, query, positive_passages, negative_passages} per line, each
                  passage {docid, title?, text} (tevatron).
  QA file         DPR's *.qa.csv(.gz): `question<TAB>["answer", ...]` per line, no header;
                  CuratedTREC's answers are regular expressions (--answer-regex).
  passages TSV    DPR's psgs_w100.tsv(.gz): `id<TAB>text<TAB>title` (optional header line),
                  21,015,324 lines for the full Wikipedia split.

Output folder (written under a temporary name and swapped in, like every pipeline step):

  corpus.jsonl                 the passages TSV in file order, then any training ctx whose id the
                               TSV lacks (first occurrence wins), {"_id", "title", "text"}
  queries.jsonl                training questions (ids train-<element index>, or Tevatron's
                               query_id) and QA questions (ids <split>-<line index>, 0-based)
  qrels/train.tsv              the first positive ctx per training question (what DPR trains on;
                               --dpr-positives all keeps every positive); questions without a
                               positive are skipped, as DPR's loader does
  hard_negatives/train.jsonl   {"query_id", "negatives": [ids]} per training question in
                               pipeline.training.hardneg's format, from hard_negative_ctxs (Tevatron:
                               negative_passages), in the file's order; a question without any
                               takes its negative_ctxs instead, as DPR's hard_neg_fallback does.
                               DPR draws one of them per question per epoch at random
                               (pipeline.training.hardneg.draw_per_epoch)
  answers/<split>.jsonl        {"_id", "answers": [...], "regex": bool} per QA question. A split
                               with an answers file is answer-evaluated (protocol "answers"); it
                               has no qrels file, because it has no judged passages.
  manifest.json                counts, input and output sha256, the sources

Every problem is reported as `<file>:<line>: <what is wrong>`; inside a JSON array the message
also names the element index (0-based) whose text starts on that line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from pipeline.core.common import PipelineError, atomic_dir, log
from pipeline.core.layout import MANIFEST_VERSION
from pipeline.sources.download import default_cache_dir
from pipeline.sources.dpr_convert import convert
from pipeline.sources.dpr_fetch import OFFICIAL, PASSAGES_URL, default_lock_path, resolve_input
from pipeline.sources.kinds import register_source
from pipeline.sources.kinds.base import Source

_SPLIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def _check_split(split: str) -> str:
    if not _SPLIT_RE.match(split):
        raise PipelineError(f"--dpr-qa {split!r}: a split name uses letters, digits, '_' or '-'")
    return split


def parse_qa_args(values: list[str] | None) -> dict[str, str]:
    """`SPLIT=PATH_OR_URL` pairs (a bare PATH is the split 'test')."""
    qa: dict[str, str] = {}
    for value in values or []:
        split, sep, spec = value.partition("=")
        if not sep or not _SPLIT_RE.match(split.strip()):
            split, spec = "test", value
        split = _check_split(split.strip())
        if split in qa:
            raise PipelineError(f"--dpr-qa: split {split!r} given twice")
        qa[split] = spec
    return qa


def _with_official_files(dataset: str, train: str | None, tevatron_train: str | None, qa: dict[str, str],
                         passages: str | None, regex_answers: bool | None):
    """The files not given, filled in with the official URLs of `dataset`."""
    if dataset not in OFFICIAL:
        raise PipelineError(f"--dpr-dataset {dataset!r}: expected one of {sorted(OFFICIAL)}")
    official = OFFICIAL[dataset]
    if not tevatron_train:
        train = train or official["train"]
    for split, url in official["qa"].items():
        qa.setdefault(split, url)
    passages = passages or PASSAGES_URL
    if regex_answers is None:
        regex_answers = bool(official.get("regex"))
    return train, qa, passages, regex_answers


def prepare_dpr(name: str, out: str | os.PathLike, *, dataset: str | None = None, train: str | None = None,
                tevatron_train: str | None = None, qa: dict[str, str] | None = None,
                passages: str | None = None, regex_answers: bool | None = None, positives: str = "first",
                cache_dir: str | os.PathLike | None = None, lock_file: str | os.PathLike | None = None,
                retries: int = 3, backoff: float = 1.0, timeout: float = 60.0, progress: bool = True) -> dict:
    """Convert DPR/Tevatron files (paths or URLs) into the normalised folder `out`; return the manifest.
    `dataset` (nq, trivia, webq, curatedtrec) fills in the official URLs of the files not given."""
    qa = dict(qa or {})
    for split in qa:
        _check_split(split)
    if positives not in ("first", "all"):
        raise PipelineError(f"--dpr-positives: expected 'first' or 'all', got {positives!r}")
    if train and tevatron_train:
        raise PipelineError("give either --dpr-train or --tevatron-train, not both")
    if dataset is not None:
        train, qa, passages, regex_answers = _with_official_files(dataset, train, tevatron_train, qa, passages,
                                                                  regex_answers)
    if "train" in qa and (train or tevatron_train):
        raise PipelineError("--dpr-qa train=...: the split name 'train' is taken by the training file")
    if not (train or tevatron_train or qa):
        raise PipelineError("--source dpr needs --dpr-dataset, or at least one of --dpr-train, --tevatron-train, "
                            "--dpr-qa")
    net = {"cache_dir": Path(cache_dir) if cache_dir else default_cache_dir("dpr"),
           "lock_path": Path(lock_file) if lock_file else default_lock_path(),
           "retries": retries, "backoff": backoff, "timeout": timeout, "progress": progress}
    # Every input is fetched and verified before any output is started.
    train_in = resolve_input("training file", train or tevatron_train, **net) if (train or tevatron_train) else None
    qa_in = {split: resolve_input(f"QA file of split {split!r}", spec, **net) for split, spec in qa.items()}
    passages_in = resolve_input("passages file", passages, **net) if passages else None
    with atomic_dir(out) as tmp:
        body = convert(tmp, train=train_in, train_format="tevatron" if tevatron_train else "dpr", qa=qa_in,
                       passages=passages_in, regex_answers=bool(regex_answers), positives=positives)
        sources = {"train": train_in.spec if train_in else None,
                   "qa": {s: i.spec for s, i in qa_in.items()},
                   "passages": passages_in.spec if passages_in else None}
        manifest = {"manifest_version": MANIFEST_VERSION, "name": name, "source": "dpr", "dpr_dataset": dataset,
                    "inputs": sources, **body}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    c = manifest["counts"]
    log.info("%s: %d passages (%d added from the training file), %d queries, answers for %s", name, c["docs"],
             manifest["dpr"]["corpus"]["from_training_file"], c["queries"], sorted(c["answers"]) or "no split")
    return manifest


@register_source("dpr")
class DprSource(Source):
    listed = 3
    flags = ("dpr_dataset", "dpr_train", "tevatron_train", "dpr_qa", "dpr_passages", "answer_regex", "lock_file")
    dev_split_refusal = "--dev-split: not available for --source dpr (its QA files already give dev splits)"

    @classmethod
    def misused_flags(cls, args: argparse.Namespace) -> str | None:
        given = [f"--{k.replace('_', '-')}" for k in cls.flags if getattr(args, k) is not None]
        if not given and args.dpr_positives == "first":
            return None
        return f"{', '.join(given) or '--dpr-positives'}: only used with --source dpr (got --source {args.source})"

    def prepare(self, name, out, args, dev_split):
        return prepare_dpr(name, out, dataset=args.dpr_dataset, train=args.dpr_train,
                           tevatron_train=args.tevatron_train, qa=parse_qa_args(args.dpr_qa),
                           passages=args.dpr_passages, regex_answers=args.answer_regex,
                           positives=args.dpr_positives, cache_dir=args.cache_dir, lock_file=args.lock_file,
                           retries=args.retries, backoff=args.backoff, timeout=args.timeout,
                           progress=not args.no_progress)
