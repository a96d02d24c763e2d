"""What a grid's plots are drawn from, kept as two CSVs beside its tables, so that a published
reference can be redrawn after a change to the plots without re-running its grid
(`python -m pipeline.results.reference replot`).

  per_query.csv  dataset, run, seed, query, then one column per scoring: the per-query metric the
                 95 % intervals are bootstrapped from (NDCG@10 for a qrels dataset)
  grad_norm.csv  dataset, run, seed, examples_per_update, step, grad_norm_ratio: the training
                 curves of the untied runs (the gradient-norm plot)

Values keep 6 significant digits: a 300-query grid of 30 models stays under a megabyte, and the
aggregate step draws its own plots from these files read back, so a redrawn plot equals the first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.common import PipelineError, atomic_write_text

PER_QUERY = "per_query.csv"
GRAD_NORM = "grad_norm.csv"
DIGITS = "%.6g"
PER_QUERY_KEYS = ["dataset", "run", "seed", "query"]
CURVE_KEYS = ["dataset", "run", "seed"]

Curve = tuple[np.ndarray, np.ndarray]  # optimizer steps, gradient-norm ratio at each


@dataclass
class PlotInputs:
    per_query: dict[tuple[str, str, int], dict[str, dict[str, float]]] = field(default_factory=dict)
    curves: dict[tuple[str, str], list[Curve]] = field(default_factory=dict)  # one per seed
    examples_per_update: dict[tuple[str, str], int] = field(default_factory=dict)


def read_ratio(train_log: Path) -> Curve:
    """One training's gradient-norm ratio per optimizer step, from its train_log.jsonl."""
    rows = [json.loads(line) for line in train_log.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if np.isfinite(r.get("grad_norm_ratio", np.nan))]
    return np.array([r["step"] for r in rows], dtype=float), np.array([r["grad_norm_ratio"] for r in rows])


def write(folder: Path, per_query: dict, curves: dict[tuple[str, str, int], Curve],
          examples_per_update: dict[tuple[str, str], int]) -> list[Path]:
    """`curves` maps (dataset, run, seed) to that training's curve."""
    rows = [{"dataset": d, "run": r, "seed": s, "scoring": scoring, "query": q, "value": v}
            for (d, r, s), by_scoring in per_query.items() for scoring, scores in by_scoring.items()
            for q, v in scores.items()]
    wide = pd.DataFrame(rows, columns=PER_QUERY_KEYS + ["scoring", "value"])
    wide = wide.pivot_table(index=PER_QUERY_KEYS, columns="scoring", values="value", sort=False).reset_index()
    wide.columns.name = None
    curve_rows = [{"dataset": d, "run": r, "seed": s, "examples_per_update": examples_per_update.get((d, r), 1),
                   "step": int(step), "grad_norm_ratio": ratio}
                  for (d, r, s), (steps, ratios) in curves.items() for step, ratio in zip(steps, ratios)]
    grad = pd.DataFrame(curve_rows, columns=CURVE_KEYS + ["examples_per_update", "step", "grad_norm_ratio"])
    paths = [folder / PER_QUERY, folder / GRAD_NORM]
    atomic_write_text(paths[0], wide.to_csv(index=False, float_format=DIGITS))
    atomic_write_text(paths[1], grad.to_csv(index=False, float_format=DIGITS))
    return paths


def read(folder: Path) -> PlotInputs:
    missing = [name for name in (PER_QUERY, GRAD_NORM) if not (folder / name).is_file()]
    if missing:
        raise PipelineError(f"{folder}: no {' or '.join(missing)}; tables published before plot inputs were kept "
                            f"cannot be redrawn: re-run the grid (make reference)")
    inputs = PlotInputs()
    wide = pd.read_csv(folder / PER_QUERY, dtype={"dataset": str, "run": str, "query": str})
    for (dataset, run, seed), g in wide.groupby(CURVE_KEYS, sort=False):
        scored = {scoring: g[g[scoring].notna()] for scoring in wide.columns[len(PER_QUERY_KEYS):]}
        inputs.per_query[(dataset, run, int(seed))] = {
            scoring: dict(zip(rows["query"], rows[scoring].astype(float))) for scoring, rows in scored.items()
            if not rows.empty}
    grad = pd.read_csv(folder / GRAD_NORM, dtype={"dataset": str, "run": str})
    for (dataset, run, _), g in grad.groupby(CURVE_KEYS, sort=False):
        inputs.curves.setdefault((dataset, run), []).append((g["step"].to_numpy(), g["grad_norm_ratio"].to_numpy()))
        inputs.examples_per_update[(dataset, run)] = int(g["examples_per_update"].iloc[0])
    return inputs
