"""Result plots (PNG and SVG) drawn from the aggregated summary frame and the training logs.

Each function writes `<name>.png` and `<name>.svg` into the plots folder and returns the PNG
path; the captions used by the Snakemake report live in CAPTIONS.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

CAPTIONS = {
    "ndcg_per_run": "NDCG@10 per run (plain dot product), mean over seeds with the sample std as error bar.",
    "ndcg_vs_batch": "NDCG@10 against the effective batch size N_total = N_local x K (dot product; "
                     "zero-shot omitted).",
    "ndcg_vs_memory": "NDCG@10 against the peak training memory of the run (CPU RSS or CUDA allocated).",
    "grad_norm_ratio": "Gradient-norm ratio ||grad passage encoder|| / ||grad query encoder|| at each optimizer "
                       "update against training examples seen (untied encoders; ContAccum paper Fig. 5; thin "
                       "lines are seeds, bold their mean). A passage-only bank drifts upward; "
                       "dual banks stay near 1.",
    "dn_lambda": "NDCG@10 of Distribution Normalization against lambda (lambda 0 = plain dot product).",
}


def _figure():
    import matplotlib

    matplotlib.use("Agg")
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


def ndcg_per_run(frame: pd.DataFrame, out: Path) -> Path:
    plt = _figure()
    dot = frame[frame.scoring == "dot"]
    datasets = list(dot.dataset.unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(5, 1.1 * dot.run.nunique()) * len(datasets), 3.6),
                             squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        stats = dot[dot.dataset == dataset].groupby("run", sort=False)["ndcg@10"].agg(["mean", "std", "count"])
        ax.bar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), capsize=3, color="#4C72B0")
        ax.set_title(dataset)
        ax.set_ylabel("NDCG@10")
        ax.tick_params(axis="x", rotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    return _save(fig, out, "ndcg_per_run")


def ndcg_vs_cost(frame: pd.DataFrame, out: Path, column: str, name: str, xlabel: str) -> Path:
    plt = _figure()
    dot = frame[(frame.scoring == "dot") & (frame.n_total > 0)]
    if dot.empty:
        return _empty(out, name, "no trained run in this grid")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for (dataset, run), g in dot.groupby(["dataset", "run"], sort=False):
        ax.errorbar(g[column].mean(), g["ndcg@10"].mean(), yerr=g["ndcg@10"].std(ddof=1) if len(g) > 1 else 0,
                    fmt="o", capsize=3, label=f"{run} ({dataset})" if dot.dataset.nunique() > 1 else run)
    if column == "n_total":
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("NDCG@10")
    ax.legend(fontsize=7, loc="best")
    return _save(fig, out, name)


def _empty(out: Path, name: str, why: str) -> Path:
    """A placeholder so every declared plot exists (Snakemake outputs must), saying why it is empty."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True)
    return _save(fig, out, name)


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
    ax.set_xlabel("training examples seen" if examples_per_update else "optimizer step")
    ax.set_ylabel("||∇ passage|| / ||∇ query||")
    ax.legend(fontsize=7)
    return _save(fig, out, "grad_norm_ratio")


def dn_lambda(frame: pd.DataFrame, out: Path) -> Path:
    plt = _figure()
    dn = frame[frame.scoring.isin(["dn", "dn*"])]
    if dn.empty:
        return _empty(out, "dn_lambda", "no DN scoring in this grid")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for (dataset, run, scoring), g in dn.groupby(["dataset", "run", "scoring"], sort=False):
        dot = frame[(frame.dataset == dataset) & (frame.run == run) & (frame.scoring == "dot")]["ndcg@10"].mean()
        curve = g.groupby("lambda")["ndcg@10"].mean()
        xs, ys = [0.0, *curve.index.tolist()], [dot, *curve.values.tolist()]
        ax.plot(xs, ys, marker="o", label=f"{run} {scoring}")
    ax.set_xlabel("λ")
    ax.set_ylabel("NDCG@10")
    ax.legend(fontsize=7)
    return _save(fig, out, "dn_lambda")


PLOTS = tuple(CAPTIONS)


def draw_all(frame: pd.DataFrame, train_logs: dict[str, list[Path]], out: Path,
             examples_per_update: dict[str, int] | None = None) -> dict[str, Path]:
    return {
        "ndcg_per_run": ndcg_per_run(frame, out),
        "ndcg_vs_batch": ndcg_vs_cost(frame, out, "n_total", "ndcg_vs_batch", "effective batch size N_total"),
        "ndcg_vs_memory": ndcg_vs_cost(frame, out, "peak_mem_mb", "ndcg_vs_memory", "peak training memory (MB)"),
        "grad_norm_ratio": grad_norm_ratio(train_logs, out, examples_per_update),
        "dn_lambda": dn_lambda(frame, out),
    }
