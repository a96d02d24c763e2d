"""pipeline.evaluation.querybank: the reference bank and the searches NNN and QB-Norm share, exact
over an in-RAM flat index and a memory-mapped corpus alike (streamed in blocks), candidate
reranking on an approximate index; bad input rejected before any job. The scorings' own formulas
are checked in tests/evaluation/scorings/ (test_nnn, test_qbnorm), with this file's helpers."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from pipeline.core import config as pcfg
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
