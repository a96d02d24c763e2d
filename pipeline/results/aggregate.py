"""Aggregate every job's outputs into result tables (and plots), then log them to MLflow.

Tables in <results>/<experiment>/tables/:
  summary.csv   one row per dataset x run x seed x scoring (x lambda), with training cost (and, with
                evaluation.mteb, `mteb_ndcg@10`: MTEB's NDCG@10 of the same model on its dot rows)
  summary.md    mean +- std across seeds, significance against the reference run
  headline.md   one line per run: NDCG@10 dot / DN / DN*, Recall@100, p vs reference, cost
  dn.csv/md     normalisations (DN, DN*, NNN, QB-Norm, ...) against the plain dot product: one row per
                run x scoring x parameter, delta, paired p and MDD (the name predates NNN and QB-Norm)
  index.csv/md  approximate indexes: recall@100 against flat, build/search seconds, size
  diagnostics.csv/md  per run: false negatives found and masked, bank age, gradient-norm ratio

MLflow is written from this single process only, so parallel jobs never race on the sqlite
store.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import config as pcfg
from pipeline.core.common import PipelineError, atomic_dir, atomic_write_json, atomic_write_text, log, read_json, run_main
from pipeline.core.layout import GRID, INDEX_REPORT, METRICS, PER_QUERY, TRAIN_LOG, Layout
from pipeline.evaluation.protocols import metric_label, get_protocol
from pipeline.evaluation.scorings import available_scorings, from_row, scoring_class
from pipeline.evaluation.significance import compare_pairs, marker, minimal_detectable_difference, paired_randomization
from pipeline.results.diagnostics import diagnostics_markdown, diagnostics_table
from pipeline.results.plots import PlotData, draw_all, run_colours

KEY_COLUMNS = ["dataset", "run", "seed", "scoring", "lambda"]
HEADLINE = ["ndcg@10", "recall@100", "mrr@10"]  # the qrels protocol's; each dataset's come from its protocol


def protocol_of(cfg: dict, dataset: str):
    """The evaluation protocol class of a dataset (its headline metrics, per-query metric)."""
    return get_protocol(cfg["datasets"][dataset]["protocol"])


def _protocols(frame: pd.DataFrame, cfg: dict | None) -> dict:
    """dataset -> protocol class; without a config every dataset is a qrels one (today's tables)."""
    if cfg is None:
        return {d: get_protocol("qrels") for d in frame["dataset"].unique()}
    return {d: protocol_of(cfg, d) for d in frame["dataset"].unique()}


def _per_query_note(protocols: dict) -> str:
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


def collect(results: Path, cfg: dict) -> GridResults:
    """Read metrics.json / per_query.json / train_summary.json of every job of the grid."""
    layout = Layout.for_config(cfg, results)
    rows, jobs, index_rows, manifests = [], [], [], {}
    for job in pcfg.jobs(cfg):
        tag = pcfg.model_tag(cfg, job.run, job.seed)
        trained_on = pcfg.model_dataset(cfg, job.dataset)
        if trained_on not in manifests:
            manifests[trained_on] = _optional_json(layout.manifest(trained_on))
        out = JobOutputs(job, pcfg.recipe(cfg, job.run, job.dataset), layout.eval(job.dataset, job.run, job.seed),
                         layout.model(trained_on, job.run, tag),
                         read_json(layout.metrics(job.dataset, job.run, job.seed)),
                         read_json(layout.train_summary(trained_on, job.run, tag)),
                         manifest=manifests[trained_on])
        out.per_query = _optional_json(out.eval_dir / PER_QUERY)
        out.index_report = _optional_json(out.eval_dir / INDEX_REPORT)
        jobs.append(out)
        train, recipe = out.train, out.recipe
        # The training shape comes from what the run recorded; a zero-shot run has none.
        n_total = int(train.get("n_total", train.get("examples_per_update", 0)) or 0)
        mteb = _mteb_ndcg(layout, job, tag) if cfg.get("evaluation", {}).get("mteb") else None
        for row in out.metrics["rows"]:
            rows.append({
                "dataset": job.dataset, "run": job.run, "seed": job.seed, "scoring": row["scoring"],
                "lambda": row.get("lambda"),
                **{k: v for k, v in row.items() if k not in ("scoring", "lambda", "index")},
                "method": recipe["method"], "n_local": int(train.get("n_local", 0) or 0),
                "n_total": n_total, "memory_size": int(train.get("memory_size", 0) or 0),
                "fanoise": (recipe.get("fanoise") or {}).get("alpha", 0.0),
                "train_steps": train.get("steps", 0), "peak_mem_mb": train.get("peak_mem_mb", float("nan")),
                "sec_per_update": train.get("sec_per_update", float("nan")),
                **({"mteb_ndcg@10": mteb if row["scoring"] == "dot" else float("nan")} if mteb is not None else {}),
            })
        for name, stats in (out.index_report.get("index_recall") or {}).items():
            index_rows.append({"dataset": job.dataset, "run": job.run, "seed": job.seed, "index": name, **stats})
    if not rows:
        raise PipelineError(f"{results}: no metrics found for the configured grid")
    frame = pd.DataFrame(rows)
    metrics = dict.fromkeys(m for d in cfg["datasets"] for m in protocol_of(cfg, d).table_metrics())
    front = KEY_COLUMNS + [m for m in metrics if m in frame.columns]
    return GridResults(frame[front + [c for c in frame.columns if c not in front]], jobs, index_rows)


def _mean_over_seeds(per_query: dict, dataset: str, run: str, key: str) -> dict[str, float]:
    """Per-query values (the protocol's per-query metric, e.g. NDCG@10) averaged over the run's seeds (queries present in every seed)."""
    seeds = [pq[key] for (d, r, _), pq in per_query.items() if d == dataset and r == run and key in pq]
    if not seeds:
        return {}
    common = set.intersection(*(set(s) for s in seeds))
    return {q: float(np.mean([s[q] for s in seeds])) for q in common}


def significance(frame: pd.DataFrame, per_query: dict, reference: str | None, permutations: int,
                 compare: dict[str, str] | None = None) -> pd.DataFrame:
    """Paired randomization test of each run against its reference (`compare[run]`, else the
    reference run), per dataset and scoring, Holm-corrected within a dataset."""
    compare = compare or {}
    out = []
    for dataset, group in frame.groupby("dataset"):
        pairs = {}
        for (run, scoring, lam), _ in group.groupby(["run", "scoring", "lambda"], dropna=False):
            ref = compare.get(run, reference)
            if ref is None or run == ref:
                continue
            key = from_row(scoring, lam).name
            a = _mean_over_seeds(per_query, dataset, run, key)
            b = _mean_over_seeds(per_query, dataset, ref, key)
            if len(set(a) & set(b)) >= 2:
                pairs[(run, scoring, lam)] = (a, b)
        for (run, scoring, lam), test in compare_pairs(pairs, n=permutations, seed=0).items():
            out.append({"dataset": dataset, "run": run, "scoring": scoring, "lambda": lam,
                        "reference": compare.get(run, reference), "mean_diff": test["mean_diff"],
                        "p_value": test["p_randomization"], "p_ttest": test["p_ttest"], "p_holm": test["p_holm"],
                        "mdd": test["mdd"]})
    return pd.DataFrame(out, columns=["dataset", "run", "scoring", "lambda", "reference", "mean_diff", "p_value",
                                      "p_ttest", "p_holm", "mdd"])


def attach_significance(frame: pd.DataFrame, sig: pd.DataFrame) -> pd.DataFrame:
    """The summary frame with each row's test columns (reference, p, MDD) joined on."""
    if sig.empty:
        return frame
    # A grid without lambda scorings has a column of None; NaN on both sides merges alike.
    return frame.assign(**{"lambda": frame["lambda"].astype(float)}).merge(
        sig.assign(**{"lambda": sig["lambda"].astype(float)}), on=["dataset", "run", "scoring", "lambda"], how="left")


def _fmt(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.4f} ± {std:.4f}" if std and not math.isnan(std) else f"{mean:.4f}"


def _p_cell(sig: pd.DataFrame, reference: str | None, dataset: str, run: str, scoring: str, lam) -> str:
    """Holm-adjusted p against the reference run and the minimal detectable difference for one
    table row, as two cells ("ref | –" on the reference itself)."""
    hit = sig[(sig.dataset == dataset) & (sig.run == run) & (sig.scoring == scoring) &
              ((sig["lambda"] == lam) | (sig["lambda"].isna() & pd.isna(lam)))] if not sig.empty else sig
    if not len(hit):
        return "ref | –" if run == reference else "– | –"
    mdd, other = hit.mdd.iloc[0], hit.reference.iloc[0]
    # A run tested against its own reference (evaluation.compare) names it in the cell.
    against = f" vs {other}" if other != reference else ""
    return f"{hit.p_holm.iloc[0]:.3g}{marker(hit.p_holm.iloc[0])}{against} | " + ("–" if pd.isna(mdd) else f"{mdd:.4f}")


MDD_NOTE = ("MDD: the smallest true difference in that per-query metric the paired test detects with 80 % power at "
            "alpha 0.05, given the observed per-query variance, the number of queries and the seeds averaged: a "
            "non-significant difference is smaller than MDD, not zero.")


NORMALISATION_NOTE = ("One row per run, scoring and parameter (DN's λ, NNN's k and α, QB-Norm's β), against the plain "
                      "dot product of the same model. delta: difference of the mean metric; p: paired randomization "
                      "test on the per-query metric (mean over seeds), not corrected for the number of rows. " +
                      MDD_NOTE)
ALPHA = 0.05


def classify(p_holm: float, mean_diff: float, mdd: float, alpha: float = ALPHA) -> str:
    """What one test against the reference can say: "significant" (Holm-adjusted p < alpha),
    "below MDD" (not significant, and the observed |delta| is under the minimal detectable
    difference: any true difference is probably smaller than MDD), or "underpowered" (not
    significant although |delta| >= MDD, or MDD unknown: the data cannot tell)."""
    if p_holm is not None and not pd.isna(p_holm) and p_holm < alpha:
        return "significant"
    if mdd is not None and not pd.isna(mdd) and abs(mean_diff) < mdd:
        return "below MDD"
    return "underpowered"


def _signed(value: float) -> str:
    return f"{value:+.4f}".replace("-", "−")


def verdict_line(sig: pd.DataFrame, dataset: str, reference: str | None, metric: str,
                 label=lambda row: row["run"]) -> str:
    """One sentence under a table, generated from its tests: which rows differ from their
    reference after Holm, which do not and are below their MDD, and which are underpowered.
    `sig` holds the rows to judge (significance() columns); `label` names a row."""
    rows = sig[sig.dataset == dataset] if not sig.empty else sig
    if not len(rows):
        return (f"Verdict: no test ({'no reference run' if reference is None else 'nothing to compare with ' + reference}"
                f" in {dataset}).")
    groups: dict[str, list[str]] = {"significant": [], "below MDD": [], "underpowered": []}
    for _, row in rows.iterrows():
        kind = classify(row["p_holm"], row["mean_diff"], row["mdd"])
        mdd = "unknown" if pd.isna(row["mdd"]) else f"{row['mdd']:.4f}"
        groups[kind].append(f"{label(row)} (Δ {_signed(row['mean_diff'])}, MDD {mdd}"
                            + (f", p {row['p_holm']:.3g})" if kind == "significant" else ")"))
    against = " / ".join(dict.fromkeys(str(r) for r in rows["reference"]))
    head = (f"no row differs significantly from {against}" if not groups["significant"] else
            f"{len(groups['significant'])} of {len(rows)} differ significantly from {against}")
    parts = [f"significant after Holm: {', '.join(groups['significant']) or 'none'}",
             f"not significant, |Δ| < MDD: {', '.join(groups['below MDD']) or 'none'}",
             f"underpowered (|Δ| ≥ MDD or MDD unknown): {', '.join(groups['underpowered']) or 'none'}"]
    return f"Verdict ({metric}, α = {ALPHA:g}): {head}. " + "; ".join(parts) + "."


def _dot_tests(sig: pd.DataFrame) -> pd.DataFrame:
    """The headline's tests: dot product only."""
    return sig[(sig.scoring == "dot") & sig["lambda"].isna()] if not sig.empty else sig


def _scoring_label(row) -> str:
    lam = row["lambda"]
    return f"{row['run']} {row['scoring']}" + ("" if pd.isna(lam) else f" λ={lam:g}")


def _updates(g: pd.DataFrame) -> str:
    """Optimizer updates of a run (from train_summary.json), '–' for a zero-shot model."""
    steps = pd.to_numeric(g.train_steps, errors="coerce").max() if "train_steps" in g else float("nan")
    return "–" if pd.isna(steps) or steps <= 0 else f"{int(steps)}"


def _cost_cells(g: pd.DataFrame) -> str:
    return f"{g.peak_mem_mb.mean():.0f} | {g.sec_per_update.mean():.2f}" if g.n_total.max() > 0 else "– | –"


def _scoring_rank(column: str) -> tuple:
    """Table order of a `scoring` value: the family's order, then its setting (k, beta) numerically."""
    setting = column.partition("[")[2].rstrip("]")
    value = setting.partition("=")[2]
    number = float(value) if value.replace(".", "", 1).isdigit() else float("inf")
    return (scoring_class(column).order, available_scorings().index(scoring_class(column).family), number, setting)


def _lambda_text(scoring: str, lam) -> str:
    """The `lambda` cell: DN's λ as a number, another scoring's swept parameter named (α=0.5)."""
    parameter = scoring_class(scoring).parameter
    return f"{lam:g}" if parameter == "λ" else f"{parameter}={lam:g}"


def summary_markdown(frame: pd.DataFrame, sig: pd.DataFrame, reference: str | None, cfg: dict | None = None) -> str:
    protocols = _protocols(frame, cfg)
    # Rows follow the config's run order, then dot, dn, dn*, then lambda.
    frame = frame.assign(_run=pd.Categorical(frame.run, categories=list(dict.fromkeys(frame.run))),
                         _scoring=frame.scoring.map(_scoring_rank), _lam=frame["lambda"].fillna(-1.0))
    frame = frame.sort_values(["_run", "_scoring", "_lam"], kind="stable")
    groups = frame.groupby(["dataset", "run", "scoring", "lambda"], dropna=False, sort=False)
    lines = []
    for dataset in frame["dataset"].unique():
        shown = protocols[dataset].table_metrics()
        lines += [f"## {dataset}", "",
                  "| run | scoring | λ | seeds | updates | " + "".join(f"{metric_label(m)} | " for m in shown) +
                  "p vs " + (reference or "–") + " (Holm) | MDD | peak MB | s/update |",
                  "|---|---|---|---|---|" + "---|" * len(shown) + "---|---|---|---|"]
        for (ds, run, scoring, lam), g in groups:
            if ds != dataset:
                continue
            cells = [_fmt(g[m].mean(), g[m].std(ddof=1) if len(g) > 1 else 0.0) for m in shown]
            p = _p_cell(sig, reference, ds, run, scoring, lam)
            lam_txt = "–" if pd.isna(lam) else _lambda_text(scoring, lam)
            lines.append(f"| {run} | {scoring} | {lam_txt} | {len(g)} | {_updates(g)} | {' | '.join(cells)} | {p} | "
                         f"{_cost_cells(g)} |")
        lines += ["", verdict_line(sig, dataset, reference, f"per-query {metric_label(protocols[dataset].per_query_metric)}"
                                   " against the reference run with the same scoring", _scoring_label), ""]
    lines.append("Mean ± sample std over seeds (dn* rows: each seed is itself a mean over its repeats). "
                 f"p: paired randomization test on per-query {_per_query_note(protocols)} against the reference "
                 "run with the same "
                 "scoring, Holm-corrected per dataset; † marks p < 0.05. " + MDD_NOTE)
    return "\n".join(lines) + "\n"


def headline_markdown(frame: pd.DataFrame, sig: pd.DataFrame, reference: str | None, lam: float | None,
                      cfg: dict | None = None) -> str:
    """One line per run: the protocol's main metric (NDCG@10; Top-20 for answers) under each
    scoring (lambda scorings at the headline lambda), its second metric (Recall@100; Top-100)
    under the dot product, the dot-product p-value against the reference run, and the training
    cost (the headline table)."""
    protocols = _protocols(frame, cfg)

    evaluation = (cfg or {}).get("evaluation")

    def shown(scoring: str):
        return scoring_class(scoring).headline_lambda(evaluation, lam)

    def cell(g: pd.DataFrame, scoring: str, metric: str) -> str:
        uses_lambda = scoring_class(scoring).uses_lambda
        rows = g[(g.scoring == scoring) & ((g["lambda"] == shown(scoring)) if uses_lambda else g["lambda"].isna())]
        return _fmt(rows[metric].mean(), rows[metric].std(ddof=1)) if len(rows) else "–"

    def header(scoring: str) -> str:
        cls = scoring_class(scoring)
        setting = scoring.partition("[")[2].rstrip("]")
        swept = f" {cls.parameter}={'–' if shown(scoring) is None else f'{shown(scoring):g}'}" if cls.uses_lambda else ""
        return f"{cls.label}" + (f" {setting}" if setting else "") + swept

    others = sorted((s for s in set(frame.scoring) if s != "dot"), key=_scoring_rank)
    lines = []
    for dataset, by_dataset in frame.groupby("dataset", sort=False):
        main, second = protocols[dataset].headline[:2]
        headers = [f"{metric_label(main)} {header(s)}" for s in others]
        lines += [f"## {dataset}", "",
                  f"| run | seeds | updates | N_total | memory | {metric_label(main)} dot | p vs {reference or '–'} | "
                  "MDD | " + "".join(f"{h} | " for h in headers) + f"{metric_label(second)} dot | peak MB | s/update |",
                  "|---|---|---|---|---|---|---|---|" + "---|" * len(headers) + "---|---|---|"]
        for run, g in by_dataset.groupby("run", sort=False):
            p = _p_cell(sig, reference, dataset, run, "dot", None)
            n_total, memory = int(g.n_total.max()), int(g.memory_size.max())
            seeds = g[g.scoring == "dot"].seed.nunique()
            lines.append(f"| {run} | {seeds} | {_updates(g)} | {n_total or '–'} | {memory or '–'} | "
                         f"{cell(g, 'dot', main)} | {p} | " +
                         "".join(f"{cell(g, s, main)} | " for s in others) +
                         f"{cell(g, 'dot', second)} | {_cost_cells(g)} |")
        lines += ["", verdict_line(_dot_tests(sig), dataset, reference,
                                   f"per-query {metric_label(protocols[dataset].per_query_metric)}, dot product"), ""]
    # The legend goes first so that the file (and `make run`'s print of it) ends with the verdict.
    legend = (f"Mean ± sample std over seeds; updates: optimizer updates per seed. p: paired randomization test on "
              f"per-query {_per_query_note(protocols)} (dot product, mean over seeds) against the reference run, "
              "Holm-corrected; † marks p < 0.05. memory: bank size in samples. peak MB: peak process memory during "
              "training (RSS on CPU, allocated on CUDA). " + MDD_NOTE)
    return legend + "\n\n" + "\n".join(lines).rstrip("\n") + "\n"


def dn_table(frame: pd.DataFrame, per_query: dict, cfg: dict | None = None) -> pd.DataFrame:
    """The normalisation table: every scoring other than the plain dot product (DN, DN*, NNN,
    QB-Norm, ...), one row per run, scoring and parameter, against the dot product of the same
    model: delta of the protocol's main metric (NDCG@10; Top-20 for answers), the paired
    randomization p on its per-query metric and the minimal detectable difference."""
    protocols = _protocols(frame, cfg)
    out = []
    for (dataset, run), g in frame.groupby(["dataset", "run"], sort=False):
        main = protocols[dataset].headline[0]
        dot = g[g.scoring == "dot"][main].mean()
        shifted = g[g.scoring != "dot"]
        keys = sorted(shifted.groupby(["scoring", "lambda"], dropna=False).groups,
                      key=lambda key: (_scoring_rank(key[0]), -1.0 if pd.isna(key[1]) else key[1]))
        for scoring, lam in keys:
            h = shifted[(shifted.scoring == scoring) &
                        ((shifted["lambda"] == lam) if not pd.isna(lam) else shifted["lambda"].isna())]
            a = _mean_over_seeds(per_query, dataset, run, from_row(scoring, lam).name)
            b = _mean_over_seeds(per_query, dataset, run, "dot")
            common = sorted(set(a) & set(b))
            p = paired_randomization(np.array([a[q] for q in common]), np.array([b[q] for q in common])) \
                if len(common) > 1 else float("nan")
            out.append({"dataset": dataset, "run": run, "scoring": scoring, "lambda": lam,
                        "parameters": from_row(scoring, lam).parameters, f"{main}_dot": dot,
                        main: h[main].mean(), "delta": h[main].mean() - dot, "p_value": p,
                        "mdd": minimal_detectable_difference(a, b)})
    return pd.DataFrame(out)


def dn_markdown(dn: pd.DataFrame) -> str:
    """The DN table for people: readable headers, λ as written in the config (0.25, not 0.2500),
    metrics at 4 decimals, p at 3 significant digits; the CSV keeps full precision."""
    if dn.empty:
        return "No scoring other than the dot product in this grid."
    lines = []
    for dataset, g in dn.groupby("dataset", sort=False):
        main = next(c[:-4] for c in g.columns if c.endswith("_dot") and g[c].notna().any())
        label = metric_label(main)
        lines += [f"## {dataset}", "", f"| run | scoring | setting | {label} dot | {label} scoring | Δ | p | MDD |",
                  "|---|---|---|---|---|---|---|---|"]
        for _, row in g.iterrows():
            lam = from_row(row["scoring"], row["lambda"]).parameters or "–"  # the scoring names its own
            cells = [f"{row[f'{main}_dot']:.4f}", f"{row[main]:.4f}", _signed(row["delta"]),
                     "–" if pd.isna(row["p_value"]) else f"{row['p_value']:.3g}",
                     "–" if pd.isna(row["mdd"]) else f"{row['mdd']:.4f}"]
            lines.append(f"| {row['run']} | {scoring_class(row['scoring']).label} | {lam} | {' | '.join(cells)} |")
        lines.append("")
    lines.append("Δ: scoring minus dot product. " + NORMALISATION_NOTE)
    return "\n".join(lines)


def markdown_to_html(markdown: str) -> str:
    """A standalone HTML page of one of our markdown tables (headings, pipe tables, paragraphs),
    which the Snakemake report shows inline where it only offers a .md file for download."""
    from html import escape

    body, table = [], []

    def flush():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= set("-: ")]
            cells = [[escape(c.strip()) for c in r.strip().strip("|").split("|")] for r in rows]
            head = "".join(f"<th>{c}</th>" for c in cells[0])
            rest = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rest}</tbody></table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 4)
            body.append(f"<h{level}>{escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{escape(line)}</p>")
    flush()
    style = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:1em 0}"
             "th,td{border:1px solid #bbb;padding:.3em .6em;text-align:right}th:first-child,td:first-child"
             "{text-align:left}th{background:#eee}")
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{style}</style></head><body>" \
           + "\n".join(body) + "</body></html>\n"


