"""The summary and headline tables as markdown (and the HTML page the report shows of each)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pipeline.core.common import atomic_write_text
from pipeline.evaluation.protocols import metric_label
from pipeline.evaluation.scorings import BASELINE, available_scorings, scoring_class
from pipeline.results.grid import dataset_protocols, per_query_note
from pipeline.results.verdicts import MDD_NOTE, dot_tests, p_cell, verdict_line


def fmt_mean_std(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.4f} ± {std:.4f}" if std and not math.isnan(std) else f"{mean:.4f}"


def _scoring_label(row) -> str:
    lam = row["lambda"]
    return f"{row['run']} {row['scoring']}" + ("" if pd.isna(lam) else f" λ={lam:g}")


def updates_cell(g: pd.DataFrame) -> str:
    """Optimizer updates of a run (from train_summary.json), '–' for a zero-shot model."""
    steps = pd.to_numeric(g.train_steps, errors="coerce").max() if "train_steps" in g else float("nan")
    return "–" if pd.isna(steps) or steps <= 0 else f"{int(steps)}"


def cost_cells(g: pd.DataFrame) -> str:
    return f"{g.peak_mem_mb.mean():.0f} | {g.sec_per_update.mean():.2f}" if g.n_total.max() > 0 else "– | –"


def scoring_rank(column: str) -> tuple:
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
    protocols = dataset_protocols(frame, cfg)
    # Rows follow the config's run order, then dot, dn, dn*, then lambda.
    frame = frame.assign(_run=pd.Categorical(frame.run, categories=list(dict.fromkeys(frame.run))),
                         _scoring=frame.scoring.map(scoring_rank), _lam=frame["lambda"].fillna(-1.0))
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
            cells = [fmt_mean_std(g[m].mean(), g[m].std(ddof=1) if len(g) > 1 else 0.0) for m in shown]
            p = p_cell(sig, reference, ds, run, scoring, lam)
            lam_txt = "–" if pd.isna(lam) else _lambda_text(scoring, lam)
            lines.append(f"| {run} | {scoring} | {lam_txt} | {len(g)} | {updates_cell(g)} | {' | '.join(cells)} | {p} | "
                         f"{cost_cells(g)} |")
        lines += ["", verdict_line(sig, dataset, reference, f"per-query {metric_label(protocols[dataset].per_query_metric)}"
                                   " against the reference run with the same scoring", _scoring_label), ""]
    lines.append("Mean ± sample std over seeds (dn* rows: each seed is itself a mean over its repeats). "
                 f"p: paired randomization test on per-query {per_query_note(protocols)} against the reference "
                 "run with the same "
                 "scoring, Holm-corrected per dataset; † marks p < 0.05. " + MDD_NOTE)
    return "\n".join(lines) + "\n"


def headline_markdown(frame: pd.DataFrame, sig: pd.DataFrame, reference: str | None, lam: float | None,
                      cfg: dict | None = None) -> str:
    """One line per run: the protocol's main metric (NDCG@10; Top-20 for answers) under each
    scoring (lambda scorings at the headline lambda), its second metric (Recall@100; Top-100)
    under the dot product, the dot-product p-value against the reference run, and the training
    cost (the headline table)."""
    protocols = dataset_protocols(frame, cfg)

    evaluation = (cfg or {}).get("evaluation")

    def shown(scoring: str):
        return scoring_class(scoring).headline_lambda(evaluation, lam)

    def cell(g: pd.DataFrame, scoring: str, metric: str) -> str:
        uses_lambda = scoring_class(scoring).uses_lambda
        rows = g[(g.scoring == scoring) & ((g["lambda"] == shown(scoring)) if uses_lambda else g["lambda"].isna())]
        return fmt_mean_std(rows[metric].mean(), rows[metric].std(ddof=1)) if len(rows) else "–"

    def header(scoring: str) -> str:
        cls = scoring_class(scoring)
        setting = scoring.partition("[")[2].rstrip("]")
        swept = f" {cls.parameter}={'–' if shown(scoring) is None else f'{shown(scoring):g}'}" if cls.uses_lambda else ""
        return f"{cls.label}" + (f" {setting}" if setting else "") + swept

    others = sorted((s for s in set(frame.scoring) if s != BASELINE), key=scoring_rank)
    lines = []
    for dataset, by_dataset in frame.groupby("dataset", sort=False):
        main, second = protocols[dataset].headline[:2]
        headers = [f"{metric_label(main)} {header(s)}" for s in others]
        lines += [f"## {dataset}", "",
                  f"| run | seeds | updates | N_total | memory | {metric_label(main)} dot | p vs {reference or '–'} | "
                  "MDD | " + "".join(f"{h} | " for h in headers) + f"{metric_label(second)} dot | peak MB | s/update |",
                  "|---|---|---|---|---|---|---|---|" + "---|" * len(headers) + "---|---|---|"]
        for run, g in by_dataset.groupby("run", sort=False):
            p = p_cell(sig, reference, dataset, run, BASELINE, None)
            n_total, memory = int(g.n_total.max()), int(g.memory_size.max())
            seeds = g[g.scoring == BASELINE].seed.nunique()
            lines.append(f"| {run} | {seeds} | {updates_cell(g)} | {n_total or '–'} | {memory or '–'} | "
                         f"{cell(g, BASELINE, main)} | {p} | " +
                         "".join(f"{cell(g, s, main)} | " for s in others) +
                         f"{cell(g, BASELINE, second)} | {cost_cells(g)} |")
        lines += ["", verdict_line(dot_tests(sig), dataset, reference,
                                   f"per-query {metric_label(protocols[dataset].per_query_metric)}, dot product"), ""]
    # The legend goes first so that the file (and `make run`'s print of it) ends with the verdict.
    legend = (f"Mean ± sample std over seeds; updates: optimizer updates per seed. p: paired randomization test on "
              f"per-query {per_query_note(protocols)} (dot product, mean over seeds) against the reference run, "
              "Holm-corrected; † marks p < 0.05. memory: bank size in samples. peak MB: peak process memory during "
              "training (RSS on CPU, allocated on CUDA). " + MDD_NOTE)
    return legend + "\n\n" + "\n".join(lines).rstrip("\n") + "\n"


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


def write_markdown(path: Path, text: str) -> None:
    """The table as markdown (for READMEs and diffs) and as HTML beside it (for the report)."""
    atomic_write_text(path, text)
    atomic_write_text(path.with_suffix(".html"), markdown_to_html(text))
