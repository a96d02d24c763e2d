"""pipeline.results.mlflow_ui with a real MLflow sqlite store: artifact paths re-pointed at the
mlartifacts/ folder beside a moved store, the runs-table URL and its per-method view, and a store
or experiment that is not there named."""

from __future__ import annotations

import sqlite3

import pytest
from mlflow.tracking import MlflowClient

from pipeline.core.common import PipelineError
from pipeline.results import mlflow_ui as ui


def test_a_moved_store_points_at_its_own_artifacts(tmp_path):
    store = tmp_path / "results" / "mlflow.db"
    (tmp_path / "results" / "exp").mkdir(parents=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    old = "file:///elsewhere/results/exp/mlartifacts"
    experiment = client.create_experiment("exp", artifact_location=old)
    run = client.create_run(experiment).info.run_id
    cfg = {"experiment": "exp", "mlflow": {"store": str(store)}}
    assert ui.relocate_artifacts(store) == 2  # the experiment's row and its run's
    here = (tmp_path / "results" / "exp" / "mlartifacts").as_uri()
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT artifact_location FROM experiments WHERE name = 'exp'").fetchone()[0] == here
        assert db.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run,)).fetchone()[0].startswith(here + "/")
    assert ui.relocate_artifacts(store) == 0  # already there: nothing changes
    assert ui.runs_url(cfg, port=5001) == f"http://127.0.0.1:5001/#/experiments/{experiment}/runs?{ui.ML_VIEW}"
    assert ui.runs_url(cfg, view=ui.PER_METHOD_VIEW).endswith("&viewStateShareKey=per-method")
    with pytest.raises(PipelineError, match=r"no experiment 'other'"):
        ui.runs_url({**cfg, "experiment": "other"})
    with pytest.raises(PipelineError, match="no MLflow store yet"):
        ui.runs_url({**cfg, "mlflow": {"store": str(tmp_path / "none.db")}})


def test_the_per_method_view_shows_the_logged_headline_columns():
    view = ui.per_method_view(["ndcg_10.dot", "ndcg_10.dn-0.25", "p.dot", "n_total", "other"], 0.25)
    assert view["selectedColumns"] == ["attributes.`Dataset`", "attributes.`Version`", "metrics.`ndcg_10.dot`",
                                       "metrics.`p.dot`", "metrics.`ndcg_10.dn-0.25`", "metrics.`n_total`"]
    assert view["searchFilter"] == "tags.`pipeline.level` = 'parent'"
    assert "metrics.`ndcg_10.dn-0.25`" not in ui.per_method_view(["ndcg_10.dn-0.25"], None)["selectedColumns"]
