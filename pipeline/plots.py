"""Result plots (PNG and SVG) drawn from the aggregated summary frame and the training logs.

Each function writes `<name>.png` and `<name>.svg` into the plots folder and returns the PNG
path. `PLOTS` lists them in report order; each has its caption in report/<name>.rst (the one
place captions live: the Snakemake report shows them, and tests check that every plot has one).

Conventions: NDCG@10 under the plain dot product unless a plot says otherwise; mean over seeds,
with the sample std as an error bar only when a run has two or more seeds; the zero-shot model
(a run with method `none`) is a dashed reference line wherever it is not a point of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

PLOTS = ("ndcg_per_run", "ndcg_vs_batch", "accuracy_vs_cost", "grad_norm_ratio", "dn_lambda")


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    # Text stays text in SVG (searchable, accessible, smaller) instead of glyph outlines.
    matplotlib.rcParams["svg.fonttype"] = "none"
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, name: str) -> Path:
    from .common import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "svg"):
        with atomic_path(out / f"{name}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=120, bbox_inches="tight")
    _figure().close(fig)
    return out / f"{name}.png"


def _empty(out: Path, name: str, why: str) -> Path:
    """A placeholder so every declared plot exists (Snakemake outputs must), saying why it is empty."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True)
    return _save(fig, out, name)


def _dot(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame.scoring == "dot"]


def _stats(rows: pd.DataFrame, column: str) -> tuple[float, float | None]:
    """Mean and, with two or more seeds, the sample std (None otherwise: no error bar)."""
    values = rows[column].astype(float)
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def _zero_shot(frame: pd.DataFrame, dataset: str) -> float | None:
    rows = frame[(frame.dataset == dataset) & (frame.scoring == "dot") & (frame.method == "none")]
    return float(rows["ndcg@10"].mean()) if len(rows) else None


def _reference_line(ax, value: float | None) -> None:
    if value is not None:
        ax.axhline(value, color="grey", lw=1, ls="--", label=f"zero-shot {value:.4f}")


