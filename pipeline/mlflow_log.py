"""MLflow logging of a finished grid, idempotent and from one process.

One experiment per config `experiment`; one run per dataset x run x seed (params: the flattened
recipe; metrics: final metrics per scoring and per-step training curves; artifacts: metrics,
TREC run files, train log, resolved config; tags: git commit, config hash, dataset sha256) and a
parent run per dataset x run holding the across-seed mean and std. A run is identified by the
tags `pipeline.job` and `pipeline.config_hash`: re-logging the same job with the same recipe is a
no-op, and a changed recipe creates a new run.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from . import config as pcfg
from .common import git_commit, log, read_json

CURVES = ("loss", "lr", "grad_norm_ratio", "grad_norm_query", "grad_norm_passage", "peak_mem_mb", "bank_fill")


def tracking_uri(cfg: dict) -> str:
    """The sqlite store named in config (relative paths are relative to the working directory)."""
    store = Path(cfg.get("mlflow", {}).get("store", "results/mlflow.db")).resolve()
    store.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store}"


def flatten(obj: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, type(None))) else str(value)
    return out


def metric_name(row: dict, metric: str) -> str:
    lam = row.get("lambda")
    scoring = row["scoring"].replace("*", "_star")
    return f"{scoring}{'' if lam is None else f'_lam{lam:g}'}.{metric}".replace("@", "_at_")


def _existing(client, experiment_id: str, job: str, config_hash: str):
    runs = client.search_runs([experiment_id], filter_string=f"tags.`pipeline.job` = '{job}' and "
                                                            f"tags.`pipeline.config_hash` = '{config_hash}'")
    return runs[0] if runs else None


def log_experiment(results: Path, cfg: dict) -> dict[str, int]:
    """Log every job of the grid; returns counts of created and skipped runs."""
    uri = tracking_uri(cfg)
    client = MlflowClient(tracking_uri=uri)
    name = cfg.get("experiment", "default")
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        artifacts = (results.resolve() / "mlartifacts").as_uri()
        experiment_id = client.create_experiment(name, artifact_location=artifacts)
    else:
        experiment_id = experiment.experiment_id
    commit = git_commit()
    counts = {"created": 0, "skipped": 0}

    for dataset in cfg["datasets"]:
        for run in cfg["runs"]:
            recipe = pcfg.recipe(cfg, run, dataset)
            run_cfg = {"dataset": cfg["datasets"][dataset], "recipe": recipe, "index": cfg.get("index"),
                       "evaluation": cfg.get("evaluation"), "seeds": cfg["seeds"]}
            config_hash = pcfg.stable_hash(run_cfg)
            parent_job = f"{dataset}/{run}"
            parent = _existing(client, experiment_id, parent_job, config_hash)
            if parent is not None:
                counts["skipped"] += 1 + len(cfg["seeds"])
                continue
            manifest = read_json(results / "data" / dataset / "manifest.json")
            tags = {"pipeline.config_hash": config_hash, "git_commit": commit,
                    "dataset_sha256": json.dumps(manifest.get("sha256", manifest.get("inputs", {})))[:5000],
                    "dataset": dataset, "run": run, "method": recipe["method"]}
            seed_rows = []
            parent_run = client.create_run(experiment_id, run_name=parent_job,
                                           tags={**tags, "pipeline.job": parent_job, "pipeline.level": "parent"})
            for seed in cfg["seeds"]:
                job = pcfg.Job(dataset, run, seed)
                rows = _log_child(client, experiment_id, parent_run.info.run_id, results, cfg, job, recipe,
                                  {**tags, "seed": str(seed)})
                seed_rows.append(rows)
                counts["created"] += 1
            # Parent: mean and std across seeds of every final metric.
            merged: dict[str, list[float]] = {}
            for rows in seed_rows:
                for key, value in rows.items():
                    merged.setdefault(key, []).append(value)
            metrics = []
            for key, values in merged.items():
                metrics.append(Metric(f"{key}.mean", float(np.mean(values)), 0, 0))
                metrics.append(Metric(f"{key}.std", float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, 0, 0))
            client.log_batch(parent_run.info.run_id, metrics=metrics,
                             params=[Param(k, v[:6000]) for k, v in flatten(recipe).items()])
            client.set_terminated(parent_run.info.run_id)
            counts["created"] += 1
    log.info("MLflow (%s, experiment %r): %d runs created, %d already logged", uri, name,
             counts["created"], counts["skipped"])
    return counts


def _log_child(client, experiment_id, parent_id, results, cfg, job, recipe, tags) -> dict:
    tag = pcfg.model_tag(cfg, job.run, job.seed)
    eval_dir = results / "eval" / job.dataset / job.run / f"seed{job.seed}"
    model_dir = results / "models" / job.dataset / job.run / tag
    child = client.create_run(experiment_id, run_name=job.key,
                              tags={**tags, "pipeline.job": job.key, "pipeline.level": "seed",
                                    "mlflow.parentRunId": parent_id})
    run_id = child.info.run_id
    metrics_doc = read_json(eval_dir / "metrics.json")
    final: dict[str, float] = {}
    for row in metrics_doc["rows"]:
        for metric, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and metric not in ("lambda", "repeats"):
                final[metric_name(row, metric)] = float(value)
    train_summary = read_json(model_dir / "train_summary.json")
    for key in ("sec_per_update", "peak_mem_mb", "seconds", "steps"):
        if isinstance(train_summary.get(key), (int, float)):
            final[f"train.{key}"] = float(train_summary[key])
    metrics = [Metric(k, v, 0, 0) for k, v in final.items() if np.isfinite(v)]
    log_path = model_dir / "train_log.jsonl"
    if log_path.is_file():
        for line in log_path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                metrics += [Metric(f"train.{c}", float(row[c]), 0, int(row["step"])) for c in CURVES
                            if c in row and row[c] is not None and np.isfinite(row[c])]
    for start in range(0, len(metrics), 900):  # MLflow caps a batch at 1000 entries
        client.log_batch(run_id, metrics=metrics[start:start + 900],
                         params=[Param(k, v[:6000]) for k, v in flatten(recipe).items()] if start == 0 else [])
    for path in [eval_dir / "metrics.json", eval_dir / "per_query.json", eval_dir / "index_report.json", log_path,
                 model_dir / "train_summary.json"]:
        if path.is_file() and path.stat().st_size:
            client.log_artifact(run_id, str(path))
    for trec in sorted(eval_dir.glob("*.trec")):
        client.log_artifact(run_id, str(trec), artifact_path="runs")
    with tempfile.TemporaryDirectory() as tmp:
        resolved = Path(tmp) / "resolved_config.json"
        resolved.write_text(json.dumps({"recipe": recipe, "dataset": cfg["datasets"][job.dataset],
                                        "evaluation": cfg.get("evaluation"), "index": cfg.get("index"),
                                        "seed": job.seed}, indent=2, default=str))
        client.log_artifact(run_id, str(resolved))
    client.set_terminated(run_id)
    return final
