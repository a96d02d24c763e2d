"""MLflow logging of a finished grid, idempotent and from one process.

It consumes what `pipeline.aggregate` collected (nothing is re-read or re-derived here):

- one experiment per config `experiment`, whose description (`mlflow.note.content`) is the
  headline table;
- a parent run per dataset x run (run name: the run) and a child run per seed (run name:
  `<run> seed<s>`), both carrying the same metric keys, so one column reads across both: a
  parent's value is the mean over its seeds, and with two or more seeds `<key>.std` holds the
  sample std;
- metric keys `<metric>.<scoring>`, e.g. `ndcg_10.dot`, `recall_100.dn-0.25`,
  `ndcg_10.dnstar-0.25` (the scoring's slug, see pipeline.scorings), plus `n_total`,
  `memory_size`, `cost.peak_mem_mb`, `cost.sec_per_update`, `cost.train_seconds`, and on
  parents `p.<scoring>` (Holm-adjusted p against the reference run); the per-step training
  curves are `train.<column>` of train_log.jsonl at their step and wall-clock time;
- run start/end times are the training start and the evaluation end, so the UI's duration and
  wall-time axis are real;
- tags: `run`, `dataset`, `method`, `seed`, `git_commit`, `dataset_sha256` (one digest of the
  normalised dataset files), `pipeline.config_hash`, `pipeline.grid_digest` (also on the
  experiment: the digest in tables/grid.json of the grid last aggregated); artifacts: metrics, per-query scores,
  TREC runs, the train log and the resolved config on children; the headline and summary
  tables and the plots on parents.

A run is identified by the tags `pipeline.job` and `pipeline.config_hash`: re-logging the same
job with the same recipe is a no-op, and a changed recipe creates a new run.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from . import config as pcfg
from .common import git_commit, log
from .layout import INDEX_REPORT, METRICS, PER_QUERY, TRAIN_SUMMARY
from .scorings import from_row

# Headline metrics logged per scoring; every metric stays in the metrics.json artifact. A row
# carries those of its dataset's protocol: qrels NDCG/Recall, answers Top-k accuracy (acc_20.dot).
LOGGED_METRICS = ("ndcg@10", "recall@100", "acc@5", "acc@20", "acc@100")
NOT_CURVES = {"step", "epoch", "time"}


def tracking_uri(cfg: dict) -> str:
    """The sqlite store named in config (relative paths are relative to the working directory)."""
    store = Path(cfg["mlflow"]["store"]).resolve()
    store.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store}"


def metric_key(metric: str, scoring=None) -> str:
    """`ndcg@10` -> `ndcg_10`; with a scoring, `ndcg_10.<slug>` (MLflow allows no `@` or `*`)."""
    name = metric.replace("@", "_")
    return f"{name}.{scoring.slug}" if scoring is not None else name


def flatten(obj: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, type(None))) else str(value)
    return out


def dataset_digest(manifest: dict) -> str:
    """One sha256 over the normalised dataset's files (what every model of the grid saw)."""
    files = manifest.get("output_sha256") or manifest.get("input_sha256") or {}
    return pcfg.stable_hash(files, length=64) if files else ""


def _ms(seconds: float | None) -> int | None:
    return int(seconds * 1000) if isinstance(seconds, (int, float)) and np.isfinite(seconds) else None


def _existing(client, experiment_id: str, job: str, config_hash: str):
    runs = client.search_runs([experiment_id], filter_string=f"tags.`pipeline.job` = '{job}' and "
                                                            f"tags.`pipeline.config_hash` = '{config_hash}'")
    return runs[0] if runs else None


def _experiment(client, name: str, artifacts: Path) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifacts.resolve().as_uri())


