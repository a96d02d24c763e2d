"""pipeline.results.plots: seeded bootstrap intervals, log axes labelled in plain numbers, every
plot drawn with one colour per run (recorded in colours.json), and no run or legend hiding another's
interval."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest

from pipeline.results.plots import PLOTS, PlotData, bootstrap_interval, draw_all, readable_log_ticks, run_colours
from tests.results.test_verdicts import RUNS, tested  # noqa: F401  (the grid with known effects)


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    values = np.random.default_rng(0).uniform(size=300)
    low, high = bootstrap_interval(values)
    assert low < values.mean() < high and (low, high) == bootstrap_interval(values)
    assert high - low == pytest.approx(2 * 1.96 * values.std(ddof=1) / np.sqrt(values.size), rel=0.15)


def test_log_axis_ticks_are_plain_numbers_inside_a_narrow_range():
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
    steps = np.array([1.0, 2.0, 3.0])
    logs = {("scifact-mini", run): [(steps, 1.0 + 0.05 * steps)] for run in ("dpr-8", "contaccum-8x4")}
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



def _drawn(monkeypatch, tmp_path, draw, frame, per_query):
    """The figure `draw` (one of the plot functions) builds, kept open instead of saved."""
    from pipeline.results import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, *args, **kwargs: figures.append(fig))
    draw(PlotData(frame.assign(**{"lambda": frame["lambda"].astype(float)}), per_query, "zeroshot",
                  run_colours(list(RUNS))), tmp_path)
    (fig,) = figures
    fig.canvas.draw()
    return fig


def test_the_per_run_legend_hides_no_interval(monkeypatch, tmp_path, tested):
    """Every run's interval as wide as the reference band leaves no free corner inside the data:
    the legend must sit in headroom above them, not on a whisker."""
    from pipeline.results import plots

    frame, per_query, _ = tested
    tied = {key: {scoring: {qid: float(i % 2) for i, qid in enumerate(scores)} for scoring, scores in by.items()}
            for key, by in per_query.items()}
    fig = _drawn(monkeypatch, tmp_path, plots.ndcg_per_run, frame, tied)
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend().get_window_extent(renderer)
        whiskers = [a for a in ax.get_children() if str(a.get_gid()).startswith(plots.RUN_GID)]
        assert whiskers
        for artist in whiskers:
            # A LineCollection (the interval) reports no window extent; its paths in display units do.
            extent = (ax.transData.transform_bbox(artist.get_datalim(ax.transData))
                      if hasattr(artist, "get_datalim") else artist.get_window_extent(renderer))
            assert not legend.overlaps(extent), f"the legend hides {artist.get_gid()}"


def test_the_grad_norm_legend_stands_beside_the_curves(monkeypatch, tmp_path, tested):
    """Spiky ratio curves fill every corner of the axes: the legend must sit outside them."""
    from pipeline.results import plots

    frame, per_query, _ = tested
    steps = np.arange(1.0, 41.0)
    spiky = {("scifact-mini", run): [(steps, np.where(steps % 5 == 0, 8.0, 0.5 + 0.01 * steps))]
             for run in ("dpr-8", "contaccum-8x4")}
    fig = _drawn(monkeypatch, tmp_path, lambda data, out: plots.grad_norm_ratio(data, spiky, out), frame, per_query)
    (ax,) = fig.axes
    renderer = fig.canvas.get_renderer()
    assert not ax.get_legend().get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def test_runs_at_one_n_total_stand_side_by_side(monkeypatch, tmp_path, tested):
    """dpr-32 and contaccum-8x4 share N_total 32: drawn at one x, one would hide the other."""
    from pipeline.results import plots

    frame, per_query, _ = tested
    (ax,) = _drawn(monkeypatch, tmp_path, plots.ndcg_vs_batch, frame, per_query).axes
    x = {str(line.get_gid())[len(plots.RUN_GID):]: float(line.get_xdata()[0])
         for line in ax.get_lines() if str(line.get_gid()).startswith(plots.RUN_GID)}
    assert set(x) == {"dpr-8", "dpr-32", "contaccum-8x4"}
    assert x["dpr-8"] == 8  # alone at its N_total: exactly there
    assert x["dpr-32"] != x["contaccum-8x4"]
    assert all(abs(np.log2(x[run] / 32)) <= 0.3 for run in ("dpr-32", "contaccum-8x4"))
