"""Distribution Normalization: the shifted-query search over a plain index must rank (and score)
exactly like brute-force (q - lam mu_q).(d - lam mu_d)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from pipeline.evaluation import distribution_normalization as dn
from pipeline.core.common import PipelineError


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    # A shared offset makes the means far from zero, as with real sentence embeddings.
    offset = rng.normal(size=16)
    q = _unit(rng.normal(size=(30, 16)) + offset).astype(np.float32)
    d = _unit(rng.normal(size=(200, 16)) + offset).astype(np.float32)
    return q, d


def _flat(d):
    index = faiss.IndexFlatIP(d.shape[1])
    index.add(d)
    return index


def _brute_rank(scores, k):
    # Ties go to the lower doc row, matching dn._topk_rows.
    return np.array([np.lexsort((np.arange(len(s)), -s))[:k] for s in scores])


def test_lambda_zero_ranks_like_dot(data):
    q, d = data
    index = _flat(d)
    means = dn.dn_means(q, d)
    s_dot, r_dot = dn.dn_search(index, q, 20, doc_emb=d)
    s_dn, r_dn = dn.dn_search(index, q, 20, means, 0.0, doc_emb=d)
    assert np.array_equal(r_dot, r_dn)
    assert np.array_equal(dn.dn_search(index, q, 20)[1], r_dn)
    np.testing.assert_array_equal(s_dot, s_dn)
    np.testing.assert_allclose(s_dn, np.take_along_axis(q.astype(np.float64) @ d.T.astype(np.float64), r_dn, 1),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("lam", [0.25, 0.5, 1.0])
def test_shifted_query_ranks_like_brute_force(data, lam):
    q, d = data
    means = dn.dn_means(q, d)
    brute = (q - lam * means.mu_q) @ (d - lam * means.mu_d).T
    np.testing.assert_allclose(dn.dn_scores(q, d, means, lam), brute, rtol=0, atol=1e-12)
    # Pure numpy: ranking by the shifted query alone against raw docs equals brute-force DN.
    shifted_only = dn.transform(q, means.mu_q, lam) @ d.T.astype(np.float64)
    assert np.array_equal(_brute_rank(shifted_only, 50), _brute_rank(brute, 50))
    # Through a real FAISS flat index (the index is the dot-product one, untouched).
    index = _flat(d)
    before = faiss.serialize_index(index)
    for docs in (d, None):
        scores, rows = dn.dn_search(index, q, 50, means, lam, doc_emb=docs)
        assert np.array_equal(rows, _brute_rank(brute, 50))
        np.testing.assert_allclose(scores, np.take_along_axis(brute, rows, 1), rtol=0,
                                   atol=1e-12 if docs is not None else 1e-5)
    assert np.array_equal(faiss.serialize_index(index), before)
    # DN differs from dot on this data, so the test has teeth.
    assert not np.array_equal(dn.dn_search(index, q, 50)[1], rows)


def test_scores_are_true_dn_scores_not_shifted_dot(data):
    q, d = data
    means = dn.dn_means(q, d)
    scores, rows = dn.dn_search(_flat(d), q, 5, means, 0.5, doc_emb=d)
    i, r = 3, rows[3, 0]
    expected = float((q[i] - 0.5 * means.mu_q) @ (d[r] - 0.5 * means.mu_d))
    assert scores[i, 0] == pytest.approx(expected, abs=1e-12)
    assert scores[i, 0] != pytest.approx(float((q[i] - 0.5 * means.mu_q) @ d[r]), abs=1e-6)


def test_shift_then_normalize_option(data):
    q, d = data
    means = dn.dn_means(q, d)
    lam = 0.5
    qt = _unit(q - lam * means.mu_q)
    dt = _unit(d - lam * means.mu_d)
    brute = qt @ dt.T
    np.testing.assert_allclose(dn.dn_scores(q, d, means, lam, "shift_then_normalize"), brute, atol=1e-12)
    scores, rows = dn.dn_search(_flat(d), q, 10, means, lam, "shift_then_normalize", doc_emb=d)
    assert np.array_equal(rows, _brute_rank(brute, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(brute, rows, 1), atol=1e-12)
    # Re-normalising the documents changes the ranking relative to the official order.
    assert not np.array_equal(rows, dn.dn_search(_flat(d), q, 10, means, lam, doc_emb=d)[1])
    with pytest.raises(PipelineError, match="shift_then_normalize"):
        dn.dn_search(_flat(d), q, 10, means, lam, "shift_then_normalize")
    with pytest.raises(PipelineError, match="dn_order"):
        dn.transform(q, means.mu_q, lam, "bogus")


def test_lambda_validation():
    for bad in (-0.1, 1.5, "0.25", True):
        with pytest.raises(PipelineError, match="lambda"):
            dn.check_lambda(bad)
    assert dn.check_lambda(0) == 0.0


def test_dn_star_draws(data):
    q, d = data
    draws = dn.dn_star_draws(len(q), len(d), samples=10, repeats=5, seed=3)
    assert [s for s, _, _ in draws] == [3, 4, 5, 6, 7]
    assert all(len(set(qr)) == 10 and len(set(dr)) == 10 for _, qr, dr in draws)
    assert len({tuple(qr) for _, qr, _ in draws}) > 1
    assert [tuple(x) for _, x, _ in draws] == [tuple(x) for _, x, _ in dn.dn_star_draws(len(q), len(d), 10, 5, 3)]
    np.testing.assert_allclose(dn.mean_embedding(q[draws[0][1]]), q[draws[0][1]].astype(np.float64).mean(0))
    with pytest.raises(PipelineError, match="dn_star.samples"):
        dn.dn_star_draws(len(q), len(d), samples=31, repeats=1)
