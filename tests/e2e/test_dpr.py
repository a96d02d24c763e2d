"""The DPR path through Snakemake, end to end, on the committed dpr-mini fixture: the data rule
converts DPR-format files (config `source: dpr`), training reads the dataset's own hard
negatives (one drawn per question per epoch), evaluation scores the QA split by Top-k answer
accuracy, and summary.csv, the tables and MLflow carry acc@5/20/100. Plus the Tevatron fixture
through the data rule. Tiny random BERT, 2-3 updates: well under two minutes on 2 cores."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
import yaml

from tests.e2e.test_pipeline import snakemake

MINI = "data/embedded/dpr-mini"
RUNS = {
    "dpr-4": {"method": "inbatch", "batch_size": 4},
    "contaccum-4x2": {"method": "contaccum", "batch_size": 4, "accumulation_steps": 2, "memory_size": 8,
                      "hard_negatives": {"source": "dataset", "per_query": 1}},
}


def tiny_config(tiny_model_dir, experiment: str, datasets: dict) -> dict:
    return {
        "experiment": experiment,
        "datasets": datasets,
        "seeds": [3],
        "encoder": {"model": str(tiny_model_dir), "query_max_length": 24, "passage_max_length": 48, "tied": False},
        "training": {"max_steps": 3, "lr": 1e-4, "warmup_ratio": 0.0},
        "runs": RUNS,
        "index": {"index_types": ["flat"]},
        "evaluation": {"scorings": ["dot", "dn*"], "lambdas": [0.25], "dn_star": {"samples": 8, "repeats": 2},
                       "reference_run": "dpr-4", "significance_permutations": 200},
    }


@pytest.fixture(scope="module")
def dpr_run(tmp_path_factory, tiny_model_dir):
    from conftest import copy_workflow

    repo = copy_workflow(tmp_path_factory.mktemp("dpr-e2e") / "repo")
    config = tiny_config(tiny_model_dir, "dpr-e2e", {
        "dpr-mini": {"source": "dpr", "train": f"{MINI}/train.json", "qa": {"test": f"{MINI}/test.qa.csv"},
                     "passages": f"{MINI}/psgs.tsv"}})
    (repo / "tiny.yaml").write_text(yaml.safe_dump(config))
    snakemake(repo)
    return repo


def test_summary_carries_answer_accuracy(dpr_run):
    frame = pd.read_csv(dpr_run / "results" / "dpr-e2e" / "tables" / "summary.csv")
    assert list(frame.columns[:8]) == ["dataset", "run", "seed", "scoring", "lambda", "acc@5", "acc@20", "acc@100"]
    assert "ndcg@10" not in frame.columns
    assert set(frame.run) == set(RUNS) and set(frame.scoring) == {"dot", "dn*"}
    assert frame[["acc@1", "acc@5", "acc@20", "acc@100"]].stack().between(0, 1).all()
    assert (frame["acc@5"] <= frame["acc@20"]).all() and (frame["acc@20"] <= frame["acc@100"]).all()
    assert frame[frame.run == "contaccum-4x2"]["p_value"].notna().all()
    metrics = json.loads((dpr_run / "results" / "dpr-e2e" / "eval" / "dpr-mini" / "dpr-4" / "seed3" / "metrics.json").read_text())
    # Only the QA split's 40 questions are encoded and scored (not the 32 training questions).
    assert metrics["num_queries"] == 40 and metrics["protocol"] == "answers"
    per_query = json.loads((dpr_run / "results" / "dpr-e2e" / "eval" / "dpr-mini" / "dpr-4" / "seed3" / "per_query.json")
                           .read_text())
    assert set(per_query["dot"]) == {f"test-{i}" for i in range(40)}

    tables = dpr_run / "results" / "dpr-e2e" / "tables"
    summary = (tables / "summary.md").read_text()
    assert "| run | scoring | λ | seeds | updates | Top-5 | Top-20 | Top-100 | p vs dpr-4 (Holm) |" in summary
    assert "per-query Top-20" in summary
    headline = (tables / "headline.md").read_text()
    assert "| Top-20 dot | p vs dpr-4 | MDD | Top-20 DN* λ=0.25 | Top-100 dot |" in headline
    assert "| contaccum-4x2 | 1 | 3 | 8 | 8 |" in headline  # seeds, updates, N_total, memory
    assert "(Top-20)" in (tables / "dn.md").read_text()


def test_training_uses_the_datasets_own_hard_negatives(dpr_run):
    results = dpr_run / "results"
    rows = [json.loads(line) for line in
            (results / "dpr-e2e" / "models" / "dpr-mini" / "contaccum-4x2" / "seed3" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    # one hard negative per question: [pos_cur; pos_bank; hn_cur; hn_bank] = 4 + 8 + 4 + 8 passages at step 3
    assert rows[-1]["negatives_per_query"] == 4 + 8 + 4 + 8 - 1
    assert not (results / "hardneg").exists()  # no BM25 mining
    log = (results / "dpr-e2e" / "logs" / "train" / "dpr-mini" / "contaccum-4x2" / "seed3.log").read_text()
    assert "training contaccum on 32 pairs" in log
    manifest = json.loads((results / "data" / "dpr-mini" / "manifest.json").read_text())
    assert manifest["source"] == "dpr" and manifest["counts"]["answers"]["test"]["questions"] == 40


def test_mlflow_carries_answer_accuracy(dpr_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{dpr_run / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dpr-e2e")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    child = next(r for r in runs if r.data.tags.get("pipeline.level") == "seed"
                 and r.data.tags["run"] == "contaccum-4x2")
    assert {"acc_5.dot", "acc_20.dot", "acc_100.dot", "acc_20.dnstar-0.25"} <= set(child.data.metrics)
    assert not any(k.startswith("ndcg") for k in child.data.metrics)
    summary = pd.read_csv(dpr_run / "results" / "dpr-e2e" / "tables" / "summary.csv")
    row = summary[(summary.run == "contaccum-4x2") & (summary.scoring == "dot")]
    assert child.data.metrics["acc_20.dot"] == pytest.approx(float(row["acc@20"].iloc[0]))
    parent = next(r for r in runs if r.data.tags.get("pipeline.level") == "parent"
                  and r.data.tags["run"] == "contaccum-4x2")
    assert {"acc_5.dot", "acc_20.dot", "acc_100.dot", "p.dot"} <= set(parent.data.metrics)
    assert "| Top-20 dot |" in experiment.tags["mlflow.note.content"]


def test_tevatron_fixture_through_the_data_rule(dpr_run, tiny_model_dir):
    """Tevatron JSONL training data (+ the QA file and passages) converted by the data rule; the
    dry run then plans training from its own negatives without BM25 mining."""
    repo = dpr_run.parent / "tev"
    shutil.copytree(dpr_run, repo, ignore=shutil.ignore_patterns("results"))
    config = tiny_config(tiny_model_dir, "tev-e2e", {
        "tev-mini": {"source": "dpr", "tevatron_train": f"{MINI}/tevatron-train.jsonl",
                     "qa": {"test": f"{MINI}/test.qa.csv"}, "passages": f"{MINI}/psgs.tsv"}})
    (repo / "tiny.yaml").write_text(yaml.safe_dump(config))
    snakemake(repo, "-p", "results/data/tev-mini/manifest.json")  # a flag ends --configfile's file list
    data = repo / "results" / "data" / "tev-mini"
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["counts"]["splits"]["train"]["queries"] == 20
    negatives = [json.loads(line) for line in (data / "hard_negatives" / "train.jsonl").read_text().splitlines()]
    assert len(negatives) == 20 and negatives[0]["query_id"] == "tev-0" and negatives[0]["negatives"] == ["2", "3"]
    plan = snakemake(repo, "-n", "-p").stdout
    assert not re.search(r"^(local)?rule hard_negatives:", plan, re.M)  # no BM25 rule planned
    assert f"--hard-negatives results/data/tev-mini/hard_negatives/train.jsonl" in plan
