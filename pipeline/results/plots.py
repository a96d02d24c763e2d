"""Result plots (PNG and SVG) drawn from the aggregated summary frame, the per-query scores and
the gradient-norm curves of the training logs (pipeline.results.plot_inputs keeps the last two).

Each function writes `<name>.png` and `<name>.svg` into the plots folder and returns the PNG
path. `PLOTS` lists them in report order; each has its caption in report/<name>.rst (the one
place captions live: the Snakemake report shows them, and tests check that every plot has one).

Conventions: NDCG@10 under the plain dot product unless a plot says otherwise; a point is the
mean over queries of the per-query NDCG@10 averaged over seeds, its bar the 95 % percentile
bootstrap interval over queries (`CI_METHOD`); the reference run (the zero-shot model unless the
config names another) is a grey band of its own interval wherever it is not a point of its own.
Every run has one colour in every plot (`run_colours`, computed once per grid); the colour each
plot gave each run is read back from the drawn artists into `colours.json`, so a test can check
it from the plot data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pipeline.core.common import atomic_path, atomic_write_text
from pipeline.evaluation.scorings import BASELINE, from_row, scoring_class
from pipeline.results.plot_inputs import Curve

PLOTS = ("ndcg_per_run", "ndcg_vs_batch", "accuracy_vs_cost", "grad_norm_ratio", "dn_lambda")
COLOURS_FILE = "colours.json"
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
CI_METHOD = (f"95 % percentile bootstrap over queries ({BOOTSTRAP_SAMPLES} resamples, fixed RNG seed "
             f"{BOOTSTRAP_SEED}) of the per-query NDCG@10 averaged over seeds")
RUN_GID = "run:"   # artist gid prefix that names the run an artist belongs to


@dataclass
class PlotData:
    """What every plot reads: the summary frame (qrels datasets), per-query scores by (dataset,
    run, seed), the reference run and the one run -> colour map of the grid."""

    frame: pd.DataFrame
    per_query: dict = field(default_factory=dict)
    reference: str | None = None
    colours: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if not self.colours:
            self.colours = run_colours(list(dict.fromkeys(self.frame.run)))

    def colour(self, run: str) -> str:
        return self.colours.get(run, "#333333")

    def scores(self, dataset: str, run: str, key: str = BASELINE) -> np.ndarray:
        """Per-query scores under `key` averaged over the run's seeds (queries every seed has)."""
        seeds = [pq[key] for (d, r, _), pq in sorted(self.per_query.items()) if d == dataset and r == run and key in pq]
        if not seeds:
            return np.array([])
        common = sorted(set.intersection(*(set(s) for s in seeds)))
        return np.array([np.mean([s[q] for s in seeds]) for q in common], dtype=float)

    def estimate(self, dataset: str, run: str, key: str = BASELINE, column: str = "ndcg@10",
                 rows: pd.DataFrame | None = None) -> tuple[float, float, float]:
        """(mean, low, high): the bootstrap interval where per-query scores exist, else the mean
        of the summary rows with no interval (low = high = mean)."""
        values = self.scores(dataset, run, key)
        if values.size >= 2:
            low, high = bootstrap_interval(values)
            return float(values.mean()), low, high
        mean = float(rows[column].astype(float).mean()) if rows is not None and len(rows) else float("nan")
        return mean, mean, mean

    def subtitle(self, datasets=None) -> str:
        """'<dataset> · <k> seeds · <n> queries' for each dataset shown."""
        parts = []
        for dataset in datasets if datasets is not None else self.frame.dataset.unique():
            seeds = self.frame[self.frame.dataset == dataset].seed.nunique()
            queries = max((len(pq.get(BASELINE, {})) for (d, _, _), pq in self.per_query.items() if d == dataset),
                          default=0)
            parts.append(f"{dataset} · {seeds} seed{'s' * (seeds != 1)} · " +
                         (f"{queries} queries" if queries else "queries unknown"))
        return "; ".join(parts)


