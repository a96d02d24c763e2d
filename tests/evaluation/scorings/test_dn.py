"""pipeline.evaluation.scorings.dn: DN ranks by (q - lam mu_q).(d - lam mu_d) with the means over
the evaluated queries and the corpus; DN* draws its means from unlabeled queries of another split,
encodes only the drawn ones, once for every lambda, and refuses the evaluated split."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core import eval_params as E
from pipeline.core.common import PipelineError
from pipeline.evaluation import distribution_normalization as dnlib
from pipeline.evaluation.scorings import expand
from pipeline.evaluation.scorings.dn import DN, DNStar
from tests.evaluation.test_querybank import emb, flat, make_inputs, top  # noqa: F401  (fixture and helpers)


def test_dn_ranks_like_brute_force_dn(emb):
    docs, bank, test = emb
    inputs = make_inputs(docs, bank, test, {"scorings": ["dn"], "lambdas": [0.5]})
    (scoring,) = expand(["dn"], [0.5], inputs.params)
    assert isinstance(scoring, DN) and scoring.name == "dn@0.5" and scoring.slug == "dn-0.5"
    scores, rows = next(scoring.rankings(flat(docs), inputs, 20))
    brute = (test - 0.5 * test.mean(0)) @ (docs - 0.5 * docs.mean(0)).T
    want_scores, want_rows = top(brute, 20)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-9, rtol=0)
    assert (rows[:, :5] != top(test @ docs.T, 5)[1]).any()  # the shift really moves the ranking


def test_dn_star_encodes_only_the_drawn_pool_queries_once(emb):
    docs, bank, test = emb
    params = {"scorings": ["dn*"], "lambdas": [0.25, 0.5], "dn_star": {"samples": 8, "repeats": 3, "seed": 4}}
    inputs = make_inputs(docs, bank, test, params)
    encode, asked = inputs.encode, []
    inputs.encode = lambda texts: asked.append(list(texts)) or encode(texts)
    scorings = expand(["dn*"], inputs.params.lambdas, inputs.params)
    assert [s.name for s in scorings] == ["dn*@0.25", "dn*@0.5"] and all(s.sampled for s in scorings)
    for scoring in scorings:
        scoring.prepare(inputs)
    ranked = [list(s.rankings(flat(docs), inputs, 10)) for s in scorings]
    assert len(asked) == 1 and all(t.startswith("train query") for t in asked[0])  # one batch, pool queries only
    draws = dnlib.dn_star_draws(len(bank), len(docs), 8, 3, 4)
    assert len(asked[0]) == len({int(r) for _, rows, _ in draws for r in rows}) <= 24
    (_, q_rows, d_rows) = draws[0]
    first = inputs.extra["dn*"]["means"][0]
    np.testing.assert_allclose(first.mu_q, bank[q_rows].mean(0), atol=1e-12)
    np.testing.assert_allclose(first.mu_d, docs[d_rows].mean(0), atol=1e-12)
    assert [len(r) for r in ranked] == [3, 3]  # one ranking per repeat


def test_dn_star_refuses_the_evaluated_split_and_a_missing_one(emb):
    docs, bank, test = emb
    with pytest.raises(PipelineError, match=r"dn_star.source_split: .* other than the evaluated one \('test'\)"):
        DNStar.check(E.EvalParams(dn_star=E.DNStarParams(source_split="test")))
    inputs = make_inputs(docs, bank, test, {"scorings": ["dn*"], "dn_star": {"source_split": "dev"}})
    with pytest.raises(PipelineError, match=r"dn_star.source_split: /tiny has no qrels split 'dev' \(available: "):
        DNStar(0.25).prepare(inputs)
