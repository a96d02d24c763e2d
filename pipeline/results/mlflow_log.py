"""MLflow logging of a finished grid, idempotent and from one process.

It consumes what `pipeline.results.aggregate` collected (nothing is re-read or re-derived here):

- one experiment per config `experiment`, tagged as model training (`mlflow.experimentKind`),
  whose description (`mlflow.note.content`) links the per-method view (a shared runs-table view,
  `mlflow.sharedViewState.per-method`) above the headline table;
- a parent run per dataset x run (run name: the run) and, for trained runs, a child run per seed
  (run name: `<run> seed<s>`), both carrying the same metric keys, so one column reads across
  both: a parent's value is the mean over its seeds, and with two or more seeds `<key>.std` holds
  the sample std; parents also carry the mean training curves over their seeds. A zero-shot
  model does not depend on the seed: it is one run, with each seed's files under `seed<s>/`;
- metrics at the precision the tables keep (`readable`); the evaluated dataset as an MLflow input
  (name, digest, source, schema); MLflow's source tags (`mlflow.source.name`,
  `mlflow.source.git.commit`), which fill the runs table's Source and Version columns;
- metric keys `<metric>.<scoring>`, e.g. `ndcg_10.dot`, `recall_100.dn-0.25`,
  `ndcg_10.dnstar-0.25` (the scoring's slug, see pipeline.evaluation.scorings), plus `n_total`,
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
job with the same recipe is a no-op, and a changed recipe creates a new run. MLflow stores
artifact locations as absolute URIs; `relocate_artifacts` re-points them at the `mlartifacts/`
folder beside the store, so a moved results folder keeps its files (`make ui` runs it).

The UI side (URLs, the per-method view, relocation) is pipeline.results.mlflow_ui.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from pipeline.core import config as pcfg
from pipeline.core.common import git_commit, log
from pipeline.results.mlflow_ui import ARTIFACTS_DIR, PER_METHOD_VIEW, per_method_view, relocate_artifacts, runs_path
from pipeline.core.layout import INDEX_REPORT, METRICS, PER_QUERY, TRAIN_SUMMARY
from pipeline.evaluation.scorings import from_row
from pipeline.results.plots import run_colours

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


# MLflow 3's UI opens an experiment in its GenAI view unless this tag says it holds model training.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def _experiment(client, name: str, artifacts: Path) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=artifacts.resolve().as_uri(), tags=EXPERIMENT_KIND)
    for key, value in EXPERIMENT_KIND.items():
        if experiment.tags.get(key) != value:  # e.g. made by hand or by another tool: tag it so the UI opens it as training
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def readable(key: str, value: float) -> float:
    """A metric at the precision a person reads and the tables keep: quality metrics, their std
    and MDD at 4 decimals (the markdown tables' precision), p-values at 3 significant digits,
    memory at 0.1 MB, seconds at 4 significant digits; counts stay whole. summary.csv keeps the
    full values."""
    if float(value).is_integer():
        return float(value)
    if key.startswith("p."):
        return float(f"{value:.3g}")
    if key.startswith(("cost.", "train.")):
        return round(value, 1) if key.endswith("peak_mem_mb") else float(f"{value:.4g}")
    return round(value, 4)


def final_metrics(out) -> dict[str, float]:
    """A job's final metrics under the keys both child and parent runs use (full precision;
    `readable` rounds them where they are logged)."""
    final: dict[str, float] = {}
    for row in out.metrics["rows"]:
        scoring = from_row(row["scoring"], row.get("lambda"))
        for metric in LOGGED_METRICS:
            if isinstance(row.get(metric), (int, float)):
                final[metric_key(metric, scoring)] = float(row[metric])
    train = out.train
    shape = {"n_total": train["n_total"], "memory_size": train["memory_size"], "cost.peak_mem_mb": train["peak_mem_mb"],
             "cost.sec_per_update": train["sec_per_update"], "cost.train_seconds": train["seconds"],
             "train.steps": train["steps"]}
    final.update({k: float(v) for k, v in shape.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return {k: v for k, v in final.items() if np.isfinite(v)}


def _times(out) -> tuple[int | None, int | None]:
    """(start, end) of a job in ms: training start (evaluation start for a zero-shot run) to
    evaluation end."""
    report = out.index_report
    start = _ms(out.train["started_at"]) if out.train["steps"] else None
    return start or _ms(report.get("started_at")), _ms(report.get("finished_at"))


def _dataset_input(out, dataset: str):
    """The evaluated dataset as an MLflow dataset input (name, digest, source, schema, profile),
    so the runs table's Dataset column names it."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    manifest = out.manifest
    counts = manifest.get("counts", {})
    digest = dataset_digest(manifest)[:36] or "unknown"
    # The source is where the data came from, relative to the checkout (it survives moving results/).
    source = json.dumps({"uri": str(manifest.get("path") or manifest.get("url") or dataset),
                         "source": manifest.get("source", "")})
    schema = json.dumps({"mlflow_colspec": [{"name": n, "type": "string"} for n in ("_id", "title", "text")]})
    profile = json.dumps({"num_rows": counts.get("docs"), "queries": counts.get("queries")})
    return DatasetInput(Dataset(name=dataset, digest=digest, source_type="local", source=source, schema=schema,
                                profile=profile), tags=[InputTag("mlflow.data.context", "evaluation")])


