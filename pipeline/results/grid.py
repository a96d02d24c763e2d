"""The collected grid: every dataset x run x seed job's outputs read once (`collect`), shared by
the tables, the plots and MLflow."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.core import config as pcfg
from pipeline.core.common import PipelineError, read_json
from pipeline.core.layout import INDEX_REPORT, PER_QUERY, TRAIN_LOG, Layout, mteb_ndcg_at_10
from pipeline.evaluation.protocols import get_protocol, metric_label
from pipeline.evaluation.scorings import BASELINE
from pipeline.training.summary import read_summary


KEY_COLUMNS = ["dataset", "run", "seed", "scoring", "lambda"]


def protocol_of(cfg: dict, dataset: str):
    """The evaluation protocol class of a dataset (its headline metrics, per-query metric)."""
    return get_protocol(cfg["datasets"][dataset]["protocol"])


def dataset_protocols(frame: pd.DataFrame, cfg: dict | None) -> dict:
    """dataset -> protocol class; without a config (frames built by hand) every dataset is a qrels one."""
    if cfg is None:
        return {d: get_protocol("qrels") for d in frame["dataset"].unique()}
    return {d: protocol_of(cfg, d) for d in frame["dataset"].unique()}


def per_query_note(protocols: dict) -> str:
    return " / ".join(dict.fromkeys(metric_label(p.per_query_metric) for p in protocols.values()))


@dataclass
class JobOutputs:
    """What one dataset x run x seed job left behind, read once and shared by the tables,
    the plots and MLflow."""

    job: pcfg.Job
    recipe: dict
    eval_dir: Path
    model_dir: Path
    metrics: dict                 # metrics.json
    train: dict                   # train_summary.json
    per_query: dict = field(default_factory=dict)
    index_report: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    @property
    def train_log(self) -> Path:
        return self.model_dir / TRAIN_LOG


@dataclass
class GridResults:
    """The collected grid: the summary frame (one row per job x scoring result), the jobs, and
    the significance tests once computed."""

    frame: pd.DataFrame
    jobs: list[JobOutputs]
    index_rows: list[dict]
    significance: pd.DataFrame | None = None
    tables: dict[str, Path] = field(default_factory=dict)
    grid_digest: str = ""         # pcfg.grid_digest of the config the tables were made from

    @property
    def per_query(self) -> dict:
        return {(j.job.dataset, j.job.run, j.job.seed): j.per_query for j in self.jobs if j.per_query}


def _optional_json(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


def _mteb_ndcg(layout: Layout, job: pcfg.Job, tag: str) -> float | None:
    """MTEB's NDCG@10 of the job's exported model (evaluation.mteb), shown beside the pipeline's
    dot-product NDCG@10 so that a disagreement is visible; None when MTEB did not run. Read only
    when the config asks for MTEB, whose rule then keeps the file current with the model."""
    return mteb_ndcg_at_10(layout.mteb(job.dataset, job.run, tag))


def _measured(value: float | None) -> float:
    """A cost the run measured; NaN for a zero-shot run, which measures none."""
    return float("nan") if value is None else value


def collect(results: Path, cfg: dict) -> GridResults:
    """Read metrics.json / per_query.json / train_summary.json of every job of the grid."""
    layout = Layout.for_config(cfg, results)
    rows, jobs, index_rows, manifests = [], [], [], {}
    for job in pcfg.jobs(cfg):
        tag = pcfg.model_tag(cfg, job.run, job.seed)
        trained_on = pcfg.model_dataset(cfg, job.dataset)
        data_of = pcfg.data_dataset(cfg, job.dataset)
        if data_of not in manifests:
            manifests[data_of] = _optional_json(layout.manifest(data_of))
        out = JobOutputs(job, pcfg.recipe(cfg, job.run, job.dataset), layout.eval(job.dataset, job.run, job.seed),
                         layout.model(trained_on, job.run, tag),
                         read_json(layout.metrics(job.dataset, job.run, job.seed)),
                         read_summary(layout.train_summary(trained_on, job.run, tag)),
                         manifest=manifests[data_of])
        out.per_query = _optional_json(out.eval_dir / PER_QUERY)
        out.index_report = _optional_json(out.eval_dir / INDEX_REPORT)
        jobs.append(out)
        train, recipe = out.train, out.recipe
        mteb = _mteb_ndcg(layout, job, tag) if cfg.get("evaluation", {}).get("mteb") else None
        for row in out.metrics["rows"]:
            rows.append({
                "dataset": job.dataset, "run": job.run, "seed": job.seed, "scoring": row["scoring"],
                "lambda": row.get("lambda"),
                **{k: v for k, v in row.items() if k not in ("scoring", "lambda", "index")},
                "method": recipe["method"], "n_local": int(train["n_local"]), "n_total": int(train["n_total"]),
                "memory_size": int(train["memory_size"]), "fanoise": (recipe.get("fanoise") or {}).get("alpha", 0.0),
                "train_steps": train["steps"], "peak_mem_mb": _measured(train["peak_mem_mb"]),
                "sec_per_update": _measured(train["sec_per_update"]),
                **({"mteb_ndcg@10": mteb if row["scoring"] == BASELINE else float("nan")} if mteb is not None else {}),
            })
        for name, stats in (out.index_report.get("index_recall") or {}).items():
            index_rows.append({"dataset": job.dataset, "run": job.run, "seed": job.seed, "index": name, **stats})
    if not rows:
        raise PipelineError(f"{results}: no metrics found for the configured grid")
    frame = pd.DataFrame(rows)
    metrics = dict.fromkeys(m for d in cfg["datasets"] for m in protocol_of(cfg, d).table_metrics())
    front = KEY_COLUMNS + [m for m in metrics if m in frame.columns]
    return GridResults(frame[front + [c for c in frame.columns if c not in front]], jobs, index_rows)
