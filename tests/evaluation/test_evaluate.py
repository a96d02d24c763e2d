"""The real index and evaluate entry points on a tiny BEIR folder with the tiny random BERT:
metrics.json structure, TREC run files, per-query scores, and config errors naming the key."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.evaluation import evaluate as ev
from pipeline.core.index_params import default_nlist, resolve_params as resolve_index_params
from pipeline.retrieval import index as idx
from pipeline.core.common import PipelineError
from tiny_beir import make_tiny_beir, make_zero_shot_model

METRICS = ["ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "ndcg@100", "recall@10", "recall@100", "mrr@10"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("eval")
    ds = make_tiny_beir(root / "data")
    model = make_zero_shot_model(tiny_model_dir, root / "model")
    index = root / "index"
    idx.main(["--model", str(model), "--dataset", str(ds), "--out", str(index),
              "--params-json", json.dumps({"batch_size": 16, "index_types": ["flat", "hnsw", "ivf"],
                                            "ivf": {"nlist": 4, "nprobe": 2}})])
    return {"root": root, "ds": ds, "model": model, "index": index}


def _evaluate(built, out, params):
    return ev.main(["--model", str(built["model"]), "--dataset", str(built["ds"]), "--index", str(built["index"]),
                    "--out", str(out), "--params-json", json.dumps(params)])


@pytest.fixture(scope="module")
def evaluated(built):
    out = built["root"] / "eval"
    params = {"lambdas": [0.25, 0.5], "dn_star": {"samples": 5, "repeats": 3}, "top_k": 100}
    return out, _evaluate(built, out, params)


def test_metrics_structure(evaluated):
    out, result = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_queries"] == 10 and metrics["num_docs"] == 40
    keys = [(r["scoring"], r["lambda"]) for r in metrics["rows"]]
    assert keys == [("dot", None), ("dn", 0.25), ("dn", 0.5), ("dn*", 0.25), ("dn*", 0.5)]
    for row in metrics["rows"]:
        assert row["index"] == "flat"
        for m in METRICS:
            assert 0.0 <= row[m] <= 1.0
        if row["scoring"] == "dn*":
            assert row["repeats"] == 3 and all(f"{m}_std" in row for m in METRICS)
    # Every doc is ranked (top_k > corpus), so recall@100 is 1 under every scoring.
    assert all(r["recall@100"] == 1.0 for r in metrics["rows"])
    assert "index_recall" not in metrics  # timings live in index_report.json, keeping metrics.json deterministic
    rec = json.loads((out / "index_report.json").read_text())["index_recall"]
    assert set(rec) == {"flat", "hnsw", "ivf"}
    assert rec["flat"]["recall@100_vs_flat"] == 1.0
    assert rec["hnsw"]["recall@100_vs_flat"] == 1.0  # efSearch 256 >= 40 docs: exhaustive
    for r in rec.values():
        assert r["search_seconds"] >= 0 and r["size_bytes"] > 0 and r["build_seconds"] >= 0
    per_query = json.loads((out / "per_query.json").read_text())
    assert set(per_query) == {"dot", "dn@0.25", "dn@0.5", "dn*@0.25", "dn*@0.5"}
    assert all(len(v) == 10 for v in per_query.values())
    dot_row = metrics["rows"][0]
    assert np.mean(list(per_query["dot"].values())) == pytest.approx(dot_row["ndcg@10"], abs=1e-5)


def test_trec_run_files(evaluated):
    out, _ = evaluated
    names = sorted(p.name for p in out.glob("run-*.trec"))
    assert names == sorted(["run-dot.trec", "run-dn-0.25.trec", "run-dn-0.5.trec"]
                           + [f"run-dnstar-{lam}-rep{r}.trec" for lam in ("0.25", "0.5") for r in range(3)])
    lines = (out / "run-dn-0.25.trec").read_text().splitlines()
    assert len(lines) == 10 * 40
    by_query: dict[str, list] = {}
    for line in lines:
        qid, q0, docid, rank, score, tag = line.split()
        assert q0 == "Q0" and tag == "dn-0.25"
        by_query.setdefault(qid, []).append((int(rank), float(score), docid))
    for hits in by_query.values():
        assert [h[0] for h in hits] == list(range(1, 41))
        assert all(a[1] >= b[1] for a, b in zip(hits, hits[1:]))
    # The doc whose id equals the query id is not dropped (BEIR's ignore_identical_ids).
    assert "2" in {h[2] for h in by_query["2"]}


def test_run_scores_are_true_dn_scores(built, evaluated):
    from pipeline.sources.datasets import load_dataset
    from pipeline.models.encoder import BiEncoder

    out, _ = evaluated
    ds = load_dataset(built["ds"])
    qids = list(ds.split("test"))
    q = BiEncoder.load(built["model"]).encode_texts([ds.queries[i] for i in qids], "query", progress=False)
    emb = np.load(built["index"] / "embeddings.npy").astype(np.float64)
    docids = json.loads((built["index"] / "docids.json").read_text())
    lam = 0.5
    brute = (q - lam * q.astype(np.float64).mean(0)) @ (emb - lam * emb.mean(0)).T
    for line in (out / "run-dn-0.5.trec").read_text().splitlines()[:40]:
        qid, _, docid, rank, score, _ = line.split()
        assert float(score) == pytest.approx(brute[qids.index(qid), docids.index(docid)], abs=1e-6)


def test_dn_lambda_zero_equals_dot(built, tmp_path):
    result = _evaluate(built, tmp_path / "e", {"scorings": ["dot", "dn"], "lambdas": [0.0], "approx_indexes": []})
    dot, dn0 = result["rows"]
    assert {k: v for k, v in dot.items() if k not in ("scoring", "lambda")} == \
        {k: v for k, v in dn0.items() if k not in ("scoring", "lambda")}
    assert (tmp_path / "e" / "run-dot.trec").read_text().replace(" dot\n", "\n") == \
        (tmp_path / "e" / "run-dn-0.trec").read_text().replace(" dn-0\n", "\n")
    assert set(result["index_recall"]) == {"flat"}


@pytest.mark.parametrize("params, key", [
    ({"lambdas": [1.5]}, "lambdas"),
    ({"lambdas": [-0.1]}, "lambdas"),
    ({"scorings": ["dot", "bm25"]}, "scorings"),
    ({"index": "annoy"}, "index"),
    ({"approx_indexes": ["lsh"]}, "approx_indexes"),
    ({"dn_order": "sideways"}, "dn_order"),
    ({"dn_star": {"samples": 11}}, "dn_star.samples"),
    ({"dn_star": {"source_split": "dev"}}, "dn_star.source_split"),
    ({"dn_star": {"source_split": "test"}}, "dn_star.source_split"),
    ({"top_k": 0}, "top_k"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_config_names_the_key(built, tmp_path, params, key):
    with pytest.raises(PipelineError, match=key.replace(".", r"\.")):
        _evaluate(built, tmp_path / "bad", params)
    assert not (tmp_path / "bad").exists()


def test_cli_error_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.evaluation.evaluate", "--model", "m", "--dataset", "d", "--index", "i",
                           "--out", str(tmp_path / "o"), "--params-json", '{"lambdas": [2]}'],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: lambdas:")
    helped = subprocess.run([sys.executable, "-m", "pipeline.evaluation.evaluate", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--params-json" in helped.stdout


def test_accepts_the_parameters_the_rule_passes(built, tmp_path):
    # What rules/evaluate.smk sends: pipeline.core.config.evaluate_params of a validated config.
    from pipeline.core import config as pcfg

    cfg = pcfg.validate({"datasets": {"tiny": {"source": "embedded"}}, "runs": {"zeroshot": {"method": "none"}},
                         "index": {"index_types": ["flat", "hnsw"]},
                         "evaluation": {"scorings": ["dot"], "lambdas": [0.25], "search_index": "hnsw",
                                        "reference_run": "zeroshot", "significance_permutations": 1000,
                                        "dn_star": {"samples": 5, "repeats": 2}}})
    params = pcfg.evaluate_params(cfg, "tiny", 3)
    assert params["dn_star"]["seed"] == 3 and "reference_run" not in params
    result = _evaluate(built, tmp_path / "e", params)
    assert result["rows"][0]["index"] == "hnsw"
    assert set(result["index_recall"]) == {"flat", "hnsw"}
    with pytest.raises(PipelineError, match="unknown key"):
        _evaluate(built, tmp_path / "bad", {**params, "reference_run": "zeroshot"})
    assert resolve_index_params({"ivf": {"nlist": None}}, num_docs=40).ivf.nlist == default_nlist(40)


def test_the_index_must_hold_this_corpus_row_for_row(built):
    """Evaluation never loads the passages: the corpus digest recorded at index time decides,
    or (an index without one) the ids streamed from corpus.jsonl against the index rows."""
    from pipeline.sources.datasets import Dataset, iter_corpus_ids, load_dataset

    ds = load_dataset(built["ds"], corpus=False)
    assert ds.corpus == {} and ds.queries and ds.qrels
    ids = list(iter_corpus_ids(built["ds"]))
    ev.check_same_corpus(ds, built["index"], ids, {})
    for wrong, where in ((ids[::-1], "row 1"), (ids[:-1], f"row {len(ids)}"), (ids + ["extra"], f"row {len(ids)}")):
        with pytest.raises(PipelineError, match=f"different corpus .*{where}"):
            ev.check_same_corpus(ds, built["index"], wrong, {})
    digest = {"output_sha256": {"corpus.jsonl": "a" * 64}, "counts": {"docs": len(ids)}}
    with_manifest = Dataset(ds.root, {}, ds.queries, ds.qrels, digest)
    ev.check_same_corpus(with_manifest, built["index"], ids, {"corpus_sha256": "a" * 64})
    with pytest.raises(PipelineError, match="corpus digest"):
        ev.check_same_corpus(with_manifest, built["index"], ids, {"corpus_sha256": "b" * 64})