def _write_markdown(path: Path, text: str) -> None:
    """The table as markdown (for READMEs and diffs) and as HTML beside it (for the report)."""
    atomic_write_text(path, text)
    atomic_write_text(path.with_suffix(".html"), markdown_to_html(text))


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
        paths.update({name: layout.plots / path.relative_to(plots)
                      for name, path in draw_plots(results, cfg, grid, plots).items()})
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
    _write_markdown(paths["summary.md"], f"# Results: {cfg.get('experiment', '')}\n\n" +
                    summary_markdown(frame, sig, reference, cfg))
    lambdas = evaluation.get("lambdas") or [None]
    paths["headline.md"] = tables / "headline.md"
    _write_markdown(paths["headline.md"], f"# Results: {cfg.get('experiment', '')}, one line per run\n\n" +
                    headline_markdown(frame, sig, reference, lambdas[0], cfg))
    # dn.md and index.md always exist (the report lists them), saying so when they are empty.
    dn = dn_table(frame, per_query, cfg)
    dn_metrics = " / ".join(dict.fromkeys(metric_label(protocol_of(cfg, d).headline[0])
                                          for d in frame["dataset"].unique()))
    paths["dn.md"] = tables / "dn.md"
    if not dn.empty:
        paths["dn.csv"] = tables / "dn.csv"
        atomic_write_text(paths["dn.csv"], dn.to_csv(index=False))
    _write_markdown(paths["dn.md"], f"# Normalisations against the plain dot product ({dn_metrics})\n\n" +
                    dn_markdown(dn) + "\n")
    idx = pd.DataFrame(grid.index_rows)
    paths["index.md"] = tables / "index.md"
    if not idx.empty:
        paths["index.csv"] = tables / "index.csv"
        atomic_write_text(paths["index.csv"], idx.to_csv(index=False))
    _write_markdown(paths["index.md"], "# Indexes\n\n" + (idx.to_markdown(index=False, floatfmt=".4g")
                                                           if not idx.empty else "No index report.") + "\n")
    diag = diagnostics_table((out.job.dataset, out.job.run, out.train_log) for out in _own_models(cfg, grid.jobs))
    paths["diagnostics.md"] = tables / "diagnostics.md"
    if not diag.empty:
        paths["diagnostics.csv"] = tables / "diagnostics.csv"
        atomic_write_text(paths["diagnostics.csv"], diag.to_csv(index=False))
    _write_markdown(paths["diagnostics.md"], "# Training diagnostics\n\n" + diagnostics_markdown(diag))
    return paths


