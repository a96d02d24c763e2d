"""Extension points: a scoring registered in this file alone, and an index type given as a FAISS
index_factory string, flow through evaluate, the tables, the plots and MLflow without touching
any other module. Also: config validation does not import torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipeline.core import config as pcfg
from pipeline.core.index_params import resolve_params
from pipeline.retrieval.faiss_index import build_index
from pipeline.evaluation.distribution_normalization import DNMeans
from pipeline.core.layout import Layout
from pipeline.evaluation.scorings import Scoring, register_scoring
from tiny_beir import evaluate_zero_shot

FACTORY = "HNSW16,SQ8"


@register_scoring("shifted-dot")
class ShiftedDot(Scoring):
    """Dot product with every query moved by a fixed vector: S(q, d) = (q + v) . d."""

    caption = "dot product with queries shifted by a fixed vector"

    def means(self, inputs):
        v = np.full(inputs.queries.shape[1], 0.05)
        return [DNMeans(mu_q=-v, mu_d=np.zeros_like(v))]  # search lambda 1: q - (-v) = q + v


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("ext")
    layout = Layout(root / "results", "extension-points")
    cfg = pcfg.validate({
        "experiment": "extension-points",
        "datasets": {"tiny": {"source": "embedded"}},
        "encoder": {"model": str(tiny_model_dir)},
        "runs": {"zeroshot": {"method": "none"}},
        "index": {"index_types": ["flat", FACTORY]},
        "evaluation": {"scorings": ["dot", "shifted-dot", "dn", "nnn", "qbnorm"], "lambdas": [0.5],
                       "nnn": {"k": [3], "alpha": [0.5]}},
        "mlflow": {"store": str(layout.mlflow_store)},
    })
    grid = evaluate_zero_shot(layout, cfg)
    return cfg, layout, grid


def test_new_scoring_reaches_every_output(grid):
    cfg, layout, result = grid
    frame = pd.read_csv(layout.tables / "summary.csv")
    shifted = frame[frame.scoring == "shifted-dot"]
    assert len(shifted) == 1 and shifted["lambda"].isna().all()
    # It is a real, different ranking: the shift changes some query's NDCG@10.
    per_query = json.loads((layout.eval("tiny", "zeroshot", 13) / "per_query.json").read_text())
    assert set(per_query) == {"dot", "shifted-dot", "dn@0.5", "nnn[k=3]@0.5", "qbnorm[beta=0.05]"}
    assert (layout.eval("tiny", "zeroshot", 13) / "run-shifted-dot.trec").is_file()
    assert "NDCG@10 shifted-dot" in (layout.tables / "headline.md").read_text()
    assert "shifted-dot" in set(pd.read_csv(layout.tables / "dn.csv").scoring)
    # The scoring plot names it (SVG text is kept as text).
    assert "shifted-dot" in (layout.plots / "dn_lambda.svg").read_text()

    from mlflow.tracking import MlflowClient

    from pipeline.results.mlflow_log import log_experiment

    log_experiment(result, cfg)
    client = MlflowClient(tracking_uri=f"sqlite:///{layout.mlflow_store}")
    experiment = client.get_experiment_by_name("extension-points")
    # A zero-shot model is one MLflow run (its metrics are the mean over seeds; here one seed).
    (model_run,) = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags["run"] == "zeroshot"]
    assert model_run.data.metrics["ndcg_10.shifted-dot"] == pytest.approx(float(shifted["ndcg@10"].iloc[0]), abs=5e-5)
    assert "ndcg_10.dn-0.5" in model_run.data.metrics


def test_nnn_and_qbnorm_reach_every_output(grid):
    """The registered normalisations (one class each) flow through the same outputs, their
    reference bank recorded in metrics.json."""
    cfg, layout, result = grid
    metrics = json.loads((layout.eval("tiny", "zeroshot", 13) / "metrics.json").read_text())
    assert metrics["query_bank"] == {"split": "train", "size": 10, "pool_size": 10, "seed": 0}
    assert metrics["scoring_details"]["nnn[k=3]@0.5"] == {"k": 3, "alpha": 0.5, "search": "exact"}
    assert (layout.eval("tiny", "zeroshot", 13) / "run-nnn-k3-0.5.trec").is_file()
    table = pd.read_csv(layout.tables / "dn.csv")
    rows = table.set_index("scoring")
    assert rows.loc["nnn[k=3]", "parameters"] == "k=3 α=0.5"
    assert rows.loc["qbnorm[beta=0.05]", "parameters"] == "beta=0.05"
    assert {"delta", "p_value", "mdd"} <= set(table.columns)
    assert "NDCG@10 NNN k=3 α=0.5" in (layout.tables / "headline.md").read_text()
    svg = (layout.plots / "dn_lambda.svg").read_text()
    assert "NNN k=3 (α)" in svg and "QB-Norm beta=0.05" in svg

    from mlflow.tracking import MlflowClient

    from pipeline.results.mlflow_log import log_experiment

    log_experiment(result, cfg)
    client = MlflowClient(tracking_uri=f"sqlite:///{layout.mlflow_store}")
    experiment = client.get_experiment_by_name("extension-points")
    (model_run,) = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags["run"] == "zeroshot"]
    assert {"ndcg_10.nnn-k3-0.5", "ndcg_10.qbnorm-beta0.05"} <= set(model_run.data.metrics)


def test_factory_string_index_reaches_the_index_table(grid):
    _, layout, _ = grid
    stats = json.loads((layout.index("tiny", "zeroshot", "base") / "index_stats.json").read_text())
    assert set(stats["indexes"]) == {"flat", FACTORY}
    assert (layout.index("tiny", "zeroshot", "base") / "HNSW16_SQ8.faiss").is_file()
    table = pd.read_csv(layout.tables / "index.csv")
    row = table[table["index"] == FACTORY].iloc[0]
    assert 0.5 <= row["recall@100_vs_flat"] <= 1.0
    assert FACTORY in (layout.tables / "index.md").read_text()


def test_aliases_equal_their_factory_strings(tmp_path):
    """flat/hnsw/ivf built through index_factory search exactly like the hand-built classes."""
    import faiss

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 16)).astype(np.float32)
    params = resolve_params({"index_types": ["flat", "hnsw", "ivf"]}, num_docs=len(emb))
    q = rng.normal(size=(20, 16)).astype(np.float32)
    hand = faiss.IndexHNSWFlat(16, params.hnsw.M, faiss.METRIC_INNER_PRODUCT)
    hand.hnsw.efConstruction = params.hnsw.efConstruction
    hand.hnsw.efSearch = params.hnsw.efSearch
    hand.add(emb)
    np.testing.assert_array_equal(build_index("hnsw", emb, params).search(q, 10)[1], hand.search(q, 10)[1])
    quantizer = faiss.IndexFlatIP(16)
    ivf = faiss.IndexIVFFlat(quantizer, 16, params.ivf.nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed, ivf.cp.min_points_per_centroid = params.ivf.seed, 1
    ivf.train(emb)
    ivf.add(emb)
    ivf.nprobe = params.ivf.nprobe
    np.testing.assert_array_equal(build_index("ivf", emb, params).search(q, 10)[1], ivf.search(q, 10)[1])


def test_config_validation_does_not_import_torch():
    code = ("import sys, pipeline.core.config as c; c.load('config/config.yaml'); c.load('config/scifact.yaml'); "
            "print(sorted(m for m in ('torch', 'transformers', 'mlflow') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=pcfg.SCHEMA_PATH.parents[1])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_every_report_item_has_one_caption():
    """Captions live in report/<name>.rst only: one per plot and per report table, none stale."""
    from pipeline.core.layout import REPORT_TABLES
    from pipeline.results.plots import PLOTS

    report = pcfg.SCHEMA_PATH.parents[1] / "report"
    expected = {*PLOTS, *REPORT_TABLES, "workflow"}
    assert {p.stem for p in report.glob("*.rst")} == expected
    rule = (report.parent / "rules" / "aggregate.smk").read_text()
    helpers = (report.parent / "rules" / "common.smk").read_text()
    assert "enumerate(REPORT_TABLES)" in rule and "enumerate(PLOTS)" in rule
    assert 'caption=f"../report/{name}.rst"' in helpers
    for path in report.glob("*.rst"):
        assert "@" not in path.read_text().replace("\\@", ""), f"{path}: write NDCG\\@10 (a bare @ renders as mailto)"
