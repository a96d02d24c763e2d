"""Aggregate every job's outputs into result tables (and plots), then log them to MLflow.

Tables in <results>/<experiment>/tables/:
  summary.csv   one row per dataset x run x seed x scoring (x lambda), with training cost (and, with
                evaluation.mteb, `mteb_ndcg@10`: MTEB's NDCG@10 of the same model on its dot rows)
  summary.md    mean +- std across seeds, significance against the reference run
  headline.md   one line per run: NDCG@10 dot / DN / DN*, Recall@100, p vs reference, cost
  dn.csv/md     normalisations (DN, DN*, NNN, QB-Norm, ...) against the plain dot product: one row per
                run x scoring x parameter, delta, paired p and MDD (the name predates NNN and QB-Norm)
  index.csv/md  approximate indexes: recall@100 against flat, build/search seconds, size
  diagnostics.csv/md  per run: false negatives found and masked, bank age, gradient-norm ratio, loss over chance
  per_query.csv, grad_norm.csv  what the plots are drawn from (pipeline.results.plot_inputs)

MLflow is written from this single process only, so parallel jobs never race on the sqlite
store.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from pipeline.core import config as pcfg
from pipeline.core.common import PipelineError, atomic_dir, atomic_write_json, atomic_write_text, log, run_main
from pipeline.core.layout import GRID, Layout
from pipeline.evaluation.protocols import metric_label
from pipeline.results.diagnostics import diagnostics_markdown, diagnostics_table
from pipeline.results.grid import GridResults, JobOutputs, collect, protocol_of
from pipeline.results.normalisation_table import dn_markdown, dn_table
from pipeline.results import plot_inputs
from pipeline.results.plot_inputs import PlotInputs, read_ratio
from pipeline.results.plots import PlotData, draw_all, run_colours
from pipeline.results.tables import headline_markdown, summary_markdown, write_markdown
from pipeline.results.verdicts import attach_significance, significance


def write_tables(results: Path, cfg: dict) -> GridResults:
    grid = collect(results, cfg)
    frame, per_query = grid.frame, grid.per_query
    evaluation = cfg.get("evaluation", {})
    reference = evaluation.get("reference_run")
    sig = significance(frame, per_query, reference, evaluation.get("significance_permutations", 10000),
                       evaluation.get("compare"))
    frame = attach_significance(frame, sig)
    grid.frame, grid.significance = frame, sig
    layout = Layout.for_config(cfg, results)
    grid.grid_digest = pcfg.grid_digest(cfg)
    # Tables and plots are built in temporary folders and swapped in whole: a failure (a full disk)
    # leaves the previous ones, and the workflow's grid stamp among them, exactly as they were; a
    # finished rewrite drops that stamp, which only the workflow's aggregate job writes again.
    with atomic_dir(layout.tables) as tables, atomic_dir(layout.plots) as plots:
        paths = {name: layout.tables / path.relative_to(tables)
                 for name, path in _write_table_files(tables, grid, cfg).items()}
        paths.update({path.name: layout.tables / path.name for path in write_plot_inputs(tables, cfg, grid)})
        # Drawn from the inputs as read back, so a reference redrawn from its copies gets these plots.
        paths.update({name: layout.plots / path.relative_to(plots)
                      for name, path in draw_plots(cfg, frame, plot_inputs.read(tables), plots).items()})
    grid.tables = paths
    return grid


def _write_table_files(tables: Path, grid: GridResults, cfg: dict) -> dict[str, Path]:
    frame, sig, per_query = grid.frame, grid.significance, grid.per_query
    evaluation = cfg.get("evaluation", {})
    reference = evaluation.get("reference_run")
    paths = {"grid.json": tables / GRID, "summary.csv": tables / "summary.csv", "summary.md": tables / "summary.md"}
    atomic_write_json(paths["grid.json"], {"digest": grid.grid_digest, "experiment": cfg.get("experiment"),
                                           "grid": pcfg.grid_spec(cfg)})
    atomic_write_text(paths["summary.csv"], frame.to_csv(index=False))
    write_markdown(paths["summary.md"], f"# Results: {cfg.get('experiment', '')}\n\n" +
                    summary_markdown(frame, sig, reference, cfg))
    lambdas = evaluation.get("lambdas") or [None]
    paths["headline.md"] = tables / "headline.md"
    write_markdown(paths["headline.md"], f"# Results: {cfg.get('experiment', '')}, one line per run\n\n" +
                    headline_markdown(frame, sig, reference, lambdas[0], cfg))
    # dn.md and index.md always exist (the report lists them), saying so when they are empty.
    dn = dn_table(frame, per_query, cfg)
    dn_metrics = " / ".join(dict.fromkeys(metric_label(protocol_of(cfg, d).headline[0])
                                          for d in frame["dataset"].unique()))
    paths["dn.md"] = tables / "dn.md"
    if not dn.empty:
        paths["dn.csv"] = tables / "dn.csv"
        atomic_write_text(paths["dn.csv"], dn.to_csv(index=False))
    write_markdown(paths["dn.md"], f"# Normalisations against the plain dot product ({dn_metrics})\n\n" +
                    dn_markdown(dn) + "\n")
    idx = pd.DataFrame(grid.index_rows)
    paths["index.md"] = tables / "index.md"
    if not idx.empty:
        paths["index.csv"] = tables / "index.csv"
        atomic_write_text(paths["index.csv"], idx.to_csv(index=False))
    write_markdown(paths["index.md"], "# Indexes\n\n" + (idx.to_markdown(index=False, floatfmt=".4g")
                                                           if not idx.empty else "No index report.") + "\n")
    diag = diagnostics_table((out.job.dataset, out.job.run, out.train_log) for out in _own_models(cfg, grid.jobs))
    paths["diagnostics.md"] = tables / "diagnostics.md"
    if not diag.empty:
        paths["diagnostics.csv"] = tables / "diagnostics.csv"
        atomic_write_text(paths["diagnostics.csv"], diag.to_csv(index=False))
    write_markdown(paths["diagnostics.md"], "# Training diagnostics\n\n" + diagnostics_markdown(diag))
    return paths


def _own_models(cfg: dict, jobs: list[JobOutputs]) -> list[JobOutputs]:
    """Trained jobs, each model once: a `models_of` entry's jobs share another entry's models."""
    return [out for out in jobs if pcfg.is_trained(cfg, out.job.run) and
            pcfg.model_dataset(cfg, out.job.dataset) == out.job.dataset]


def write_plot_inputs(tables: Path, cfg: dict, grid: GridResults) -> list[Path]:
    """per_query.csv and grad_norm.csv (pipeline.results.plot_inputs) for the untied runs' curves."""
    curves, examples_per_update = {}, {}
    for out in _own_models(cfg, grid.jobs):
        job = out.job
        if not out.recipe["encoder"].get("tied", True) and out.train_log.is_file():
            curves[(job.dataset, job.run, job.seed)] = read_ratio(out.train_log)
            examples_per_update[(job.dataset, job.run)] = int(out.train["n_total"])
    return plot_inputs.write(tables, grid.per_query, curves, examples_per_update)


