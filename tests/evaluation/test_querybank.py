"""NNN and QB-Norm scorings: NNN against the independent `nnn-retrieval` implementation and
against DN's query-side correction (k = all); QB-Norm against a dynamic inverted softmax
computed by hand; exact search over an in-RAM flat index and a memory-mapped corpus alike,
candidate reranking on an approximate index; bad input rejected before any job."""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np
import pytest

from pipeline.core import config as pcfg
from pipeline.evaluation import distribution_normalization as dnlib
from pipeline.evaluation import evaluate as ev
from pipeline.evaluation import querybank as qb
from pipeline.core.common import PipelineError
from pipeline.sources.datasets import Dataset
from pipeline.core.index_params import resolve_params
from pipeline.retrieval.faiss_index import build_index
from pipeline.retrieval.readers import MemmapFlat
from pipeline.evaluation.scorings import ScoringInputs, expand

DIM, N_DOCS, N_BANK, N_TEST = 16, 400, 60, 25


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def emb():
    rng = np.random.default_rng(7)
    offset = rng.normal(size=DIM)  # a shared direction, as real sentence embeddings have
    docs = _unit(rng.normal(size=(N_DOCS, DIM)) + offset)
    bank = _unit(rng.normal(size=(N_BANK, DIM)) + offset)
    test = _unit(rng.normal(size=(N_TEST, DIM)) + offset)
    return docs, bank, test


def make_inputs(docs, bank, test, params: dict, bank_split: str = "train") -> ScoringInputs:
    """A real Dataset whose query texts are looked up in the given embeddings by `encode`."""
    texts = {f"t{i}": f"train query {i}" for i in range(len(bank))}
    texts.update({f"e{i}": f"test query {i}" for i in range(len(test))})
    vectors = {texts[f"t{i}"]: v for i, v in enumerate(bank)} | {texts[f"e{i}"]: v for i, v in enumerate(test)}
    qrels = {"train": {f"t{i}": {"d0": 1} for i in range(len(bank))},
             "test": {f"e{i}": {"d0": 1} for i in range(len(test))}}
    ds = Dataset(Path("/tiny"), {}, texts, qrels)
    p = ev.resolve_params({"query_bank": {"split": bank_split}, **params})
    return ScoringInputs(ds, [f"e{i}" for i in range(len(test))], len(docs), p, queries=np.asarray(test),
                         docs=docs, encode=lambda batch: np.stack([vectors[t] for t in batch]))


def rankings(inputs: ScoringInputs, index, top_k: int) -> dict:
    out = {}
    for scoring in expand(inputs.params.scorings, inputs.params.lambdas, inputs.params):
        scoring.prepare(inputs)
        out[scoring.name] = next(scoring.rankings(index, inputs, top_k))
    return out


def flat(docs):
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(np.ascontiguousarray(docs, dtype=np.float32))
    return index


def nnn_brute(q, d, bank, k, alpha):
    b = -np.sort(-(d @ bank.T), axis=1)[:, :k].mean(axis=1)
    return q @ d.T - alpha * b[None, :]


def top(scores, k):
    rows = np.array([np.lexsort((np.arange(len(s)), -s))[:k] for s in scores])
    return np.take_along_axis(scores, rows, 1), rows


# ----------------------------------------------------------------------------- NNN
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