def _own_models(cfg: dict, jobs: list[JobOutputs]) -> list[JobOutputs]:
    """Trained jobs, each model once: a `models_of` entry's jobs share another entry's models."""
    return [out for out in jobs if pcfg.is_trained(cfg, out.job.run) and
            pcfg.model_dataset(cfg, out.job.dataset) == out.job.dataset]


def draw_plots(results: Path, cfg: dict, grid: GridResults, folder: Path | None = None) -> dict[str, Path]:
    logs: dict[tuple[str, str], list[Path]] = {}
    examples_per_update: dict[tuple[str, str], int] = {}
    for out in _own_models(cfg, grid.jobs):
        job = out.job
        if not out.recipe["encoder"].get("tied", True) and out.train_log.is_file():
            logs.setdefault((job.dataset, job.run), []).append(out.train_log)
            examples_per_update[(job.dataset, job.run)] = int(out.train.get("n_total",
                                                                            out.train.get("examples_per_update", 1)))
    # The metric plots show NDCG@10: they get the qrels-evaluated datasets' rows (answer-evaluated
    # datasets are in the tables and MLflow); the gradient-norm curves get every trained run.
    frame = grid.frame[grid.frame["dataset"].map(lambda d: "ndcg@10" in protocol_of(cfg, d).metric_keys)]
    # Intervals come from per-query NDCG@10: a dataset whose per-query metric is another one
    # (MS MARCO's NDCG@20) gets its points without an interval rather than a wrong one.
    per_query = {key: pq for key, pq in grid.per_query.items()
                 if protocol_of(cfg, key[0]).per_query_metric == "ndcg@10"}
    data = PlotData(frame, per_query, cfg.get("evaluation", {}).get("reference_run"), run_colours(list(cfg["runs"])))
    return draw_all(data, logs, folder or Layout.for_config(cfg, results).plots, examples_per_update)


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
