"""pipeline.evaluation.scorings.dot: the baseline every other scoring is compared with ranks by the
plain inner product, with its true scores, and takes no parameter."""

from __future__ import annotations

import numpy as np

from pipeline.evaluation.scorings import BASELINE, available_scorings, expand, from_row
from pipeline.evaluation.scorings.dot import Dot
from tests.evaluation.test_querybank import emb, flat, make_inputs, top  # noqa: F401  (fixture and helpers)


def test_dot_is_the_plain_inner_product(emb):
    docs, bank, test = emb
    inputs = make_inputs(docs, bank, test, {"scorings": ["dot"], "lambdas": [0.25, 0.5]})
    (scoring,) = expand(["dot"], inputs.params.lambdas, inputs.params)  # one result whatever the lambdas
    assert isinstance(scoring, Dot) and scoring.name == BASELINE == "dot" and scoring.parameters == ""
    scores, rows = next(scoring.rankings(flat(docs), inputs, 15))
    want_scores, want_rows = top(test @ docs.T, 15)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-6, rtol=0)


def test_dot_comes_first_and_reads_back_from_a_table_row():
    assert available_scorings()[0] == BASELINE
    assert from_row("dot", float("nan")).name == "dot" and from_row("dot", None).lam is None
