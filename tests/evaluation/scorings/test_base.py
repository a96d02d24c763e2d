"""pipeline.evaluation.scorings.base and the scoring registry: a result's names (table column,
name, file-name slug, parameter text), one result per lambda for a lambda scoring, a shift
scoring searched as DN's shifted query, and table rows read back into the same results."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core import eval_params as E
from pipeline.evaluation import distribution_normalization as dnlib
from pipeline.evaluation.scorings import available_scorings, expand, from_row, scoring_class, uses_dn_star
from pipeline.evaluation.scorings.base import Scoring
from tests.evaluation.test_querybank import emb, flat, make_inputs, top  # noqa: F401  (fixture and helpers)


class HalfQueryShift(Scoring):
    """A scoring written against the base class alone: S(q, d) = (q - lam mu_q / 2) . d."""

    family = "half-shift"
    uses_lambda = True

    def means(self, inputs):
        return [dnlib.DNMeans(inputs.queries.mean(0) / 2, np.zeros(inputs.queries.shape[1]))]


def test_a_shift_scoring_needs_only_its_means(emb):
    docs, bank, test = emb
    inputs = make_inputs(docs, bank, test, {"scorings": ["dot"]})
    scoring = HalfQueryShift(0.8)
    scores, rows = next(scoring.rankings(flat(docs), inputs, 10))
    want = top((test - 0.4 * test.mean(0)) @ docs.T, 10)
    np.testing.assert_array_equal(rows, want[1])
    np.testing.assert_allclose(scores, want[0], atol=1e-9, rtol=0)
    assert scoring.details(inputs) is None and scoring.search_lambda == 0.8
    with pytest.raises(ValueError, match="scoring 'half-shift' needs a lambda"):
        HalfQueryShift()


def test_names_slugs_and_parameters():
    shift = HalfQueryShift(0.25, setting="k=3,m=2")
    assert (shift.column, shift.name, shift.slug) == ("half-shift[k=3,m=2]", "half-shift[k=3,m=2]@0.25",
                                                      "half-shift-k3-m2-0.25")
    assert shift.parameters == "k=3,m=2 λ=0.25" and repr(shift) == "HalfQueryShift('half-shift[k=3,m=2]@0.25')"
    assert [s.name for s in HalfQueryShift.variants(E.EvalParams(lambdas=[0.1, 0.5]))] == \
        ["half-shift@0.1", "half-shift@0.5"]
    assert from_row("dn*", 0.25).slug == "dnstar-0.25" and from_row("dn", 0.5).parameters == "λ=0.5"


def test_the_registry_orders_expands_and_reads_back_every_result():
    assert available_scorings()[:5] == ["dot", "dn", "dn*", "nnn", "qbnorm"]
    params = E.EvalParams(nnn=E.NNNParams(k=[4], alpha=[0.5]), qbnorm=E.QBNormParams(beta=[0.1]))
    results = expand(["dot", "dn", "dn*", "nnn", "qbnorm"], [0, 0.25], params)
    assert [r.name for r in results] == ["dot", "dn@0", "dn@0.25", "dn*@0", "dn*@0.25", "nnn[k=4]@0.5",
                                         "qbnorm[beta=0.1]"]
    for r in results:  # what a table row holds (`scoring`, `lambda`) gives the same result back
        again = from_row(r.column, r.lam if r.lam is not None else float("nan"))
        assert type(again) is type(r) and again.name == r.name
    assert scoring_class("nnn[k=16]").family == "nnn"
    assert uses_dn_star(["dot", "dn*"]) and not uses_dn_star(["dot", "dn", "nnn"])
    assert scoring_class("dn").label == "DN" and scoring_class("dot").label == "dot"
