"""Per-run training diagnostics from train_log.jsonl: what each run's loss actually contrasted.

One row per dataset x run (means over seeds): how many known positives sat in a row's negatives
(false negatives found) and how many were masked, the negatives left per row, how old the
passage bank's rows were (in optimizer updates), SogCLR's per-example state (how many examples
hold one, how old it was when used), and the gradient-norm ratio
||grad passage encoder|| / ||grad query encoder|| early and late in training (median over the
first and the last tenth of the updates), which is the quantity of the ContAccum paper's Fig. 5,
and the last tenth's InfoNCE loss over its chance level ln(1 + negatives): near 1, the scores no
longer tell the positive from the negatives, which is what a collapsed encoder (every text
embedded in one direction) shows while its training loss looks merely "high".
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

# (table column, train_log column, how the per-run value is reduced over the updates)
PER_UPDATE = (
    ("false negatives / row", "false_negatives_per_row", "mean"),
    ("masked / row", "masked_per_row", "mean"),
    ("guide-filtered / row", "filtered_per_row", "mean"),
    ("effective negatives / row", "effective_negatives_per_row", "mean"),
    ("bank age mean", "bank_age_mean", "mean"),
    ("bank age max", "bank_age_max", "max"),
    # SogCLR: examples holding a denominator estimate u_i, and how many updates old a re-visited
    # example's estimate was when it was used.
    ("sogclr state samples", "state_samples", "max"),
    ("sogclr state age mean", "state_age_mean", "mean"),
)
EARLY_LATE_SHARE = 0.1
LOSS_OVER_CHANCE = "loss / chance, last 10%"  # 1 when training ended at chance: a collapsed run
# Columns whose per-run value is a maximum, so seeds are combined by their maximum too.
MAX_COLUMNS = {label for label, _, how in PER_UPDATE if how == "max"} | {"grad-norm ratio, max"}


def _read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_diagnostics(rows: list[dict]) -> dict[str, float]:
    """The reduced diagnostics of one training log (NaN where the log lacks a column)."""
    out: dict[str, float] = {"updates": float(len(rows))}
    for label, column, how in PER_UPDATE:
        values = [r[column] for r in rows if column in r]
        out[label] = (max(values) if how == "max" else float(np.mean(values))) if values else math.nan
    ratios = [r["grad_norm_ratio"] for r in rows if math.isfinite(r.get("grad_norm_ratio", math.nan))]
    out["grad-norm ratio, first 10%"] = float(np.median(ratios[:_stretch(ratios)])) if ratios else math.nan
    out["grad-norm ratio, last 10%"] = float(np.median(ratios[-_stretch(ratios):])) if ratios else math.nan
    out["grad-norm ratio, max"] = float(max(ratios)) if ratios else math.nan
    out[LOSS_OVER_CHANCE] = _loss_over_chance(rows[-_stretch(rows):])
    return out


def _stretch(values: list) -> int:
    """How many of `values` make up the early or late EARLY_LATE_SHARE (at least one)."""
    return max(1, int(round(EARLY_LATE_SHARE * len(values))))


def _loss_over_chance(rows: list[dict]) -> float:
    """Median of loss / ln(1 + effective negatives) over `rows`: 1 when every candidate scores alike.
    NaN for logs without those columns, and for SogCLR, whose loss is a surrogate with another scale."""
    ratios = [r["loss"] / math.log1p(r["effective_negatives_per_row"]) for r in rows
              if "state_samples" not in r and r.get("effective_negatives_per_row", 0) > 0 and "loss" in r]
    return float(np.median(ratios)) if ratios else math.nan


def diagnostics_table(logs: Iterable[tuple[str, str, Path]]) -> pd.DataFrame:
    """(dataset, run, train_log path) per trained job -> one row per dataset x run, seeds averaged
    (the bank age max is the maximum over seeds)."""
    per_job = [{"dataset": d, "run": r, **run_diagnostics(_read_log(p))} for d, r, p in logs if p.is_file()]
    if not per_job:
        return pd.DataFrame()
    frame = pd.DataFrame(per_job)
    reducers = {c: ("max" if c in MAX_COLUMNS else "mean")
                for c in frame.columns if c not in ("dataset", "run")}
    table = frame.groupby(["dataset", "run"], sort=False).agg(reducers).reset_index()
    table.insert(2, "seeds", frame.groupby(["dataset", "run"], sort=False).size().values)
    return table


NOTE = ("Means over each run's updates, then over seeds. false negatives / row: loss columns holding a known positive "
        "of the row's query other than its own label; masked / row: of those, removed from the softmax "
        "(`training.false_negatives: mask`); guide-filtered / row: columns the `negative_filter` guide removed (– without a "
        "guide); effective negatives / row: columns left besides the label. bank age: "
        "optimizer updates since the passage bank's rows were encoded, when a micro-batch is scored against them. "
        "sogclr state samples: training examples holding a SogCLR denominator estimate u_i at the end; sogclr state age "
        "mean: optimizer updates since a re-visited example's u_i was last refreshed. grad-norm ratio: ||grad passage encoder|| / ||grad query encoder||, median over the first and last tenth "
        "of the updates (the ContAccum paper's Fig. 5 quantity). loss / chance: the last tenth's InfoNCE loss over "
        "ln(1 + effective negatives), its value when every candidate scores alike; near 1 the encoder has collapsed.")


def diagnostics_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "No trained run in this grid.\n"
    return table.to_markdown(index=False, floatfmt=".3g").replace(" nan ", " – ") + "\n\n" + NOTE + "\n"


__all__ = ["run_diagnostics", "diagnostics_table", "diagnostics_markdown"]