def final_metrics(out) -> dict[str, float]:
    """A job's final metrics under the keys both child and parent runs use."""
    final: dict[str, float] = {}
    for row in out.metrics["rows"]:
        scoring = from_row(row["scoring"], row.get("lambda"))
        for metric in LOGGED_METRICS:
            if isinstance(row.get(metric), (int, float)):
                final[metric_key(metric, scoring)] = float(row[metric])
    train = out.train
    shape = {"n_total": train.get("n_total", train.get("examples_per_update", 0)),
             "memory_size": train.get("memory_size", 0), "cost.peak_mem_mb": train.get("peak_mem_mb"),
             "cost.sec_per_update": train.get("sec_per_update"), "cost.train_seconds": train.get("seconds"),
             "train.steps": train.get("steps")}
    final.update({k: float(v) for k, v in shape.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return {k: v for k, v in final.items() if np.isfinite(v)}


def _times(out) -> tuple[int | None, int | None]:
    """(start, end) of a job in ms: training start (evaluation start for a zero-shot run) to
    evaluation end."""
    report = out.index_report
    start = _ms(out.train.get("started_at")) if out.train.get("steps") else None
    return start or _ms(report.get("started_at")), _ms(report.get("finished_at"))


def log_experiment(grid, cfg: dict) -> dict[str, int]:
    """Log every job of an aggregated grid (pipeline.aggregate.GridResults); returns counts of
    created and skipped runs."""
    uri = tracking_uri(cfg)
    client = MlflowClient(tracking_uri=uri)
    name = cfg.get("experiment", "default")
    results_root = Path(grid.tables["summary.csv"]).parents[1]  # results/<experiment>: Layout.mlflow_artifacts
    experiment_id = _experiment(client, name, results_root / "mlartifacts")
    headline = grid.tables.get("headline.md")
    if headline is not None and Path(headline).is_file():
        client.set_experiment_tag(experiment_id, "mlflow.note.content", Path(headline).read_text(encoding="utf-8"))
    if grid.grid_digest:  # the grid the experiment's tables (tables/grid.json) were last made from
        client.set_experiment_tag(experiment_id, "pipeline.grid_digest", grid.grid_digest)
    commit = git_commit()
    counts = {"created": 0, "skipped": 0}
    by_run: dict[tuple[str, str], list] = {}
    for out in grid.jobs:
        by_run.setdefault((out.job.dataset, out.job.run), []).append(out)

    for (dataset, run), outs in by_run.items():
        recipe = outs[0].recipe
        run_cfg = {"dataset": cfg["datasets"][dataset], "recipe": recipe, "index": cfg.get("index"),
                   "evaluation": cfg.get("evaluation"), "seeds": cfg["seeds"]}
        config_hash = pcfg.stable_hash(run_cfg)
        parent_job = f"{dataset}/{run}"
        if _existing(client, experiment_id, parent_job, config_hash) is not None:
            counts["skipped"] += 1 + len(outs)
            continue
        tags = {"pipeline.config_hash": config_hash, "git_commit": commit,
                "dataset_sha256": dataset_digest(outs[0].manifest), "dataset": dataset, "run": run,
                "method": recipe["method"], "pipeline.grid_digest": grid.grid_digest}
        params = [Param(k, v[:6000]) for k, v in flatten(recipe).items()]
        times = [_times(out) for out in outs]
        starts = [s for s, _ in times if s] or [int(time.time() * 1000)]
        ends = [e for _, e in times if e]
        label = run if len(cfg["datasets"]) == 1 else f"{run} ({dataset})"
        parent = client.create_run(experiment_id, run_name=label, start_time=min(starts),
                                   tags={**tags, "pipeline.job": parent_job, "pipeline.level": "parent"})
        finals = []
        for out, (start, end) in zip(outs, times):
            finals.append(_log_child(client, experiment_id, parent.info.run_id, out, cfg, tags, params,
                                     label, start, end))
            counts["created"] += 1
        _log_parent(client, parent.info.run_id, grid, dataset, run, finals, params, max(ends) if ends else None)
        counts["created"] += 1
    log.info("MLflow (%s, experiment %r): %d runs created, %d already logged", uri, name,
             counts["created"], counts["skipped"])
    return counts


def _log_parent(client, run_id: str, grid, dataset: str, run: str, finals: list[dict], params, end: int | None):
    stamp = end or int(time.time() * 1000)
    metrics = []
    for key in dict.fromkeys(k for final in finals for k in final):
        values = [final[key] for final in finals if key in final]
        metrics.append(Metric(key, float(np.mean(values)), stamp, 0))
        if len(values) > 1:
            metrics.append(Metric(f"{key}.std", float(np.std(values, ddof=1)), stamp, 0))
    sig = grid.significance
    if sig is not None and not sig.empty:
        for _, row in sig[(sig.dataset == dataset) & (sig.run == run)].iterrows():
            slug = from_row(row["scoring"], row["lambda"]).slug
            metrics.append(Metric(f"p.{slug}", float(row["p_holm"]), stamp, 0))
            if np.isfinite(row["mdd"]):
                metrics.append(Metric(f"mdd.{slug}", float(row["mdd"]), stamp, 0))
    client.log_batch(run_id, metrics=metrics, params=params)
    for name in ("headline.md", "summary.md", "summary.csv", "diagnostics.md"):
        if name in grid.tables:
            client.log_artifact(run_id, str(grid.tables[name]), artifact_path="tables")
    for name, path in grid.tables.items():
        if str(path).endswith(".png"):
            client.log_artifact(run_id, str(path), artifact_path="plots")
    client.set_terminated(run_id, end_time=stamp)


def _log_child(client, experiment_id, parent_id, out, cfg, tags, params, label, start, end) -> dict:
    job = out.job
    child = client.create_run(experiment_id, run_name=f"{label} seed{job.seed}", start_time=start,
                              tags={**tags, "seed": str(job.seed), "pipeline.job": job.key,
                                    "pipeline.level": "seed", "mlflow.parentRunId": parent_id})
    run_id = child.info.run_id
    final = final_metrics(out)
    stamp = end or int(time.time() * 1000)
    metrics = [Metric(k, v, stamp, 0) for k, v in final.items()]
    if out.train_log.is_file():
        for line in out.train_log.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            at = _ms(row.get("time")) or stamp
            metrics += [Metric(f"train.{k}", float(v), at, int(row["step"])) for k, v in row.items()
                        if k not in NOT_CURVES and isinstance(v, (int, float)) and not isinstance(v, bool)
                        and np.isfinite(v)]
    for first in range(0, len(metrics), 900):  # MLflow caps a batch at 1000 entries
        client.log_batch(run_id, metrics=metrics[first:first + 900], params=params if first == 0 else [])
    files = [out.eval_dir / METRICS, out.eval_dir / PER_QUERY, out.eval_dir / INDEX_REPORT, out.train_log,
             out.model_dir / TRAIN_SUMMARY]
    for path in files:
        if path.is_file() and path.stat().st_size:
            client.log_artifact(run_id, str(path))
    for trec in sorted(out.eval_dir.glob("*.trec")):
        client.log_artifact(run_id, str(trec), artifact_path="runs")
    with tempfile.TemporaryDirectory() as tmp:
        resolved = Path(tmp) / "resolved_config.json"
        resolved.write_text(json.dumps({"recipe": out.recipe, "dataset": cfg["datasets"][job.dataset],
                                        "evaluation": cfg.get("evaluation"), "index": cfg.get("index"),
                                        "seed": job.seed}, indent=2, default=str))
        client.log_artifact(run_id, str(resolved))
    client.set_terminated(run_id, end_time=stamp)
    return final