def run_colours(runs: list[str]) -> dict[str, str]:
    """One distinct colour per run, in run order (tab10, then tab20's lighter shades, then evenly
    spaced hues): computed once so a run has the same colour in every plot."""
    import matplotlib

    palette = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab10"].colors]
    palette += [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab20"].colors[1::2]]
    extra = max(0, len(runs) - len(palette))
    palette += [matplotlib.colors.to_hex(matplotlib.colormaps["hsv"](i / max(1, extra))) for i in range(extra)]
    return {run: palette[i] for i, run in enumerate(runs)}


def bootstrap_interval(values: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample the queries with replacement."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(samples, values.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    # Text stays text in SVG (searchable, accessible, smaller) instead of glyph outlines.
    matplotlib.rcParams["svg.fonttype"] = "none"
    import matplotlib.pyplot as plt

    return plt


def drawn_colours(fig) -> dict[str, list[str]]:
    """run -> the distinct colours of the artists drawn for it (read from the figure)."""
    from matplotlib.colors import to_hex

    out: dict[str, set[str]] = {}
    for artist in fig.findobj(lambda a: str(a.get_gid() or "").startswith(RUN_GID)):
        colour = artist.get_color() if hasattr(artist, "get_color") else artist.get_facecolor()
        colour = np.atleast_2d(colour)[0] if not isinstance(colour, str) else colour
        out.setdefault(artist.get_gid()[len(RUN_GID):], set()).add(to_hex(colour))
    return {run: sorted(c) for run, c in out.items()}


def _save(fig, out: Path, name: str, record: dict | None = None) -> Path:
    if record is not None:
        record[name] = drawn_colours(fig)
    out.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "svg"):
        with atomic_path(out / f"{name}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=120, bbox_inches="tight")
    _figure().close(fig)
    return out / f"{name}.png"


def _empty(out: Path, name: str, why: str, record: dict | None = None) -> Path:
    """A placeholder so every declared plot exists (Snakemake outputs must), saying why it is empty."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True)
    return _save(fig, out, name, record)


def _dot(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame.scoring == BASELINE]


def _point(ax, data: PlotData, run: str, x: float, estimate: tuple[float, float, float], label=None, **kw):
    """One run's point with its interval, tagged with the run (for colours.json)."""
    mean, low, high = estimate
    bars = ax.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], fmt=kw.pop("fmt", "o"), capsize=3,
                       color=data.colour(run), label=label, **kw)
    for artist in (bars.lines[0], *bars.lines[2]):
        artist.set_gid(RUN_GID + run)


def _reference_band(ax, data: PlotData, dataset: str) -> None:
    """The reference run's 95 % interval as a grey band, its mean as a dashed line."""
    rows = _dot(data.frame)
    rows = rows[(rows.dataset == dataset) & (rows.run == data.reference)]
    if data.reference is None or rows.empty:
        return
    mean, low, high = data.estimate(dataset, data.reference, rows=rows)
    ax.axhspan(low, high, color="0.85", zorder=0, label=f"{data.reference} 95 % interval")
    ax.axhline(mean, color="0.45", lw=1, ls="--", zorder=1, label=f"{data.reference} {mean:.4f}")


def ndcg_per_run(data: PlotData, out: Path, record: dict | None = None) -> Path:
    plt = _figure()
    dot = _dot(data.frame)
    if dot.empty:  # every dataset of the grid is answer-evaluated (no NDCG@10)
        return _empty(out, "ndcg_per_run", "no NDCG-evaluated (qrels) dataset in this grid", record)
    datasets = list(dot.dataset.unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(5, 0.9 * dot.run.nunique() + 2) * len(datasets), 4),
                             squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        rows = dot[dot.dataset == dataset]
        runs = list(dict.fromkeys(rows.run))
        _reference_band(ax, data, dataset)
        for x, run in enumerate(runs):
            _point(ax, data, run, x, data.estimate(dataset, run, rows=rows[rows.run == run]))
        ax.set_xticks(range(len(runs)), runs, rotation=45, ha="right")
        ax.set_xlim(-0.6, len(runs) - 0.4)
        ax.set_ylabel("NDCG@10 (dot product)")
        ax.set_title(f"NDCG@10 per run, 95 % intervals\n{data.subtitle([dataset])}", fontsize=10)
        ax.grid(axis="y", color="0.92")
        if data.reference in runs:
            # Headroom above the highest interval: runs that tie the reference leave no free corner.
            low, high = ax.get_ylim()
            ax.set_ylim(low, high + 0.22 * (high - low))
            ax.legend(fontsize=7, loc="upper right")
    return _save(fig, out, "ndcg_per_run", record)