def test_nnn_exact_on_memmap_and_reranked_on_ivf(emb, tmp_path, monkeypatch):
    docs, bank, test = emb
    params = {"scorings": ["nnn"], "nnn": {"k": [8], "alpha": [0.7]}}
    want = top(nnn_brute(test, docs, bank, 8, 0.7), 20)
    in_ram = rankings(make_inputs(docs, bank, test, params), flat(docs), 20)["nnn[k=8]@0.7"]
    np.save(tmp_path / "embeddings.npy", docs.astype(np.float32))
    mapped = np.load(tmp_path / "embeddings.npy", mmap_mode="r")
    monkeypatch.setattr(qb, "CHUNK", 64)  # stream the corpus in 7 blocks, merging the top-k across them
    on_disk = rankings(make_inputs(mapped, bank, test, params), MemmapFlat(tmp_path / "embeddings.npy", chunk=64), 20)
    for scores, rows in (in_ram, on_disk["nnn[k=8]@0.7"]):
        np.testing.assert_array_equal(rows, want[1])
        np.testing.assert_allclose(scores, want[0], atol=1e-6, rtol=0)
    # An IVF index probing every list returns every document as a candidate: the rerank is exact.
    ivf = build_index("ivf", docs, resolve_params({"index_types": ["ivf"], "ivf": {"nlist": 4, "nprobe": 4}},
                                                    num_docs=N_DOCS))
    reranked = rankings(make_inputs(docs, bank, test, {**params, "index": "ivf",
                                                       "query_bank": {"candidates": N_DOCS}}), ivf, 20)
    np.testing.assert_array_equal(reranked["nnn[k=8]@0.7"][1], want[1])


# ----------------------------------------------------------------------------- QB-Norm
def test_qbnorm_equals_hand_computed_dynamic_inverted_softmax():
    docs = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    bank = np.array([[0.9, 0.1], [0.1, 0.9]])         # top-1 documents 0 and 1: A = {0, 1}
    test = np.array([[1.0, 0.2],                       # top-1 doc 0, in A: normalised
                     [0.5, 0.7],                       # top-1 doc 2, not in A: raw scores
                     [0.2, 1.0]])                      # top-1 doc 1, in A: normalised
    beta = 0.5
    inputs = make_inputs(docs, bank, test, {"scorings": ["qbnorm"], "qbnorm": {"beta": [beta]}})
    scoring = expand(["qbnorm"], [0.25], inputs.params)[0]
    scoring.prepare(inputs)
    scores, rows = next(scoring.rankings(flat(docs), inputs, 4))

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b))

    active = {max(range(4), key=lambda d: dot(r, docs[d])) for r in bank}
    assert active == {0, 1}
    for i, q in enumerate(test):
        raw = [dot(q, d) for d in docs]
        if max(range(4), key=lambda d: raw[d]) in active:
            want = [math.exp(raw[d] / beta) / sum(math.exp(dot(r, docs[d]) / beta) for r in bank) for d in range(4)]
        else:
            want = raw
        order = sorted(range(4), key=lambda d: (-want[d], d))
        assert rows[i].tolist() == order, i
        np.testing.assert_allclose(scores[i], [want[d] for d in order], rtol=1e-12, atol=0)
    # Query 2 fell back to its raw scores; the other two moved: doc 3 (far from the bank) rises.
    np.testing.assert_allclose(scores[1], np.sort(test[1] @ docs.T)[::-1], rtol=0, atol=1e-12)
    assert scoring.details(inputs)["activated_queries"] == 2
    assert rows[2].tolist() != np.argsort(-(test[2] @ docs.T), kind="stable").tolist()


def test_qbnorm_flat_memmap_and_rerank_agree(emb, tmp_path, monkeypatch):
    docs, bank, test = emb
    docs = docs.astype(np.float32)  # what embeddings.npy stores
    params = {"scorings": ["qbnorm"], "qbnorm": {"beta": [0.05]}}
    exact = rankings(make_inputs(docs, bank, test, params), flat(docs), 15)["qbnorm[beta=0.05]"]
    np.save(tmp_path / "embeddings.npy", docs)
    mapped = np.load(tmp_path / "embeddings.npy", mmap_mode="r")
    monkeypatch.setattr(qb, "CHUNK", 50)
    on_disk = rankings(make_inputs(mapped, bank, test, params), MemmapFlat(tmp_path / "embeddings.npy", chunk=50), 15)
    np.testing.assert_array_equal(on_disk["qbnorm[beta=0.05]"][1], exact[1])
    np.testing.assert_allclose(on_disk["qbnorm[beta=0.05]"][0], exact[0], rtol=1e-12)
    ivf = build_index("ivf", docs, resolve_params({"index_types": ["ivf"], "ivf": {"nlist": 4, "nprobe": 4}},
                                                    num_docs=N_DOCS))
    reranked = rankings(make_inputs(docs, bank, test, {**params, "index": "ivf",
                                                       "query_bank": {"candidates": N_DOCS}}), ivf, 15)
    np.testing.assert_array_equal(reranked["qbnorm[beta=0.05]"][1], exact[1])


