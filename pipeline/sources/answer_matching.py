"""Answer matching for open-domain QA retrieval, as DPR defines it (Karpukhin et al., 2020).

A passage *has the answer* when

- string answers (NQ, TriviaQA, WebQuestions): the answer's token sequence occurs in the
  passage's token sequence. Both sides are Unicode-normalised to NFD, split into tokens (a run of
  letters, digits and combining marks, or any single other character that is neither a
  separator nor a control character: whitespace is dropped, every punctuation mark is its own
  token) and lower-cased. So "ZÜRICH" matches "Zürich" whether either is written with a
  precomposed "ü" or with "u" plus a combining diaeresis, but "Zurich" does not (the mark stays
  inside the token); "U.S." is the four tokens u . s . and matches "the U.S. army" but not "US".
- regex answers (CuratedTREC): the pattern, NFD-normalised, is searched (not anchored) in the
  NFD-normalised passage text, case-insensitively, with Unicode classes and `^`/`$` matching at
  line breaks. Patterns use the `regex` package's syntax, which DPR and pyserini use.

DPR matches the passage *text* only, never its title; callers pass the text.

One deliberate difference: an answer with no tokens at all (the empty string, or only spaces)
matches nothing here. DPR's loop would count it as found in every passage, which is an artefact,
not a definition; `pipeline.sources.dpr_records` also rejects such answers when it reads a QA file.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Iterable, Sequence

import regex
from pipeline.core.common import PipelineError, iter_keyed_jsonl

# A run of letters/digits/marks, or one character that is not a separator (Z*) or control (C*).
_TOKEN_RE = regex.compile(r"[\p{L}\p{N}\p{M}]+|[^\p{Z}\p{C}]", flags=regex.UNICODE)
_REGEX_FLAGS = regex.IGNORECASE | regex.UNICODE | regex.MULTILINE


def normalize(text: str) -> str:
    """Unicode NFD (canonical decomposition), the form DPR compares in."""
    return unicodedata.normalize("NFD", text)


def tokenize(text: str) -> list[str]:
    """DPR SimpleTokenizer tokens of NFD-normalised `text`, lower-cased."""
    return [m.group().lower() for m in _TOKEN_RE.finditer(normalize(text))]


@functools.lru_cache(maxsize=4096)
def compile_answer_regex(pattern: str) -> regex.Pattern:
    """Compile a regex answer the way it is matched. Raises `regex.error` for a bad pattern."""
    return regex.compile(normalize(pattern), flags=_REGEX_FLAGS)


def check_answer_regex(pattern: str) -> str | None:
    """None if `pattern` compiles, else a short reason (for validation messages)."""
    try:
        compile_answer_regex(pattern)
    except regex.error as exc:
        return str(exc)
    return None


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    n = len(needle)
    if n == 0 or n > len(haystack):
        return False
    first = needle[0]
    for i in range(len(haystack) - n + 1):
        if haystack[i] == first and list(haystack[i:i + n]) == list(needle):
            return True
    return False


class AnswerMatcher:
    """The answers of one question, prepared once (tokenised or compiled) and tested against
    many passage texts."""

    def __init__(self, answers: Iterable[str], regex_mode: bool = False):
        self.regex_mode = regex_mode
        answers = list(answers)
        if regex_mode:
            # DPR skips a pattern that does not compile; pipeline.sources.dpr_records refuses such files up front.
            self._patterns = []
            for a in answers:
                try:
                    self._patterns.append(compile_answer_regex(a))
                except regex.error:
                    continue
            self._token_answers: list[list[str]] = []
        else:
            self._patterns = []
            self._token_answers = [t for t in (tokenize(a) for a in answers) if t]

    def matches(self, text: str) -> bool:
        if self.regex_mode:
            norm = normalize(text)
            return any(p.search(norm) is not None for p in self._patterns)
        if not self._token_answers:
            return False
        tokens = tokenize(text)
        return any(_contains(tokens, answer) for answer in self._token_answers)

    def matches_tokens(self, tokens: Sequence[str]) -> bool:
        """String mode only: test already tokenised passage text (see `tokenize`)."""
        return any(_contains(tokens, answer) for answer in self._token_answers)


def has_answer(answers: Iterable[str], text: str, regex: bool = False) -> bool:
    """True when `text` (a passage's text) contains one of `answers` (see the module docstring)."""
    return AnswerMatcher(answers, regex_mode=regex).matches(text)


def first_hit(answers: Iterable[str], texts: Iterable[str], regex: bool = False) -> int | None:
    """0-based rank of the first text that has an answer, or None."""
    matcher = AnswerMatcher(answers, regex_mode=regex)
    for rank, text in enumerate(texts):
        if matcher.matches(text):
            return rank
    return None


def load_answers(root, split: str) -> dict[str, tuple[list[str], bool]]:
    """Read `<root>/answers/<split>.jsonl` of a normalised dataset folder (written by
    pipeline.sources.kinds.dpr): question id -> (answers, regex?), in file order."""
    from pathlib import Path

    path = Path(root) / "answers" / f"{split}.jsonl"
    if not path.is_file():
        raise PipelineError(f"{path}: file not found; split {split!r} of {root} is not answer-evaluated "
                            f"(answer files come from `python -m pipeline.sources.prepare --source dpr --dpr-qa ...`)")
    result: dict[str, tuple[list[str], bool]] = {}
    for qid, where, row in iter_keyed_jsonl(path, "_id"):
        answers = row.get("answers")
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise PipelineError(f"{where}: 'answers' must be a non-empty list of strings")
        if not isinstance(row.get("regex", False), bool):
            raise PipelineError(f"{where}: 'regex' must be true or false")
        result[qid] = (answers, row.get("regex", False))
    if not result:
        raise PipelineError(f"{path}:1: no questions")
    return result


_ID_PREFIX = regex.compile(r'\{"_id": ("(?:[^"\\]|\\.)*")')


def read_passage_texts(corpus_path, ids) -> dict[str, str]:
    """The `text` of the given doc ids, from one streaming pass over a normalised corpus.jsonl:
    memory holds only the wanted passages, not the corpus (21M passages for DPR's Wikipedia)."""
    import json

    wanted = {str(i) for i in ids}
    found: dict[str, str] = {}
    with open(corpus_path, encoding="utf-8") as fh:
        for line in fh:
            if not wanted:
                break
            # pipeline.sources.prepare writes `{"_id": ...` first: read the id alone and skip unwanted lines
            # without parsing them.
            m = _ID_PREFIX.match(line)
            if m is not None and json.loads(m.group(1)) not in wanted:
                continue
            if not line.strip():
                continue
            doc = json.loads(line)
            doc_id = str(doc.get("_id"))
            if doc_id in wanted:
                found[doc_id] = doc.get("text") or ""
                wanted.discard(doc_id)
    return found


__all__ = ["AnswerMatcher", "check_answer_regex", "compile_answer_regex", "first_hit", "has_answer", "load_answers",
           "normalize", "read_passage_texts", "tokenize"]