def _trained_points(ax, data: PlotData, column: str) -> None:
    """One point per trained run: x = mean of `column`, y = NDCG@10 with its interval."""
    dot = _dot(data.frame)
    for (dataset, run), g in dot[dot.n_total > 0].groupby(["dataset", "run"], sort=False):
        label = f"{run} ({dataset})" if dot.dataset.nunique() > 1 else run
        _point(ax, data, run, float(g[column].astype(float).mean()), data.estimate(dataset, run, rows=g), label=label)
    if dot.dataset.nunique() == 1:
        _reference_band(ax, data, dot.dataset.iloc[0])
    ax.set_ylabel("NDCG@10 (dot product)")
    ax.grid(color="0.92")


def _dodged(n_totals: dict[str, float], octaves: float = 0.6) -> dict[str, float]:
    """Runs that share an N_total side by side on the log2 axis (the group at most `octaves`
    wide, centred on the true value), so no interval hides another; a lone run keeps its x."""
    groups: dict[float, list[str]] = {}
    for run, n in n_totals.items():
        groups.setdefault(n, []).append(run)
    positions = {}
    for n, runs in groups.items():
        step = min(0.12, octaves / len(runs))
        for i, run in enumerate(runs):
            positions[run] = n * 2 ** ((i - (len(runs) - 1) / 2) * step)
    return positions


def ndcg_vs_batch(data: PlotData, out: Path, record: dict | None = None) -> Path:
    """NDCG@10 against N_total, one panel per dataset; runs at the same N_total stand side by
    side around it, and a line joins only runs of one method (same method, N_total varying), so a
    line never mixes a change of method with a change of batch size."""
    from matplotlib.ticker import FuncFormatter

    plt = _figure()
    dot = _dot(data.frame)
    if not dot.n_total.max() > 0:  # NaN too: no NDCG-evaluated run (an answers-only grid)
        return _empty(out, "ndcg_vs_batch", "no trained run in this grid", record)
    trained = dot[dot.n_total > 0]
    datasets = list(trained.dataset.unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.6 * len(datasets), 4.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        rows = trained[trained.dataset == dataset]
        x = _dodged({run: float(g.n_total.max()) for run, g in rows.groupby("run", sort=False)})
        _reference_band(ax, data, dataset)
        estimates = {run: data.estimate(dataset, run, rows=g) for run, g in rows.groupby("run", sort=False)}
        for run, estimate in estimates.items():
            _point(ax, data, run, x[run], estimate, label=run)
        styles = iter(["-", "--", ":", "-."] * 8)
        for method, g in rows.groupby("method", sort=False):
            by_size = g.groupby("run", sort=False).agg(n=("n_total", "max")).sort_values("n")
            if by_size.n.nunique() < 2:
                continue
            ax.plot([x[run] for run in by_size.index], [estimates[run][0] for run in by_size.index], color="0.5",
                    lw=1, ls=next(styles), zorder=0, label=f"{method} (same method)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(set(rows.n_total.astype(float))))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 32, not 2^5
        ax.set_xlabel("effective batch size N_total = N_local × K (log scale;\nruns at one N_total side by side)")
        ax.set_ylabel("NDCG@10 (dot product)")
        ax.set_title(f"NDCG@10 against the effective batch size\n{data.subtitle([dataset])}", fontsize=10)
        ax.grid(color="0.92")
        # Below its own panel: each dataset has its own reference level; beside, it would cover the next.
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.24), ncol=2)
    return _save(fig, out, "ndcg_vs_batch", record)


