"""The normalisation table (dn.csv/md): every scoring other than the plain dot product against
the dot product of the same model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.evaluation.protocols import metric_label
from pipeline.evaluation.scorings import BASELINE, from_row, scoring_class
from pipeline.evaluation.significance import minimal_detectable_difference, paired_randomization
from pipeline.results.grid import dataset_protocols
from pipeline.results.tables import scoring_rank
from pipeline.results.verdicts import MDD_NOTE, mean_over_seeds, signed


NORMALISATION_NOTE = ("One row per run, scoring and parameter (DN's λ, NNN's k and α, QB-Norm's β), against the plain "
                      "dot product of the same model. delta: difference of the mean metric; p: paired randomization "
                      "test on the per-query metric (mean over seeds), not corrected for the number of rows. " +
                      MDD_NOTE)


def dn_table(frame: pd.DataFrame, per_query: dict, cfg: dict | None = None) -> pd.DataFrame:
    """The normalisation table: every scoring other than the plain dot product (DN, DN*, NNN,
    QB-Norm, ...), one row per run, scoring and parameter, against the dot product of the same
    model: delta of the protocol's main metric (NDCG@10; Top-20 for answers), the paired
    randomization p on its per-query metric and the minimal detectable difference."""
    protocols = dataset_protocols(frame, cfg)
    out = []
    for (dataset, run), g in frame.groupby(["dataset", "run"], sort=False):
        main = protocols[dataset].headline[0]
        dot = g[g.scoring == BASELINE][main].mean()
        shifted = g[g.scoring != BASELINE]
        keys = sorted(shifted.groupby(["scoring", "lambda"], dropna=False).groups,
                      key=lambda key: (scoring_rank(key[0]), -1.0 if pd.isna(key[1]) else key[1]))
        for scoring, lam in keys:
            h = shifted[(shifted.scoring == scoring) &
                        ((shifted["lambda"] == lam) if not pd.isna(lam) else shifted["lambda"].isna())]
            a = mean_over_seeds(per_query, dataset, run, from_row(scoring, lam).name)
            b = mean_over_seeds(per_query, dataset, run, BASELINE)
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
            cells = [f"{row[f'{main}_dot']:.4f}", f"{row[main]:.4f}", signed(row["delta"]),
                     "–" if pd.isna(row["p_value"]) else f"{row['p_value']:.3g}",
                     "–" if pd.isna(row["mdd"]) else f"{row['mdd']:.4f}"]
            lines.append(f"| {row['run']} | {scoring_class(row['scoring']).label} | {lam} | {' | '.join(cells)} |")
        lines.append("")
    lines.append("Δ: scoring minus dot product. " + NORMALISATION_NOTE)
    return "\n".join(lines)