def ndcg_per_run(frame: pd.DataFrame, out: Path) -> Path:
    plt = _figure()
    dot = _dot(frame)
    if dot.empty:  # every dataset of the grid is answer-evaluated (no NDCG@10)
        return _empty(out, "ndcg_per_run", "no NDCG-evaluated (qrels) dataset in this grid")
    datasets = list(dot.dataset.unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(5, 1.1 * dot.run.nunique()) * len(datasets), 3.8),
                             squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        rows = dot[dot.dataset == dataset]
        runs = list(dict.fromkeys(rows.run))
        stats = [_stats(rows[rows.run == run], "ndcg@10") for run in runs]
        means = [m for m, _ in stats]
        errors = [s or 0.0 for _, s in stats]
        bars = ax.bar(runs, means, yerr=errors if any(s is not None for _, s in stats) else None, capsize=3,
                      color=["#999999" if (rows[rows.run == r].method == "none").all() else "#4C72B0" for r in runs])
        for bar, mean, (_, std) in zip(bars, means, stats):
            label = f"{mean:.4f}" + (f"\n±{std:.4f}" if std is not None else "")
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, mean), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7)
        # Differences between runs are a few points of NDCG: start the axis near the data, not at 0.
        low = min(m - e for m, e in zip(means, errors))
        high = max(m + e for m, e in zip(means, errors))
        pad = max(0.01, 0.25 * (high - low))
        ax.set_ylim(max(0.0, low - pad), min(1.0, high + 2 * pad))
        _reference_line(ax, _zero_shot(frame, dataset))
        ax.set_title(f"NDCG@10 per run ({dataset}, dot product)")
        ax.set_ylabel("NDCG@10")
        ax.tick_params(axis="x", rotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
        if _zero_shot(frame, dataset) is not None:
            ax.legend(fontsize=7, loc="lower right")
    return _save(fig, out, "ndcg_per_run")


def _points(ax, frame: pd.DataFrame, column: str) -> None:
    """One point per trained run: x = mean of `column`, y = mean NDCG@10 (error bar with seeds)."""
    dot = _dot(frame)
    trained = dot[dot.n_total > 0]
    for (dataset, run), g in trained.groupby(["dataset", "run"], sort=False):
        y, err = _stats(g, "ndcg@10")
        x = float(g[column].astype(float).mean())
        label = f"{run} ({dataset})" if dot.dataset.nunique() > 1 else run
        ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, label=label)
        ax.annotate(f"{label} {y:.3f}", (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
    if dot.dataset.nunique() == 1:
        _reference_line(ax, _zero_shot(frame, dot.dataset.iloc[0]))
    ax.margins(x=0.2, y=0.15)  # room for the point labels
    ax.set_ylabel("NDCG@10")


def ndcg_vs_batch(frame: pd.DataFrame, out: Path) -> Path:
    plt = _figure()
    if _dot(frame).n_total.max() <= 0:
        return _empty(out, "ndcg_vs_batch", "no trained run in this grid")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    _points(ax, frame, "n_total")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("effective batch size N_total = N_local × K")
    ax.set_title("NDCG@10 against the effective batch size")
    ax.legend(fontsize=7, loc="best")
    return _save(fig, out, "ndcg_vs_batch")


def accuracy_vs_cost(frame: pd.DataFrame, out: Path) -> Path:
    plt = _figure()
    if _dot(frame).n_total.max() <= 0:
        return _empty(out, "accuracy_vs_cost", "no trained run in this grid")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, column, xlabel in zip(axes, ("sec_per_update", "peak_mem_mb"),
                                  ("seconds per optimizer update", "peak training memory (MB)")):
        _points(ax, frame, column)
        ax.set_xlabel(xlabel)
    axes[0].set_title("NDCG@10 against training time")
    axes[1].set_title("NDCG@10 against training memory")
    axes[1].legend(fontsize=7, loc="best")
    return _save(fig, out, "accuracy_vs_cost")


def _read_ratio(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if np.isfinite(r.get("grad_norm_ratio", np.nan))]
    return np.array([r["step"] for r in rows], dtype=float), np.array([r["grad_norm_ratio"] for r in rows])


def grad_norm_ratio(logs: dict[str, list[Path]], out: Path,
                    examples_per_update: dict[str, int] | None = None) -> Path:
    """`logs` maps a run label to its train_log.jsonl files, one per seed: seeds are drawn as
    thin lines under their mean in one colour. With `examples_per_update` the x axis is training
    examples seen, so runs with 8x fewer, larger updates share the axis with small-batch runs."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    drawn = False
    for colour, (label, paths) in enumerate(logs.items()):
        scale = (examples_per_update or {}).get(label, 1)
        curves = [c for c in map(_read_ratio, paths) if len(c[0])]
        if not curves:
            continue
        drawn = True
        if len(curves) > 1:
            for steps, ratio in curves:
                ax.plot(steps * scale, ratio, color=f"C{colour}", lw=0.6, alpha=0.35)
        length = min(len(steps) for steps, _ in curves)
        mean = np.mean([ratio[:length] for _, ratio in curves], axis=0)
        suffix = f" (mean of {len(curves)} seeds)" if len(curves) > 1 else ""
        ax.plot(curves[0][0][:length] * scale, mean, color=f"C{colour}", lw=1.6, label=label + suffix)
    if not drawn:
        plt.close(fig)
        return _empty(out, "grad_norm_ratio", "no trained run with untied encoders in this grid")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    # A ratio reads symmetrically on a log axis, and single-update spikes (a near-zero query
    # gradient) would otherwise flatten every other curve onto the baseline.
    ax.set_yscale("log")
    ax.set_xlabel("training examples seen" if examples_per_update else "optimizer step")
    ax.set_ylabel("||∇ passage|| / ||∇ query||")
    ax.set_title("Gradient-norm ratio of the two encoders")
    ax.legend(fontsize=7)
    return _save(fig, out, "grad_norm_ratio")


def dn_lambda(frame: pd.DataFrame, out: Path) -> Path:
    """Every scoring other than the dot product: scorings with a swept parameter as curves over
    it (DN's lambda, NNN's alpha, one curve per k; 0 is the dot product for both), the others
    (DN*, QB-Norm per beta) as dotted levels."""
    from .scorings import scoring_class

    plt = _figure()
    shifted = frame[frame.scoring != "dot"]
    if shifted.empty:
        return _empty(out, "dn_lambda", "no scoring besides the dot product in this grid")
    fig, ax = plt.subplots(figsize=(6, 4))
    for colour, ((dataset, run, scoring), g) in enumerate(shifted.groupby(["dataset", "run", "scoring"], sort=False)):
        dot = frame[(frame.dataset == dataset) & (frame.run == run) & (frame.scoring == "dot")]["ndcg@10"].mean()
        cls, setting = scoring_class(scoring), scoring.partition("[")[2].rstrip("]")
        label = f"{run} {cls.label}" + (f" {setting}" if setting else "") + \
            (f" ({cls.parameter})" if cls.uses_lambda and cls.parameter != "λ" else "") + \
            (f" ({dataset})" if frame.dataset.nunique() > 1 else "")
        if cls.uses_lambda:
            curve = g.groupby("lambda")["ndcg@10"].mean()
            ax.plot([0.0, *curve.index.tolist()], [dot, *curve.values.tolist()], marker="o", color=f"C{colour}",
                    label=label)
        else:
            ax.axhline(float(g["ndcg@10"].mean()), color=f"C{colour}", ls=":", label=label)
    ax.set_xlabel("DN's λ, NNN's α (0 = plain dot product)")
    ax.set_ylabel("NDCG@10")
    ax.set_title("NDCG@10 of each scoring against its weight")
    ax.legend(fontsize=7)
    return _save(fig, out, "dn_lambda")


def draw_all(frame: pd.DataFrame, train_logs: dict[str, list[Path]], out: Path,
             examples_per_update: dict[str, int] | None = None) -> dict[str, Path]:
    paths = {
        "ndcg_per_run": ndcg_per_run(frame, out),
        "ndcg_vs_batch": ndcg_vs_batch(frame, out),
        "accuracy_vs_cost": accuracy_vs_cost(frame, out),
        "grad_norm_ratio": grad_norm_ratio(train_logs, out, examples_per_update),
        "dn_lambda": dn_lambda(frame, out),
    }
    assert tuple(paths) == PLOTS
    return paths