def accuracy_vs_cost(data: PlotData, out: Path, record: dict | None = None) -> Path:
    plt = _figure()
    if not _dot(data.frame).n_total.max() > 0:  # NaN too: no NDCG-evaluated run (an answers-only grid)
        return _empty(out, "accuracy_vs_cost", "no trained NDCG-evaluated run in this grid", record)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, column, xlabel in zip(axes, ("sec_per_update", "peak_mem_mb"),
                                  ("seconds per optimizer update", "peak training memory (MB)")):
        _trained_points(ax, data, column)
        ax.set_xlim(left=0, right=1.12 * max(1e-9, float(_dot(data.frame)[column].astype(float).max())))
        ax.set_xlabel(xlabel + " (axis from 0)")
    axes[0].set_title("NDCG@10 against training time", fontsize=10)
    axes[1].set_title("NDCG@10 against training memory", fontsize=10)
    axes[1].set_ylabel("")
    fig.suptitle(data.subtitle(), fontsize=10)
    handles, labels = axes[1].get_legend_handles_labels()
    if labels:
        fig.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(labels)))
    return _save(fig, out, "accuracy_vs_cost", record)


def readable_log_ticks(ax, low: float, high: float) -> None:
    """Ticks a person can read on a log y axis: plain numbers (1.2, not 10^0) at 1-2-5 steps, and,
    when the data span less than a decade, evenly spaced values inside it as well."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

    decades = np.arange(np.floor(np.log10(low)), np.ceil(np.log10(high)) + 1)
    ticks = [m * 10 ** d for d in decades for m in (1, 2, 5)]
    if high / low < 10:
        ticks += [t for t in MaxNLocator(nbins=6).tick_values(low, high) if t > 0]
    ticks = sorted({float(f"{t:.3g}") for t in ticks if low / 1.05 <= t <= high * 1.05})
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def grad_norm_ratio(data: PlotData, ratios: dict[tuple[str, str], list[Curve]], out: Path,
                    examples_per_update: dict[tuple[str, str], int] | None = None, record: dict | None = None) -> Path:
    """`ratios` maps (dataset, run) to its (step, ratio) curves, one per seed: seeds are thin lines
    under their mean in the run's colour. With `examples_per_update` the x axis is training
    examples seen, so runs with 8x fewer, larger updates share the axis with small-batch runs."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    values = []
    for (dataset, run), seeds in ratios.items():
        scale = (examples_per_update or {}).get((dataset, run), 1)
        curves = [c for c in seeds if len(c[0])]
        if not curves:
            continue
        colour, gid = data.colour(run), RUN_GID + run
        if len(curves) > 1:
            for steps, ratio in curves:
                ax.plot(steps * scale, ratio, color=colour, lw=0.6, alpha=0.35, gid=gid)
        length = min(len(steps) for steps, _ in curves)
        mean = np.mean([ratio[:length] for _, ratio in curves], axis=0)
        values += [r for _, c in curves for r in c if r > 0]
        label = (run if len(ratios) == len({r for _, r in ratios}) else f"{run} ({dataset})") + \
            (f" (mean of {len(curves)} seeds)" if len(curves) > 1 else "")
        ax.plot(curves[0][0][:length] * scale, mean, color=colour, lw=1.6, label=label, gid=gid)
    if not values:
        plt.close(fig)
        return _empty(out, "grad_norm_ratio", "no trained run with untied encoders in this grid", record)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    # A ratio reads symmetrically on a log axis, and single-update spikes (a near-zero query
    # gradient) would otherwise flatten every other curve onto the baseline.
    ax.set_yscale("log")
    readable_log_ticks(ax, min(min(values), 1.0), max(max(values), 1.0))
    ax.grid(axis="y", color="0.92")
    ax.set_xlabel("training examples seen" if examples_per_update else "optimizer step")
    ax.set_ylabel("||∇ passage|| / ||∇ query|| (log scale)")
    ax.set_title(f"Gradient-norm ratio of the two encoders\n{data.subtitle(sorted({d for d, _ in ratios}))}", fontsize=10)
    # Spikes reach every corner of the axes, so any legend inside would hide some run's curve.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return _save(fig, out, "grad_norm_ratio", record)