def draw_plots(cfg: dict, frame: pd.DataFrame, inputs: PlotInputs, folder: Path) -> dict[str, Path]:
    """A grid's plots from its summary frame and plot inputs: the aggregate step's, or a published
    reference's (python -m pipeline.results.reference replot)."""
    # The metric plots show NDCG@10: they get the qrels-evaluated datasets' rows (answer-evaluated
    # datasets are in the tables and MLflow); the gradient-norm curves get every trained run.
    frame = frame[frame["dataset"].map(lambda d: "ndcg@10" in protocol_of(cfg, d).metric_keys)]
    # Intervals come from per-query NDCG@10: a dataset whose per-query metric is another one
    # (MS MARCO's NDCG@20) gets its points without an interval rather than a wrong one.
    per_query = {key: pq for key, pq in inputs.per_query.items()
                 if protocol_of(cfg, key[0]).per_query_metric == "ndcg@10"}
    data = PlotData(frame, per_query, cfg.get("evaluation", {}).get("reference_run"), run_colours(list(cfg["runs"])))
    return draw_all(data, inputs.curves, folder, inputs.examples_per_update)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.results.aggregate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results", help="results folder (default: results)")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", help="experiment config YAML")
    group.add_argument("--config-json", help="validated config as JSON")
    group.add_argument("--config-file", help="validated config as a JSON file (what the Snakemake rule passes)")
    parser.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging")
    parser.add_argument("--grid-stamp", help=argparse.SUPPRESS)  # the workflow's final target (rules/aggregate.smk)
    args = parser.parse_args(argv)
    if args.config_file:
        try:
            text = Path(args.config_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise PipelineError(f"{args.config_file}: cannot read the config file ({exc.strerror})") from exc
        cfg = pcfg.validate(json.loads(text))
    else:
        cfg = pcfg.load(args.config) if args.config else pcfg.validate(json.loads(args.config_json))
    results = Path(args.results)
    grid = write_tables(results, cfg)
    for name, path in grid.tables.items():
        log.info("wrote %s", path)
    if cfg["mlflow"]["enabled"] and not args.no_mlflow:
        from pipeline.results.mlflow_log import log_experiment  # why: loads mlflow, scipy; kept out of this module's import

        log_experiment(grid, cfg)
    if args.grid_stamp:
        atomic_write_json(args.grid_stamp, {"digest": grid.grid_digest, "tables": sorted(map(str, grid.tables.values()))})
    print(f"Summary table: {grid.tables['summary.md']} (CSV: {grid.tables['summary.csv']})")


if __name__ == "__main__":
    run_main(main)
