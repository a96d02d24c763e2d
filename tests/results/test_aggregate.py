"""What a reader takes from the tables and plots: the verdict under each table (from real
significance tests on per-query scores), the DN table's formatting, and plots that draw
intervals, keep one colour per run and label a log axis in plain numbers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.results.normalisation_table import dn_markdown
from pipeline.results.tables import headline_markdown, summary_markdown
from pipeline.results.plots import PLOTS, PlotData, bootstrap_interval, draw_all, readable_log_ticks, run_colours
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


def test_headline_shows_seeds_updates_and_ends_with_the_verdict(tested):
    frame, _, sig = tested
    text = headline_markdown(frame.assign(**{"lambda": frame["lambda"].astype(float)}), sig, "zeroshot", 0.25)
    lines = text.strip().splitlines()
    assert lines[-1].startswith("Verdict (") and "dpr-8" in lines[-1]
    header = next(line for line in lines if line.startswith("| run |"))
    assert header.startswith("| run | seeds | updates | N_total | memory |")
    row = next(line for line in lines if line.startswith("| contaccum-8x4 |"))
    assert row.startswith("| contaccum-8x4 | 2 | 3 | 32 | 64 |")
    assert next(line for line in lines if line.startswith("| zeroshot |")).startswith("| zeroshot | 2 | – | – | – |")
    summary = summary_markdown(frame.assign(**{"lambda": frame["lambda"].astype(float)}), sig, "zeroshot")
    assert "| seeds | updates |" in summary and "Verdict (" in summary and "dn λ=0.25" in summary


def test_dn_table_is_formatted_for_people():
    frame = pd.DataFrame([{"dataset": "d", "run": "r", "scoring": "dn", "lambda": 0.25, "ndcg@10_dot": 0.5,
                           "ndcg@10": 0.51234, "delta": 0.01234, "p_value": 0.012345, "mdd": 0.02},
                          {"dataset": "d", "run": "r", "scoring": "nnn[k=16]", "lambda": 0.5, "parameters": "k=16 α=0.5",
                           "ndcg@10_dot": 0.5, "ndcg@10": 0.49, "delta": -0.01, "p_value": 0.5, "mdd": 0.03}])
    text = dn_markdown(frame)
    assert "| r | DN | λ=0.25 | 0.5000 | 0.5123 | +0.0123 | 0.0123 | 0.0200 |" in text
    assert "| r | NNN | k=16 α=0.5 | 0.5000 | 0.4900 | −0.0100 | 0.5 | 0.0300 |" in text
    assert "| run | scoring | setting | NDCG@10 dot | NDCG@10 scoring | Δ | p | MDD |" in text
    assert "0.2500" not in text and "ndcg@10_dot" not in text and "p_value" not in text


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    values = np.random.default_rng(0).uniform(size=300)
    low, high = bootstrap_interval(values)
    assert low < values.mean() < high and (low, high) == bootstrap_interval(values)
    assert high - low == pytest.approx(2 * 1.96 * values.std(ddof=1) / np.sqrt(values.size), rel=0.15)


def test_log_axis_ticks_are_plain_numbers_inside_a_narrow_range():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [0.95, 1.15, 1.3])
    ax.set_yscale("log")
    readable_log_ticks(ax, 0.95, 1.3)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    plt.close(fig)
    assert "1" in labels and len(labels) >= 3 and all("^" not in label for label in labels)
    assert any(1.0 < float(label) < 1.3 for label in labels)


def test_plots_keep_one_colour_per_run(tmp_path, tested):
    frame, per_query, sig = tested
    logs = {}
    for run in ("dpr-8", "contaccum-8x4"):
        path = tmp_path / f"{run}.jsonl"
        path.write_text("".join(json.dumps({"step": s, "grad_norm_ratio": 1.0 + 0.05 * s}) + "\n" for s in (1, 2, 3)))
        logs[("scifact-mini", run)] = [path]
    data = PlotData(frame.assign(**{"lambda": frame["lambda"].astype(float)}), per_query, "zeroshot",
                    run_colours(list(RUNS)))
    paths = draw_all(data, logs, tmp_path / "plots", {key: 8 for key in logs})
    assert tuple(paths) == PLOTS and all(p.stat().st_size for p in paths.values())
    record = json.loads((tmp_path / "plots" / "colours.json").read_text())
    colours = record["run_colours"]
    assert len(set(colours.values())) == len(colours) == len(RUNS)
    for plot, drawn in record["plots"].items():
        assert drawn, f"{plot}: no run-tagged artist"
        for run, shades in drawn.items():
            assert shades == [colours[run]], f"{plot}: {run} drawn in {shades}, its colour is {colours[run]}"
    # ndcg_per_run shows every run (the reference as a point too); the cost plots the trained ones.
    assert set(record["plots"]["ndcg_per_run"]) == set(RUNS)
    assert set(record["plots"]["accuracy_vs_cost"]) == set(RUNS) - {"zeroshot"}
    svg = (tmp_path / "plots" / "ndcg_per_run.svg").read_text()
    assert "scifact-mini · 2 seeds · 200 queries" in svg
