"""The MLflow UI side of a logged grid: the URL of an experiment's runs table and of its
per-method view (a shared runs-table view stored on the experiment), and artifact paths that
follow the store when a results folder moves.

    python -m pipeline.results.mlflow_ui --config CONFIG [--port P]

re-points the store's artifact paths at the `mlartifacts/` folder beside it and prints both URLs
(what `make ui` and `make run` print).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from pipeline.core import config as pcfg
from pipeline.core.common import PipelineError, run_main

ARTIFACTS_DIR = "mlartifacts"


def relocate_artifacts(store: Path) -> int:
    """Point every experiment and run of a sqlite store at the artifacts folder of its own results.

    MLflow records artifact locations as absolute URIs, so a results folder that was moved or
    copied (another checkout, an archive) would show runs without artifacts. The store and its
    artifacts always travel together: an experiment's artifacts are `<experiment>/mlartifacts/`
    beside the store (or `mlartifacts/` itself, for stores written before results were scoped per
    experiment); rows that already point there are left alone. Returns the number of rows changed."""
    import sqlite3

    root = store.resolve().parent
    changed = 0
    with contextlib.closing(sqlite3.connect(store, timeout=60)) as db, db:
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
            try:
                rows = db.execute(f"SELECT rowid, {column} FROM {table} WHERE {column} LIKE 'file://%'").fetchall()
            except sqlite3.OperationalError:  # not an MLflow store (yet): nothing to relocate
                return changed
            for rowid, uri in rows:
                head, sep, tail = uri.partition(f"/{ARTIFACTS_DIR}")
                experiment = head.rstrip("/").rsplit("/", 1)[-1]
                # An experiment's own folder beside the store (it holds its tables before anything
                # is logged); otherwise the flat layout of older stores, mlartifacts/ itself.
                folder = root / experiment if (root / experiment).is_dir() else root
                here = (folder / ARTIFACTS_DIR).as_uri()
                if sep and head + sep != here:
                    db.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (here + tail, rowid))
                    changed += 1
    return changed


# MLflow 3.17's UI has a global GenAI / model-training switch (kept in the browser) that wins over
# the experiment's kind; links that name the workflow open the runs table whatever the switch says.
ML_VIEW = "workflowType=machine_learning"
PER_METHOD_VIEW = "per-method"


def runs_path(experiment_id: str, view: str | None = None) -> str:
    """The UI route of the experiment's runs table (with a shared view: its columns and filter)."""
    return f"#/experiments/{experiment_id}/runs?{ML_VIEW}" + (f"&viewStateShareKey={view}" if view else "")


def per_method_view(metric_keys, lam: float | None) -> dict:
    """The shared runs-table view (MLflow's `mlflow.sharedViewState.<key>` experiment tag) that
    shows what the headline table shows, one parent row per run: dataset, version, the main metric
    under dot (and DN at the headline λ) with its p and MDD, the second metric, N_total, bank size
    and cost."""
    from pipeline.results.mlflow_log import LOGGED_METRICS, metric_key  # why: loads mlflow, pandas, scipy; kept out of this module's import

    wanted = [f"{metric_key(m)}.dot" for m in LOGGED_METRICS] + ["p.dot", "mdd.dot"]
    if lam is not None:
        wanted += [f"{metric_key(m)}.dn-{lam:g}" for m in LOGGED_METRICS]
    wanted += ["n_total", "memory_size", "train.steps", "cost.peak_mem_mb", "cost.sec_per_update"]
    columns = [f"metrics.`{k}`" for k in wanted if k in set(metric_keys)]
    return {"searchFilter": "tags.`pipeline.level` = 'parent'", "orderByKey": "attributes.start_time",
            "orderByAsc": True, "selectedColumns": ["attributes.`Dataset`", "attributes.`Version`", *columns]}


def runs_url(cfg: dict, port: int = 5000, host: str = "127.0.0.1", view: str | None = None) -> str:
    """The URL of the experiment's runs table in `make ui` (the store must hold the experiment)."""
    store = Path(cfg["mlflow"]["store"])
    if not store.is_file():
        raise PipelineError(f"{store}: no MLflow store yet (run `make run` first)")
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(tracking_uri=f"sqlite:///{store.resolve()}").get_experiment_by_name(cfg["experiment"])
    if experiment is None:
        raise PipelineError(f"{store}: no experiment {cfg['experiment']!r} (run `make run` with this config first)")
    return f"http://{host}:{port}/{runs_path(experiment.experiment_id, view)}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.results.mlflow_ui",
                                     description="The MLflow store of an experiment: print the URL of its runs "
                                                 "table in `make ui`, after pointing its artifact paths at the "
                                                 "mlartifacts/ folder beside the store (a moved results folder).")
    parser.add_argument("--config", required=True, help="experiment config YAML")
    parser.add_argument("--port", type=int, default=5000, help="the UI's port (default: 5000)")
    args = parser.parse_args(argv)
    cfg = pcfg.load(args.config)
    store = Path(cfg["mlflow"]["store"])
    if store.is_file():
        relocate_artifacts(store)
    print(f"MLflow runs table ({cfg['experiment']}): {runs_url(cfg, args.port)}")
    print(f"MLflow per-method view: {runs_url(cfg, args.port, view=PER_METHOD_VIEW)}")


if __name__ == "__main__":
    run_main(main)