def _source_tags(commit: str) -> dict[str, str]:
    """MLflow's own source tags, which fill the runs table's Source and Version columns."""
    tags = {"mlflow.source.name": "Snakefile", "mlflow.source.type": "LOCAL"}
    if commit and commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return tags


def log_experiment(grid, cfg: dict) -> dict[str, int]:
    """Log every job of an aggregated grid (pipeline.results.aggregate.GridResults); returns counts of
    created and skipped runs."""
    uri = tracking_uri(cfg)
    client = MlflowClient(tracking_uri=uri)
    name = cfg.get("experiment", "default")
    store = Path(cfg["mlflow"]["store"])
    results_root = Path(grid.tables["summary.csv"]).parents[1]  # results/<experiment>: Layout.mlflow_artifacts
    experiment_id = _experiment(client, name, results_root / ARTIFACTS_DIR)  # creates the tables
    relocate_artifacts(store)
    _describe(client, experiment_id, grid, cfg)
    if grid.grid_digest:  # the grid the experiment's tables (tables/grid.json) were last made from
        client.set_experiment_tag(experiment_id, "pipeline.grid_digest", grid.grid_digest)
    commit = git_commit()
    # The UI draws each run in the colour its plots use (MLflow's own run-colour tag).
    colours = run_colours(list(cfg["runs"]))
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
            counts["skipped"] += 1 + (len(outs) if pcfg.is_trained(cfg, run) else 0)
            continue
        tags = {"pipeline.config_hash": config_hash, "git_commit": commit, **_source_tags(commit),
                "dataset_sha256": dataset_digest(outs[0].manifest), "dataset": dataset, "run": run,
                "method": recipe["method"], "pipeline.grid_digest": grid.grid_digest,
                "mlflow.runColor": colours[run]}
        params = [Param(k, v[:6000]) for k, v in flatten(recipe).items()]
        times = [_times(out) for out in outs]
        starts = [s for s, _ in times if s] or [int(time.time() * 1000)]
        ends = [e for _, e in times if e]
        label = run if len(cfg["datasets"]) == 1 else f"{run} ({dataset})"
        parent = client.create_run(experiment_id, run_name=label, start_time=min(starts),
                                   tags={**tags, "pipeline.job": parent_job, "pipeline.level": "parent"})
        client.log_inputs(parent.info.run_id, datasets=[_dataset_input(outs[0], dataset)])
        if pcfg.is_trained(cfg, run):
            finals = [_log_child(client, experiment_id, parent.info.run_id, out, cfg, tags, params, label, start, end)
                      for out, (start, end) in zip(outs, times)]
            counts["created"] += len(outs)
        else:
            # A zero-shot model does not depend on the seed: one run, each seed's files in seed<s>/.
            finals = [final_metrics(out) for out in outs]
            for out in outs:
                _log_job_files(client, parent.info.run_id, out, cfg, f"seed{out.job.seed}")
        _log_parent(client, parent.info.run_id, grid, dataset, run, finals, params, max(ends) if ends else None, outs)
        counts["created"] += 1
    log.info("MLflow (%s, experiment %r): %d runs created, %d already logged", uri, name,
             counts["created"], counts["skipped"])
    return counts


def _describe(client, experiment_id: str, grid, cfg: dict) -> None:
    """The experiment's description (shown above every tab): a link to the per-method view, then
    the headline table; and the per-method view itself as a shared view of the runs table."""
    keys = {k for out in grid.jobs for k in final_metrics(out)} | {"p.dot", "mdd.dot"}
    lambdas = (cfg.get("evaluation") or {}).get("lambdas") or [None]
    client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{PER_METHOD_VIEW}",
                              json.dumps(per_method_view(keys, lambdas[0])))
    link = (f"**[Per-method view]({runs_path(experiment_id, PER_METHOD_VIEW)})**: one row per run with the "
            "headline's metrics, p, MDD, memory and time ([all runs]"
            f"({runs_path(experiment_id)})).")
    headline = grid.tables.get("headline.md")
    table = Path(headline).read_text(encoding="utf-8") if headline is not None and Path(headline).is_file() else ""
    client.set_experiment_tag(experiment_id, "mlflow.note.content", link + "\n\n" + table)


def _read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _curve_metrics(rows: list[dict], stamp: int) -> list[Metric]:
    """train.<column> at each step of a train log (numbers only), at the time it was logged."""
    return [Metric(f"train.{k}", readable(f"train.{k}", float(v)), _ms(row.get("time")) or stamp, int(row["step"]))
            for row in rows for k, v in row.items()
            if k not in NOT_CURVES and isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)]


