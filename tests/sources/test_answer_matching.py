"""pipeline.sources.answer_matching: DPR's has_answer on hand-checked cases (unicode, case, punctuation, token
boundaries, regex answers). Each expectation was worked out by hand from DPR's definition:
NFD, tokens = letter/digit/mark runs or single non-space characters, lower-case, token-sequence
containment; regex answers are searched case-insensitively in the NFD text."""

from __future__ import annotations

import unicodedata

import pytest

from pipeline.sources.answer_matching import AnswerMatcher, check_answer_regex, first_hit, has_answer, tokenize

DECOMPOSED_ZURICH = "Zu\u0308rich"  # "u" + COMBINING DIAERESIS
assert unicodedata.normalize("NFC", DECOMPOSED_ZURICH) == "Z\u00fcrich"


def test_tokenize_splits_like_dpr_simple_tokenizer():
    assert tokenize("The U.S. Army's 3.14 rock'n'roll") == \
        ["the", "u", ".", "s", ".", "army", "'", "s", "3", ".", "14", "rock", "'", "n", "'", "roll"]
    assert tokenize("naïve café") == ["nai\u0308ve", "cafe\u0301"]  # marks stay inside the token
    assert tokenize("AC/DC\tF1\nx_y") == ["ac", "/", "dc", "f1", "x", "_", "y"]
    assert tokenize("  \u00a0\u2003 ") == []  # no-break and em spaces are separators


STRING_CASES = [
    # (answers, passage text, expected, why)
    (["Paris"], "The capital of France is paris.", True, "case and trailing punctuation"),
    (["Paris"], "Parisian cafés are famous.", False, "token boundary: 'parisian' is one token"),
    (["New York"], "He moved to new   york city in 1990.", True, "runs of spaces are not tokens"),
    (["New York"], "He moved to New\nYork.", True, "a line break is whitespace"),
    (["New York"], "He moved to New-York.", False, "'-' is a token between the two words"),
    (["U.S."], "the U.S. army", True, "punctuation tokens match punctuation tokens"),
    (["U.S."], "the US army", False, "'us' is not u . s ."),
    (["AC/DC"], "the band ac / dc played", True, "spaces around '/' do not matter"),
    (["3.14"], "pi is about 3.14159", False, "'14' is not the token '14159'"),
    (["3.14"], "pi is about 3.14.", True, "answer spans three tokens"),
    (["1,000"], "it cost 1000 dollars", False, "'1000' is one token, '1 , 000' three"),
    (["rock'n'roll"], "Rock'n'Roll music", True, "apostrophes are tokens on both sides"),
    (["rock'n'roll"], "rock n roll music", False, "missing apostrophe tokens"),
    (["The Beatles"], "a song by beatles", False, "no article stripping in DPR's matcher"),
    (["Zürich"], "He studied in ZÜRICH.", True, "case folding of a precomposed letter"),
    (["Zürich"], f"He studied in {DECOMPOSED_ZURICH}.", True, "NFC answer vs NFD text"),
    ([DECOMPOSED_ZURICH], "He studied in Zürich.", True, "NFD answer vs NFC text"),
    (["Zürich"], "He studied in Zurich.", False, "the diaeresis is part of the token"),
    (["São Paulo"], "born in SÃO PAULO, Brazil", True, "tilde, case"),
    (["São Paulo"], "born in Sao Paulo, Brazil", False, "no accent stripping"),
    (["Ångström"], "measured in ångströms", False, "'ångströms' is a different token"),
    (["F1"], "a F 1 car", False, "'f1' is one token"),
    (["nothing", "Lima"], "Lima, Peru", True, "any of several answers"),
    (["Lima"], "Lima", True, "the whole passage"),
    ([""], "any text at all", False, "an answer without tokens matches nothing"),
    ([" "], "any text at all", False, "an answer without tokens matches nothing"),
    (["a much longer answer than the text"], "short", False, "answer longer than the passage"),
]


@pytest.mark.parametrize("answers,text,expected,why", STRING_CASES, ids=[c[3] for c in STRING_CASES])
def test_string_answers(answers, text, expected, why):
    assert has_answer(answers, text) is expected, why


REGEX_CASES = [
    (["(Gerald )?Ford"], "President gerald FORD pardoned Nixon", True, "optional group, case-insensitive"),
    (["ford"], "He went to Stanford.", True, "regex answers are searched, not token-matched"),
    (["\\bford\\b"], "He went to Stanford.", False, "word boundaries are the pattern's business"),
    (["19[0-9]{2}"], "Apollo 11 landed in 1969.", True, "character class and repeat"),
    (["19[0-9]{2}"], "a landing in 2069", False, "no match"),
    (["^ford$"], "Ford\nNixon", True, "multi-line anchors"),
    (["z\u00fcrich|geneva"], f"the city of {DECOMPOSED_ZURICH.upper()}", True, "NFD on both sides"),
    (["\\p{Lu}{3}"], "the NASA mission", True, "unicode property classes (regex package)"),
    (["("], "anything (", False, "a pattern that does not compile matches nothing"),
]


@pytest.mark.parametrize("answers,text,expected,why", REGEX_CASES, ids=[c[3] for c in REGEX_CASES])
def test_regex_answers(answers, text, expected, why):
    assert has_answer(answers, text, regex=True) is expected, why


def test_check_answer_regex_reports_bad_patterns():
    assert check_answer_regex("(Gerald )?Ford") is None
    assert check_answer_regex("(unclosed") is not None


def test_matcher_is_reusable_and_first_hit_ranks():
    matcher = AnswerMatcher(["Mount Everest"])
    assert not matcher.matches("K2 is the second highest")
    assert matcher.matches("mount everest is the highest")
    assert matcher.matches_tokens(tokenize("Mount Everest."))
    texts = ["nothing here", "still nothing", "Everest, or mount EVEREST", "mount everest"]
    assert first_hit(["Mount Everest"], texts) == 2
    assert first_hit(["Mount Everest"], texts[:2]) is None
    assert first_hit(["ever(est)?"], texts, regex=True) == 2
