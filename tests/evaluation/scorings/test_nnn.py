"""pipeline.evaluation.scorings.nnn: NNN against the independent `nnn-retrieval` implementation and
against DN's query-side correction (k = all); its names, settings and parameter checks."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core import eval_params as E
from pipeline.core.common import PipelineError
from pipeline.evaluation import distribution_normalization as dnlib
from pipeline.evaluation import evaluate as ev
from pipeline.evaluation.scorings import expand, from_row
from pipeline.evaluation.scorings.nnn import NNN
from tests.evaluation.test_querybank import DIM, N_DOCS, emb, flat, make_inputs, rankings, top  # noqa: F401


@pytest.mark.parametrize("k,alpha", [(5, 0.5), (32, 0.9)])
def test_nnn_equals_nnn_retrieval(emb, k, alpha):
    from nnn import NNNRanker, NNNRetriever

    docs, bank, test = emb
    inputs = make_inputs(docs, bank, test, {"scorings": ["nnn"], "nnn": {"k": [k], "alpha": [alpha]}})
    scores, rows = rankings(inputs, flat(docs), N_DOCS)[f"nnn[k={k}]@{alpha:g}"]
    ranker = NNNRanker(NNNRetriever(DIM), docs, bank, alternate_ks=k, alternate_weight=alpha, batch_size=64)
    oracle_scores, oracle_rows = ranker.search(test, N_DOCS)
    # Every document of every query: the same scores and the same order.
    np.testing.assert_allclose(scores, oracle_scores, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(rows, oracle_rows)
    # The correction really moves the ranking (else the test would pass for the dot product).
    assert (rows[:, :10] != top(test @ docs.T, 10)[1]).any()


def test_nnn_k_all_is_dns_query_side_correction(emb):
    """k = all: b_d = mu_r . d, so q.d - lam b_d = (q - lam mu_r) . d, DN with the query mean taken
    over the bank and no document shift. DN's document shift (mu_d) adds -lam (q - lam mu_q).mu_d,
    one constant per query: the same ranking, scores offset by that constant."""
    docs, bank, test = emb
    lam = 0.25
    inputs = make_inputs(docs, bank, test, {"scorings": ["nnn"], "nnn": {"k": ["all"], "alpha": [lam]}})
    scores, rows = rankings(inputs, flat(docs), 50)[f"nnn[k=all]@{lam:g}"]
    mu_r = dnlib.mean_embedding(bank)
    query_side = dnlib.dn_scores(test, docs, dnlib.DNMeans(mu_r, np.zeros(DIM)), lam)
    np.testing.assert_allclose(scores, np.take_along_axis(query_side, rows, 1), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(rows, top(query_side, 50)[1])
    full = dnlib.DNMeans(mu_r, dnlib.mean_embedding(docs))
    dn_scores, dn_rows = dnlib.dn_search(flat(docs), test, 50, full, lam, doc_emb=docs)
    np.testing.assert_array_equal(rows, dn_rows)
    offset = -lam * (test - lam * mu_r) @ full.mu_d
    np.testing.assert_allclose(dn_scores - scores, np.repeat(offset[:, None], 50, 1), atol=1e-6, rtol=0)


def test_names_settings_and_the_headline_alpha():
    params = ev.resolve_params({"scorings": ["nnn"], "nnn": {"k": [4, "all"], "alpha": [0.5, 1]}})
    names = [s.name for s in expand(["nnn"], [0.25], params)]
    assert names == ["nnn[k=4]@0.5", "nnn[k=4]@1", "nnn[k=all]@0.5", "nnn[k=all]@1"]
    row = from_row("nnn[k=all]", 0.5)
    assert isinstance(row, NNN) and row.k == "all" and row.name == "nnn[k=all]@0.5"
    assert row.parameters == "k=all α=0.5" and row.slug == "nnn-kall-0.5"
    assert NNN.headline_lambda({"nnn": {"alpha": [0.7, 1]}}, 0.25) == 0.7 and NNN.headline_lambda(None, 0.25) == 0.5
    with pytest.raises(ValueError, match="nnn: expected a setting 'k=<int or all>'"):
        NNN(0.5, "16")


def test_check_names_the_bad_setting():
    NNN.check(E.EvalParams(scorings=["nnn"]))
    for nnn, bank, message in ((E.NNNParams(alpha=[1.5]), E.QueryBankParams(), r"nnn.alpha\[0\]"),
                               (E.NNNParams(k=[0]), E.QueryBankParams(), r"nnn.k\[0\]: expected a positive integer"),
                               (E.NNNParams(k=[8]), E.QueryBankParams(size=4), r"nnn.k\[0\]: k = 8 .*query_bank.size")):
        with pytest.raises(PipelineError, match=message):
            NNN.check(E.EvalParams(scorings=["nnn"], nnn=nnn, query_bank=bank))
