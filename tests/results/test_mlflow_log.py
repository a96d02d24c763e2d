"""pipeline.results.mlflow_log's pure parts, directly (the full logging runs on real grids in
project/test_extension_points.py and e2e/test_pipeline.py): metric keys MLflow accepts, params
flattened to strings, values rounded as the tables round them, seed-mean curves over the steps
every seed logged, and one dataset digest per manifest."""

from __future__ import annotations

import json
import re

from pipeline.evaluation.scorings import from_row
from pipeline.results import mlflow_log as M

MLFLOW_KEY = re.compile(r"^[\w\-./ ]+$")  # what MLflow's metric names allow


def test_metric_keys_are_valid_mlflow_names_per_scoring():
    assert M.metric_key("ndcg@10") == "ndcg_10"
    keys = {M.metric_key("ndcg@10", from_row(family, lam)) for family, lam in
            [("dot", None), ("dn", 0.25), ("dn*", 0.25), ("dn", 0.5)]}
    assert len(keys) == 4  # every scoring (and lambda) its own key
    assert all(MLFLOW_KEY.match(key) and key.startswith("ndcg_10.") for key in keys), keys


def test_flatten_nests_with_dots_and_keeps_lists_and_none_as_json():
    flat = M.flatten({"encoder": {"model": "m", "layers": None}, "lambdas": [0.25, 0.5], "tied": True})
    assert flat == {"encoder.model": "m", "encoder.layers": "null", "lambdas": "[0.25, 0.5]", "tied": "True"}
    assert json.loads(flat["lambdas"]) == [0.25, 0.5]


def test_readable_rounds_like_the_tables():
    assert M.readable("ndcg_10.dot", 0.123456) == 0.1235
    assert M.readable("p.ndcg_10", 0.000123456) == 0.000123
    assert M.readable("cost.peak_mem_mb", 1234.5678) == 1234.6
    assert M.readable("cost.sec_per_update", 0.0123456) == 0.01235
    assert M.readable("n_total", 64.0) == 64.0


def test_mean_curves_average_the_steps_every_seed_logged():
    logs = [[{"step": 1, "loss": 2.0, "time": 10.0}, {"step": 2, "loss": 1.0, "time": 11.0}],
            [{"step": 1, "loss": 4.0, "time": 20.0}, {"step": 2, "loss": float("nan"), "time": 21.0},
             {"step": 3, "loss": 0.5, "time": 22.0}]]
    curves = M.mean_curves(logs)
    assert [c["step"] for c in curves] == [1, 2]     # step 3: one seed only
    assert curves[0]["loss"] == 3.0 and curves[0]["time"] == 10.0  # the first seed's clock
    assert "loss" not in curves[1]                   # a NaN in one seed drops the column at that step
    assert M.mean_curves([]) == [] and M.mean_curves([logs[0], []]) == []


def test_dataset_digest_follows_the_files_and_is_empty_without_them():
    a = M.dataset_digest({"output_sha256": {"corpus.jsonl": "aa", "queries.jsonl": "bb"}})
    b = M.dataset_digest({"output_sha256": {"corpus.jsonl": "aa", "queries.jsonl": "bc"}})
    assert len(a) == 64 and a != b
    assert M.dataset_digest({"input_sha256": {"corpus.jsonl": "aa", "queries.jsonl": "bb"}}) == a
    assert M.dataset_digest({}) == ""


def test_tracking_uri_is_an_absolute_sqlite_store_with_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = M.tracking_uri({"mlflow": {"store": "results/mlflow.db"}})
    assert uri == f"sqlite:///{tmp_path.resolve()}/results/mlflow.db"
    assert (tmp_path / "results").is_dir()