def mean_curves(logs: list[list[dict]]) -> list[dict]:
    """Per step, the mean over seeds of every numeric column (steps every seed logged), timed at
    the first seed's clock: what a parent run shows in the chart view without expanding it."""
    if not logs or not all(logs):
        return []
    by_step = [{int(r["step"]): r for r in rows} for rows in logs]
    out = []
    for step in sorted(set.intersection(*(set(b) for b in by_step))):
        rows = [b[step] for b in by_step]
        keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and all(isinstance(r.get(k), (int, float)) and np.isfinite(r[k]) for r in rows)]
        out.append({**{k: float(np.mean([r[k] for r in rows])) for k in keys}, "step": step,
                    "time": rows[0].get("time")})
    return out


def _log_batch(client, run_id: str, metrics: list[Metric], params=()) -> None:
    for first in range(0, max(1, len(metrics)), 900):  # MLflow caps a batch at 1000 entries
        client.log_batch(run_id, metrics=metrics[first:first + 900], params=list(params) if first == 0 else [])


def _log_parent(client, run_id: str, grid, dataset: str, run: str, finals: list[dict], params, end: int | None,
                outs: list):
    stamp = end or int(time.time() * 1000)
    metrics = []
    for key in dict.fromkeys(k for final in finals for k in final):
        values = [final[key] for final in finals if key in final]
        metrics.append(Metric(key, readable(key, float(np.mean(values))), stamp, 0))
        if len(values) > 1:
            metrics.append(Metric(f"{key}.std", readable(key, float(np.std(values, ddof=1))), stamp, 0))
    sig = grid.significance
    if sig is not None and not sig.empty:
        for _, row in sig[(sig.dataset == dataset) & (sig.run == run)].iterrows():
            slug = from_row(row["scoring"], row["lambda"]).slug
            metrics.append(Metric(f"p.{slug}", readable("p.", float(row["p_holm"])), stamp, 0))
            if np.isfinite(row["mdd"]):
                metrics.append(Metric(f"mdd.{slug}", readable("mdd.", float(row["mdd"])), stamp, 0))
    metrics += _curve_metrics(mean_curves([_read_log(out.train_log) for out in outs]), stamp)
    _log_batch(client, run_id, metrics, params)
    for name in ("headline.md", "summary.md", "summary.csv", "diagnostics.md"):
        if name in grid.tables:
            client.log_artifact(run_id, str(grid.tables[name]), artifact_path="tables")
    for name, path in grid.tables.items():
        if str(path).endswith(".png"):
            client.log_artifact(run_id, str(path), artifact_path="plots")
    client.set_terminated(run_id, end_time=stamp)


def _log_job_files(client, run_id: str, out, cfg: dict, prefix: str | None = None) -> None:
    """One job's files: metrics, per-query scores, index report, train log and summary, TREC
    runs and the resolved config (under `prefix/` when one run holds several jobs)."""
    job = out.job
    files = [out.eval_dir / METRICS, out.eval_dir / PER_QUERY, out.eval_dir / INDEX_REPORT, out.train_log,
             out.model_dir / TRAIN_SUMMARY]
    for path in files:
        if path.is_file() and path.stat().st_size:
            client.log_artifact(run_id, str(path), artifact_path=prefix)
    for trec in sorted(out.eval_dir.glob("*.trec")):
        client.log_artifact(run_id, str(trec), artifact_path=f"{prefix}/runs" if prefix else "runs")
    with tempfile.TemporaryDirectory() as tmp:
        resolved = Path(tmp) / "resolved_config.json"
        resolved.write_text(json.dumps({"recipe": out.recipe, "dataset": cfg["datasets"][job.dataset],
                                        "evaluation": cfg.get("evaluation"), "index": cfg.get("index"),
                                        "seed": job.seed}, indent=2, default=str))
        client.log_artifact(run_id, str(resolved), artifact_path=prefix)


def _log_child(client, experiment_id, parent_id, out, cfg, tags, params, label, start, end) -> dict:
    job = out.job
    child = client.create_run(experiment_id, run_name=f"{label} seed{job.seed}", start_time=start,
                              tags={**tags, "seed": str(job.seed), "pipeline.job": job.key,
                                    "pipeline.level": "seed", "mlflow.parentRunId": parent_id})
    run_id = child.info.run_id
    final = final_metrics(out)
    stamp = end or int(time.time() * 1000)
    metrics = [Metric(k, readable(k, v), stamp, 0) for k, v in final.items()]
    metrics += _curve_metrics(_read_log(out.train_log), stamp)
    _log_batch(client, run_id, metrics, params)
    client.log_inputs(run_id, datasets=[_dataset_input(out, job.dataset)])
    _log_job_files(client, run_id, out, cfg)
    client.set_terminated(run_id, end_time=stamp)
    return final
