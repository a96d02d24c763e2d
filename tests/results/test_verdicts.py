"""pipeline.results.verdicts: the verdict under each table, from real significance tests on
per-query scores with known effects (this file's grid is shared with the table and plot tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.results.verdicts import classify, significance, verdict_line

RUNS = {"zeroshot": ("none", 0, 0), "dpr-8": ("inbatch", 8, 12), "dpr-32": ("inbatch", 32, 3),
        "contaccum-8x4": ("contaccum", 32, 3)}
# True shift of each run's per-query NDCG@10 against zero-shot.
SHIFT = {"zeroshot": 0.0, "dpr-8": 0.15, "dpr-32": 0.001, "contaccum-8x4": 0.0}


def grid(queries: int = 200, seeds=(13, 14)):
    """A summary frame and per-query scores with known effects: dpr-8 far better than zero-shot,
    dpr-32 indistinguishable, contaccum identical except on 3 queries (noise-free: tiny MDD)."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.8, size=queries)
    rows, per_query = [], {}
    for run, (method, n_total, steps) in RUNS.items():
        for seed in seeds:
            scores = np.clip(base + SHIFT[run] + (rng.normal(0, 0.1, queries) if run.startswith("dpr") else 0), 0, 1)
            if run == "contaccum-8x4":
                scores = base.copy()
                scores[:3] += 0.05
            dn = np.clip(scores + 0.01, 0, 1)
            per_query[("scifact-mini", run, seed)] = {"dot": {f"q{i}": float(v) for i, v in enumerate(scores)},
                                                      "dn@0.25": {f"q{i}": float(v) for i, v in enumerate(dn)}}
            for scoring, lam, values in (("dot", None, scores), ("dn", 0.25, dn)):
                rows.append({"dataset": "scifact-mini", "run": run, "seed": seed, "scoring": scoring, "lambda": lam,
                             "ndcg@10": float(values.mean()), "recall@100": 0.9, "mrr@10": 0.5, "method": method,
                             "n_local": 8, "n_total": n_total, "memory_size": 64 * (method == "contaccum"),
                             "fanoise": 0.0, "train_steps": steps, "peak_mem_mb": 1500.0 + n_total,
                             "sec_per_update": 0.5 + n_total / 100})
    return pd.DataFrame(rows), per_query


@pytest.fixture(scope="module")
def tested():
    frame, per_query = grid()
    sig = significance(frame, per_query, "zeroshot", permutations=2000)
    return frame, per_query, sig


def test_classify_follows_holm_and_mdd():
    assert classify(0.01, 0.02, 0.01) == "significant"
    assert classify(0.4, 0.005, 0.01) == "below MDD"
    assert classify(0.4, -0.02, 0.01) == "underpowered"       # |Δ| >= MDD yet not significant
    assert classify(0.4, 0.001, float("nan")) == "underpowered"  # MDD unknown
    assert classify(1.0, 0.0, 0.0) == "below MDD"  # per-query identical to the reference (an exact method)


def test_verdict_sorts_real_tests(tested):
    frame, _, sig = tested
    dot = sig[(sig.scoring == "dot") & sig["lambda"].isna()]
    line = verdict_line(dot, "scifact-mini", "zeroshot", "per-query NDCG@10, dot product")
    assert line.startswith("Verdict (per-query NDCG@10, dot product, α = 0.05): 1 of 3 differ significantly")
    significant, below, underpowered = line.split("; ")
    assert "dpr-8 (Δ +0.1" in significant and "dpr-32" in below and "dpr-32" not in significant
    # Identical but for 3 queries: the difference is real yet tiny; whatever the test says, the
    # verdict puts contaccum in exactly one group.
    assert sum("contaccum-8x4" in part for part in (significant, below, underpowered)) == 1
    assert verdict_line(dot.iloc[:0], "scifact-mini", "zeroshot", "x").startswith("Verdict: no test")