# ----------------------------------------------------------------------------- bad input
def test_bank_problems_at_evaluation_start(emb):
    docs, bank, test = emb
    too_many = make_inputs(docs, bank, test, {"scorings": ["nnn"], "nnn": {"k": [N_BANK + 1]}})
    with pytest.raises(PipelineError, match=rf"nnn.k: k = {N_BANK + 1} .* only {N_BANK} reference queries"):
        rankings(too_many, flat(docs), 10)
    missing = make_inputs(docs, bank, test, {"scorings": ["qbnorm"]}, bank_split="dev")
    with pytest.raises(PipelineError, match=r"query_bank.split: .* no qrels split 'dev'"):
        rankings(missing, flat(docs), 10)
    empty = make_inputs(docs, bank, test, {"scorings": ["nnn"]})
    empty.dataset.qrels["train"] = {}
    with pytest.raises(PipelineError, match=r"qrels/train.tsv has no query"):
        rankings(empty, flat(docs), 10)
    with pytest.raises(PipelineError, match="never the test"):
        rankings(make_inputs(docs, bank, test, {"scorings": ["nnn"]}, bank_split="test"), flat(docs), 10)


def _local_dataset(root: Path, train_queries: int) -> Path:
    (root / "qrels").mkdir(parents=True)
    for split, ids in (("train", range(train_queries)), ("test", range(100, 103))):
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                                     "".join(f"q{i}\td1\t1\n" for i in ids))
    return root


@pytest.mark.parametrize("evaluation,train_queries,message", [
    ({"nnn": {"alpha": [1.5]}}, 5, r"evaluation.nnn.alpha\[0\]: expected a number in \[0, 1\], got 1.5"),
    ({"nnn": {"k": [6]}}, 5, r"evaluation.nnn.k\[0\]: k = 6 reference neighbours .* only 5 reference queries"),
    ({"nnn": {"k": ["most"]}}, 5, r"evaluation.nnn.k\[0\]: expected a positive integer or 'all'"),
    ({"qbnorm": {"beta": [0]}}, 5, r"evaluation.qbnorm.beta\[0\]: expected an inverted-softmax temperature"),
    ({}, 0, r"evaluation.query_bank.split: .*train.tsv holds no query outside the test split"),
    ({"query_bank": {"split": "test"}}, 5, r"'test' is the test split of datasets.local"),
])
def test_config_rejects_bad_normalisation_settings(tmp_path, evaluation, train_queries, message):
    root = _local_dataset(tmp_path / "data", train_queries)
    raw = {"datasets": {"local": {"source": "local", "path": str(root)}}, "runs": {"zs": {"method": "none"}},
           "evaluation": {"scorings": ["dot", "nnn", "qbnorm"], **evaluation}}
    with pytest.raises(pcfg.ConfigError, match=message):
        pcfg.validate(raw)


def test_config_passes_the_training_split_as_the_bank(tmp_path):
    root = _local_dataset(tmp_path / "data", 5)
    cfg = pcfg.validate({"datasets": {"local": {"source": "local", "path": str(root), "train_split": "train"}},
                         "runs": {"zs": {"method": "none"}},
                         "evaluation": {"scorings": ["dot", "nnn"], "nnn": {"k": [2, "all"], "alpha": [0.5, 1]}}})
    params = ev.resolve_params(pcfg.evaluate_params(cfg, "local", 13))
    assert params.query_bank.split == "train"
    names = [s.name for s in expand(params.scorings, params.lambdas, params)]
    assert names == ["dot", "nnn[k=2]@0.5", "nnn[k=2]@1", "nnn[k=all]@0.5", "nnn[k=all]@1"]