def dn_lambda(data: PlotData, out: Path, record: dict | None = None) -> Path:
    """Every scoring other than the dot product against its weight (DN's λ, NNN's α, one curve per
    k; 0 is the dot product), in the run's colour, with intervals; a line only where a scoring
    has two or more weights (three points with the dot product), and scorings without a weight
    (DN*'s repeats aside, QB-Norm per β) as dotted levels."""
    plt = _figure()
    frame = data.frame
    shifted = frame[frame.scoring != BASELINE]
    if shifted.empty:
        return _empty(out, "dn_lambda", "no scoring besides the dot product in this grid", record)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    # Runs side by side around each λ, so that equal values do not hide each other's intervals.
    runs = list(dict.fromkeys(shifted.run))
    width = 0.03 * max(0.1, float(shifted["lambda"].max() if shifted["lambda"].notna().any() else 0.1))
    for (dataset, run, scoring), g in shifted.groupby(["dataset", "run", "scoring"], sort=False):
        cls, setting = scoring_class(scoring), scoring.partition("[")[2].rstrip("]")
        dodge = (runs.index(run) - (len(runs) - 1) / 2) * width + width * cls.offset
        label = f"{run} {cls.label}" + (f" {setting}" if setting else "") + \
            (f" ({cls.parameter})" if cls.uses_lambda and cls.parameter != "λ" else "") + \
            (f" ({dataset})" if frame.dataset.nunique() > 1 else "")
        dot_rows = frame[(frame.dataset == dataset) & (frame.run == run) & (frame.scoring == BASELINE)]
        if not scoring_class(scoring).uses_lambda:
            ax.axhline(float(g["ndcg@10"].mean()), color=data.colour(run), ls=":", label=label, gid=RUN_GID + run)
            continue
        marker, style = cls.marker
        lambdas = sorted(g["lambda"].dropna().unique())
        points = [(0.0, data.estimate(dataset, run, rows=dot_rows))]
        points += [(lam, data.estimate(dataset, run, from_row(scoring, lam).name, rows=g[g["lambda"] == lam]))
                   for lam in lambdas]
        for i, (lam, est) in enumerate(points):
            _point(ax, data, run, lam + dodge, est, fmt=marker if lam else "o", label=label if i == 1 else None)
        if len(lambdas) >= 2:
            ax.plot([lam + dodge for lam, _ in points], [e[0] for _, e in points], color=data.colour(run), ls=style,
                    lw=1, gid=RUN_GID + run)
    ax.set_xlabel("DN's λ, NNN's α (0 = plain dot product; runs side by side around each value)")
    ax.set_ylabel("NDCG@10")
    ax.set_title(f"NDCG@10 of each scoring against its weight, 95 % intervals\n{data.subtitle()}", fontsize=10)
    ax.grid(color="0.92")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _save(fig, out, "dn_lambda", record)


def draw_all(data: PlotData, ratios: dict[tuple[str, str], list[Curve]], out: Path,
             examples_per_update: dict[tuple[str, str], int] | None = None) -> dict[str, Path]:
    """Every plot, plus colours.json: {plot: {run: [colours drawn for it]}} and the grid's map."""
    record: dict = {}
    paths = {
        "ndcg_per_run": ndcg_per_run(data, out, record),
        "ndcg_vs_batch": ndcg_vs_batch(data, out, record),
        "accuracy_vs_cost": accuracy_vs_cost(data, out, record),
        "grad_norm_ratio": grad_norm_ratio(data, ratios, out, examples_per_update, record),
        "dn_lambda": dn_lambda(data, out, record),
    }
    assert tuple(paths) == PLOTS
    atomic_write_text(out / COLOURS_FILE, json.dumps({"run_colours": data.colours, "plots": record}, indent=1))
    return paths
