"""Significance of each run against its reference and what the tests can say: the test frame,
the p/MDD cells of the tables and the verdict sentence under each table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.evaluation.scorings import BASELINE, from_row
from pipeline.evaluation.significance import compare_pairs, marker


def mean_over_seeds(per_query: dict, dataset: str, run: str, key: str) -> dict[str, float]:
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
            a = mean_over_seeds(per_query, dataset, run, key)
            b = mean_over_seeds(per_query, dataset, ref, key)
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


def p_cell(sig: pd.DataFrame, reference: str | None, dataset: str, run: str, scoring: str, lam) -> str:
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


ALPHA = 0.05


def classify(p_holm: float, mean_diff: float, mdd: float, alpha: float = ALPHA) -> str:
    """What one test against the reference can say: "significant" (Holm-adjusted p < alpha),
    "below MDD" (not significant, and the observed |delta| is under the minimal detectable
    difference: any true difference is probably smaller than MDD), or "underpowered" (not
    significant although |delta| >= MDD, or MDD unknown: the data cannot tell)."""
    if p_holm is not None and not pd.isna(p_holm) and p_holm < alpha:
        return "significant"
    # Per-query scores equal to the reference's (an exact method, e.g. gradient checkpointing)
    # give MDD 0 and delta 0: nothing is undetected there, so it is not "underpowered".
    if mdd is not None and not pd.isna(mdd) and (abs(mean_diff) < mdd or mean_diff == 0):
        return "below MDD"
    return "underpowered"


def signed(value: float) -> str:
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
        groups[kind].append(f"{label(row)} (Δ {signed(row['mean_diff'])}, MDD {mdd}"
                            + (f", p {row['p_holm']:.3g})" if kind == "significant" else ")"))
    against = " / ".join(dict.fromkeys(str(r) for r in rows["reference"]))
    head = (f"no row differs significantly from {against}" if not groups["significant"] else
            f"{len(groups['significant'])} of {len(rows)} differ significantly from {against}")
    parts = [f"significant after Holm: {', '.join(groups['significant']) or 'none'}",
             f"not significant, |Δ| < MDD: {', '.join(groups['below MDD']) or 'none'}",
             f"underpowered (|Δ| ≥ MDD or MDD unknown): {', '.join(groups['underpowered']) or 'none'}"]
    return f"Verdict ({metric}, α = {ALPHA:g}): {head}. " + "; ".join(parts) + "."


def dot_tests(sig: pd.DataFrame) -> pd.DataFrame:
    """The headline's tests: dot product only."""
    return sig[(sig.scoring == BASELINE) & sig["lambda"].isna()] if not sig.empty else sig
