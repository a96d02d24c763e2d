"""DPR-format and Tevatron-format files -> the normalised folder, streamed: training questions
(queries, qrels/train.tsv, hard negatives), QA questions and their answers, the passages TSV, and
last the training passages the TSV lacks. Memory does not grow with the corpus: lines go straight
to the output, and the only per-passage state is one bit per numeric passage id."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from pipeline.core.common import PipelineError, log, sha256_file
from pipeline.sources.dpr_fetch import Input
from pipeline.sources.dpr_records import TrainQuestion, iter_dpr_training, parse_answers_cell
from pipeline.sources.lines import Problems, iter_lines
from pipeline.sources.tevatron import iter_tevatron_training

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "))  # as the BEIR sources write
TRAINING_READERS = {"dpr": iter_dpr_training, "tevatron": iter_tevatron_training}


def _jsonl(obj: dict) -> str:
    return _ENCODER.encode(obj) + "\n"


class IdSet:
    """A set of passage ids whose memory does not grow per id for DPR's ids (plain decimal
    numbers below 2**28 take one bit each in a bytearray); other ids go into a Python set."""

    _LIMIT = 1 << 28

    def __init__(self) -> None:
        self._bits = bytearray()
        self._other: set[str] = set()
        self.count = 0

    def _num(self, key: str) -> int | None:
        if key.isdigit() and key.isascii() and (key == "0" or key[0] != "0") and len(key) < 10:
            n = int(key)
            return n if n < self._LIMIT else None
        return None

    def __contains__(self, key: str) -> bool:
        n = self._num(key)
        if n is None:
            return key in self._other
        byte = n >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (n & 7)))

    def add(self, key: str) -> bool:
        """Add `key`; False if it was already there."""
        n = self._num(key)
        if n is None:
            if key in self._other:
                return False
            self._other.add(key)
        else:
            byte = n >> 3
            if byte >= len(self._bits):
                self._bits.extend(b"\0" * max(byte + 1 - len(self._bits), len(self._bits)))
            mask = 1 << (n & 7)
            if self._bits[byte] & mask:
                return False
            self._bits[byte] |= mask
        self.count += 1
        return True

    def missing_from(self, other: "IdSet") -> bool:
        """True if some id of self is not in `other`."""
        if any(k not in other for k in self._other):
            return True
        a, b = self._bits, other._bits
        for i in range(0, len(a), 1 << 20):
            chunk = a[i:i + (1 << 20)]
            theirs = b[i:i + len(chunk)].ljust(len(chunk), b"\0")
            if int.from_bytes(chunk, "little") & ~int.from_bytes(theirs, "little"):
                return True
        return False


class _Out:
    """The output files, open for appending line by line, with their line counts."""

    def __init__(self, root: Path):
        self.root = root
        self._fh: dict[str, Any] = {}
        self.lines: dict[str, int] = {}

    def write(self, rel: str, text: str) -> None:
        fh = self._fh.get(rel)
        if fh is None:
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            fh = self._fh[rel] = open(self.root / rel, "w", encoding="utf-8", newline="\n")
            self.lines[rel] = 0
        fh.write(text)
        self.lines[rel] += 1

    def close(self) -> None:
        for fh in self._fh.values():
            fh.close()
        self._fh.clear()


# ----------------------------------------------------------------------------- TSV inputs
def _tsv_row(text: str, where: str, errors: Problems) -> list[str] | None:
    """One tab-separated line read with csv quoting (as DPR reads its files), or None after
    recording bad quoting."""
    try:
        return next(csv.reader([text], delimiter="\t", strict=True))
    except csv.Error as exc:
        errors.add(f"{where}: bad quoting ({exc})")
        return None


def _has_columns(row: list[str], names: tuple[str, ...], first: str, where: str, errors: Problems) -> bool:
    """True when `row` has one cell per name and a non-empty first cell; else records why."""
    if len(row) != len(names):
        errors.add(f"{where}: expected {len(names)} tab-separated columns ({', '.join(names)}), got {len(row)}")
        return False
    if not row[0].strip():
        errors.add(f"{where}: empty {first}")
        return False
    return True


def _iter_passages(inp: Input, errors: Problems, digest) -> Iterator[tuple[int, str, str, str]]:
    first = True
    for lineno, text in iter_lines(inp.path, inp.label, errors, digest):
        where = f"{inp.label}:{lineno}"
        # DPR reads this file with csv quoting; without quotes a plain split is the same and faster.
        row = _tsv_row(text, where, errors) if '"' in text else text.split("\t")
        if row is None:
            continue
        if first:
            first = False
            if [c.strip().lower() for c in row] == ["id", "text", "title"]:
                continue
        if _has_columns(row, ("id", "text", "title"), "passage id", where, errors):
            yield lineno, row[0].strip(), row[2], row[1]


def _iter_qa(inp: Input, regex_mode: bool, errors: Problems, digest) -> Iterator[tuple[int, str, list[str]]]:
    for lineno, text in iter_lines(inp.path, inp.label, errors, digest):
        where = f"{inp.label}:{lineno}"
        row = _tsv_row(text, where, errors)
        if row is None:
            continue
        if not _has_columns(row, ("question", "answers list"), "question", where, errors):
            continue
        question = row[0].strip()
        answers, problem = parse_answers_cell(row[1].strip(), regex_mode)
        if problem:
            errors.add(f"{where}: {problem}")
            continue
        yield lineno, question, answers


# ----------------------------------------------------------------------------- the conversion
def convert(out_dir: Path, *, train: Input | None, train_format: str, qa: dict[str, Input],
            passages: Input | None, regex_answers: bool, positives: str) -> dict:
    """Write the normalised files into `out_dir` (an empty folder); return the manifest body."""
    run = _Conversion(out_dir, train_format, regex_answers, positives)
    try:
        if train is not None:
            run.training(train)
        for split, inp in qa.items():
            run.qa_split(split, inp)
        if passages is not None:
            run.passages(passages)
        if train is not None and run.referenced.missing_from(run.corpus_ids):
            run.training_passages(train, passages)
        run.check_not_empty(train, qa)
    finally:
        run.out.close()
    return run.manifest_body(out_dir)


class _Conversion:
    """The state the steps share: output files, query and passage ids seen, hashes and counts."""

    def __init__(self, out_dir: Path, train_format: str, regex_answers: bool, positives: str):
        self.train_format, self.regex_answers, self.positives = train_format, regex_answers, positives
        self.errors = Problems(stop_early=True)
        self.out = _Out(out_dir)
        self.hashes: dict[str, str] = {}
        self.seen_queries: set[str] = set()
        self.referenced = IdSet()      # every passage id a training question names
        self.corpus_ids = IdSet()
        self.stats: dict[str, Any] = {"corpus": {"from_passages_file": 0, "from_training_file": 0}}
        self.answer_counts: dict[str, dict] = {}

    def _questions(self, train: Input, digest) -> Iterator[TrainQuestion]:
        return TRAINING_READERS[self.train_format](train.path, train.label, self.errors, digest)

    def training(self, train: Input) -> None:
        """Queries, qrels/train.tsv and hard negatives of the training questions."""
        digest = hashlib.sha256()
        n_all = kept = no_hn = fallback = pairs = 0
        for q in self._questions(train, digest):
            n_all += 1
            if not q.positives:
                continue  # DPR's loader drops questions without a positive passage
            if q.qid in self.seen_queries:
                self.errors.add(f"{q.where}: duplicate query id {q.qid!r}")
                continue
            self.seen_queries.add(q.qid)
            kept += 1
            written = self._write_question(q)
            pairs += len(written)
            negs, fell_back = self._write_hard_negatives(q, written)
            fallback += fell_back
            no_hn += not negs
            for group in (q.positives, q.negatives, q.hard_negatives):
                for pid, _t, _x in group:
                    self.referenced.add(pid)
        self.errors.raise_if_any()
        if kept == 0:
            raise PipelineError(f"{train.label}: no training question has a positive passage")
        self.hashes[f"train:{train.describe()}"] = digest.hexdigest()
        self.stats["training"] = {"format": self.train_format, "questions": n_all, "kept": kept,
                                  "skipped_no_positive": n_all - kept, "without_hard_negative": no_hn,
                                  "hard_negatives_from_negative_ctxs": fallback,
                                  "qrels_pairs": pairs, "positives": self.positives}

    def _write_question(self, q: TrainQuestion) -> set[str]:
        """Write the query and its qrels rows; return the positive ids written."""
        self.out.write("queries.jsonl", _jsonl({"_id": q.qid, "text": q.question}))
        if not self.out.lines.get("qrels/train.tsv"):
            self.out.write("qrels/train.tsv", "query-id\tcorpus-id\tscore\n")
        chosen = q.positives[:1] if self.positives == "first" else q.positives
        written: set[str] = set()
        for pid, _t, _x in chosen:
            if pid not in written:
                written.add(pid)
                self.out.write("qrels/train.tsv", f"{q.qid}\t{pid}\t1\n")
        return written

    def _write_hard_negatives(self, q: TrainQuestion, positives: set[str]) -> tuple[list[str], bool]:
        """Write the question's hard negatives; return them and whether they are its other
        negatives because it has no hard ones."""
        negs = list(dict.fromkeys(pid for pid, _t, _x in q.hard_negatives if pid not in positives))
        fell_back = False
        if not negs:
            # DPR's hard_neg_fallback (on by default): no hard negatives -> the other negatives.
            negs = list(dict.fromkeys(pid for pid, _t, _x in q.negatives if pid not in positives))
            fell_back = bool(negs)
        self.out.write("hard_negatives/train.jsonl", json.dumps({"query_id": q.qid, "negatives": negs},
                                                                ensure_ascii=False) + "\n")
        return negs, fell_back

    def qa_split(self, split: str, inp: Input) -> None:
        """The questions of one QA file and their answers."""
        digest = hashlib.sha256()
        n = 0
        for i, (lineno, question, answers) in enumerate(_iter_qa(inp, self.regex_answers, self.errors, digest)):
            qid = f"{split}-{i}"
            if qid in self.seen_queries:
                self.errors.add(f"{inp.label}:{lineno}: query id {qid!r} is also a training query id")
                break
            self.seen_queries.add(qid)
            self.out.write("queries.jsonl", _jsonl({"_id": qid, "text": question}))
            self.out.write(f"answers/{split}.jsonl", _jsonl({"_id": qid, "answers": answers,
                                                              "regex": self.regex_answers}))
            n += 1
        self.errors.raise_if_any()
        if n == 0:
            raise PipelineError(f"{inp.label}:1: no questions (file has only blank lines)")
        self.hashes[f"qa/{split}:{inp.describe()}"] = digest.hexdigest()
        self.answer_counts[split] = {"questions": n, "regex": self.regex_answers}

    def passages(self, passages: Input) -> None:
        """The passages TSV, streamed into corpus.jsonl."""
        digest = hashlib.sha256()
        first_line: dict[str, int] = {}
        from_tsv = 0
        for lineno, pid, title, text in _iter_passages(passages, self.errors, digest):
            if not self.corpus_ids.add(pid):
                # Only the first line of an id is cheap to find again for referenced ids.
                self.errors.add(f"{passages.label}:{lineno}: duplicate passage id {pid!r}"
                                + (f" (first on line {first_line[pid]})" if pid in first_line else ""))
                continue
            if pid in self.referenced:
                first_line[pid] = lineno
            self.out.write("corpus.jsonl", _jsonl({"_id": pid, "title": title, "text": text}))
            from_tsv += 1
        self.errors.raise_if_any()
        if from_tsv == 0:
            raise PipelineError(f"{passages.label}:1: no passages")
        self.hashes[f"passages:{passages.describe()}"] = digest.hexdigest()
        self.stats["corpus"]["from_passages_file"] = from_tsv

    def training_passages(self, train: Input, passages: Input | None) -> None:
        """The training ctxs the passages TSV lacks, from a second pass over the training file."""
        added = 0
        for q in self._questions(train, hashlib.sha256()):
            if not q.positives:
                continue
            for group in (q.positives, q.negatives, q.hard_negatives):
                for pid, title, text in group:
                    if self.corpus_ids.add(pid):
                        self.out.write("corpus.jsonl", _jsonl({"_id": pid, "title": title, "text": text}))
                        added += 1
        if passages is not None:
            log.warning("%d training passages are not in %s; added them to the corpus from %s", added,
                        passages.label, train.label)
        self.stats["corpus"]["from_training_file"] = added

    def check_not_empty(self, train: Input | None, qa: dict[str, Input]) -> None:
        if not self.out.lines.get("corpus.jsonl"):
            raise PipelineError("no passages: give --dpr-passages, or a training file whose questions have passages")
        if train is None and not qa:
            raise PipelineError("nothing to convert: give a training file and/or QA files")

    def manifest_body(self, out_dir: Path) -> dict:
        splits = {}
        if "training" in self.stats:
            t = self.stats["training"]
            splits["train"] = {"queries": t["kept"], "pairs": t["qrels_pairs"], "relevant_pairs": t["qrels_pairs"]}
        counts = {"docs": self.out.lines["corpus.jsonl"], "queries": self.out.lines.get("queries.jsonl", 0),
                  "splits": splits, "answers": self.answer_counts}
        output = {p.relative_to(out_dir).as_posix(): sha256_file(p)
                  for p in sorted(out_dir.rglob("*")) if p.is_file()}
        return {"counts": counts, "dpr": self.stats, "input_sha256": self.hashes, "output_sha256": output,
                "answer_splits": sorted(self.answer_counts),
                "hard_negatives": "hard_negatives/train.jsonl" if "training" in self.stats else None}
