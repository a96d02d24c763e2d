"""Pilot regimes: what one update of each run costs, and which regime separates its runs on dev.

A pilot config (e.g. config/separation-pilot.yaml) is an ordinary grid whose dataset evaluates a
dev split (`test_split: dev`) and whose `evaluation.compare` pairs each small-batch run with its
regime's large-batch reference. Two subcommands:

  time   train every trained run of the config for a few updates on the prepared data folder and
         report the CPU seconds of one update, the updates the recipe asks for, and the CPU time
         the whole grid's training would take (runs x seeds; encoding and evaluation not counted).
  table  after `snakemake --configfile <pilot>`: one line per compared pair from
         results/<experiment>/tables/summary.csv (dev NDCG@10 of both, effect, p after Holm, MDD, s/update),
         written to <results>/tables/pilot.md, the record README asks for of every pilot.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

from pipeline.core import config as pcfg
from pipeline.core.common import PipelineError, atomic_write_text, command_parser, log, run_main
from pipeline.core.layout import Layout
from pipeline.evaluation.scorings import BASELINE

TIMED_UPDATES = 3  # timed after a first update, which pays for lazy initialisation


def planned_updates(recipe: dict, examples: int, per_update: int) -> int:
    """The number of optimizer updates the training loop will take (pipeline.training.train's rule)."""
    return recipe["max_steps"] or max(1, math.ceil(recipe["epochs"] * (examples // per_update)))


def _train_cpu_seconds(data_dir: Path, recipe: dict, seed: int, updates: int) -> tuple[float, dict]:
    """CPU seconds of this process for a training run of `updates` updates, and its summary."""
    from pipeline.training.train import train  # why: loads torch; kept out of this module's import

    timed = {**recipe, "max_steps": updates, "checkpoint_every": 0, "warmup_steps": 0}
    with tempfile.TemporaryDirectory(prefix="pilot-time.") as tmp:
        start = time.process_time()
        summary = train(str(data_dir), tmp, timed, seed, progress=False)
        return time.process_time() - start, summary


def time_runs(cfg: dict, dataset: str, data_dir: Path, runs: list[str] | None = None) -> list[dict]:
    """The CPU seconds of one update of each trained run (first seed): a run of 1 + TIMED_UPDATES
    updates minus a run of 1, over TIMED_UPDATES, so loading and the first update drop out. CPU
    time, unlike the wall time in train_log.jsonl, does not grow when other jobs share the cores."""
    rows = []
    for run in runs or [r for r in cfg["runs"] if pcfg.is_trained(cfg, r)]:
        recipe = pcfg.recipe(cfg, run, dataset)
        if recipe.get("hard_negatives") or recipe["processes"] != 1:
            raise PipelineError(f"runs.{run}: `pilot time` times one process without mined hard negatives")
        # One-time costs of the process (imports, caches) land in whichever run comes first: the
        # short run is taken before and after the long one and the cheaper of the two kept.
        before, _ = _train_cpu_seconds(data_dir, recipe, cfg["seeds"][0], 1)
        longer, summary = _train_cpu_seconds(data_dir, recipe, cfg["seeds"][0], 1 + TIMED_UPDATES)
        after, _ = _train_cpu_seconds(data_dir, recipe, cfg["seeds"][0], 1)
        seconds = max(0.0, (longer - min(before, after)) / TIMED_UPDATES)
        updates = planned_updates(recipe, summary["examples"], summary["examples_per_update"])
        rows.append({"run": run, "n_total": summary["n_total"], "pairs_per_epoch": summary["examples"],
                     "updates": updates, "cpu_sec_per_update": seconds,
                     "wall_sec_per_update": summary["sec_per_update"],
                     "train_minutes": updates * seconds / 60,
                     "grid_minutes": updates * seconds * len(cfg["seeds"]) / 60,
                     "parameters": (summary.get("encoder") or {}).get("parameters")})
        log.info("%s: %.3f CPU s/update x %d updates = %.1f min per seed", run, seconds, updates,
                 updates * seconds / 60)
    return rows


def time_markdown(rows: list[dict], seeds: int) -> str:
    lines = ["| run | N_total | pairs/epoch | updates | CPU s/update | min per seed | params |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        params = f"{r['parameters'] / 1e6:.1f}M" if r["parameters"] else "–"
        lines.append(f"| {r['run']} | {r['n_total']} | {r['pairs_per_epoch']} | {r['updates']} | "
                     f"{r['cpu_sec_per_update']:.3f} | {r['train_minutes']:.1f} | {params} |")
    total = sum(r["grid_minutes"] for r in rows)
    lines.append(f"\nTraining the whole grid ({seeds} seed(s)): {total:.0f} CPU minutes of one single-threaded "
                 "process (corpus encoding and evaluation not counted).")
    return "\n".join(lines) + "\n"


def pilot_table(results: Path, cfg: dict) -> str:
    """The compared pairs of a finished pilot grid, from its summary.csv."""
    import pandas as pd

    path = Layout.for_config(cfg, results).tables / "summary.csv"
    if not path.is_file():
        raise PipelineError(f"{path}: no summary table; run the pilot grid first (snakemake --configfile ...)")
    frame = pd.read_csv(path)
    frame = frame[frame["scoring"] == BASELINE]
    if "p_holm" not in frame:
        raise PipelineError(f"{path}: no significance columns; set evaluation.compare or reference_run in the config")
    metric = next(c for c in ("ndcg@10", "NDCG@10") if c in frame)
    # One row per seed in summary.csv; the test columns repeat on each, the metric is averaged.
    frame = frame.groupby(["dataset", "run"], sort=False, dropna=False).agg(
        {metric: "mean", "sec_per_update": "mean", "reference": "first", "mean_diff": "first", "p_holm": "first",
         "mdd": "first"}).reset_index()
    lines = [f"| dataset | run | reference | {metric} run | {metric} reference | effect | p (Holm) | MDD | s/update |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, row in frame.dropna(subset=["p_holm"]).iterrows():
        ref = frame[(frame["dataset"] == row["dataset"]) & (frame["run"] == row["reference"])]
        ref_value = ref[metric].iloc[0] if len(ref) else float("nan")
        seconds = row.get("sec_per_update", float("nan"))
        lines.append(f"| {row['dataset']} | {row['run']} | {row['reference']} | {row[metric]:.4f} | {ref_value:.4f} | "
                     f"{row['mean_diff']:+.4f} | {row['p_holm']:.3g} | {row['mdd']:.4f} | {seconds:.3f} |")
    return (f"# Pilot: {cfg.get('experiment', '')} (dot scoring, split "
            f"{', '.join(sorted({d['test_split'] for d in cfg['datasets'].values()}))})\n\n" + "\n".join(lines) +
            "\n\neffect: run minus reference, per-query mean over seeds; MDD: the smallest difference the paired "
            "test detects with 80 % power.\n")


def main(argv: list[str] | None = None) -> None:
    parser, sub = command_parser("python -m pipeline.results.pilot", __doc__)
    t = sub.add_parser("time", help="time a few updates of every run of the config")
    t.add_argument("--config", required=True, help="the pilot config (YAML)")
    t.add_argument("--data", required=True, help="the dataset's normalised folder (results/data/<dataset>)")
    t.add_argument("--dataset", help="which dataset entry's recipe (default: the first)")
    t.add_argument("--runs", nargs="+", help="only these runs")
    t.add_argument("--json", help="also write the rows to this JSON file")
    s = sub.add_parser("table", help="the pilot's compared pairs from a finished grid")
    s.add_argument("--config", required=True)
    s.add_argument("--results", default="results", help="the grid's results folder (default results)")
    args = parser.parse_args(argv)
    cfg = pcfg.load(args.config)
    if args.command == "time":
        dataset = args.dataset or next(iter(cfg["datasets"]))
        rows = time_runs(cfg, dataset, Path(args.data), args.runs)
        print(time_markdown(rows, len(cfg["seeds"])))
        if args.json:
            atomic_write_text(Path(args.json), json.dumps(rows, indent=2) + "\n")
    else:
        text = pilot_table(Path(args.results), cfg)
        atomic_write_text(Layout.for_config(cfg, Path(args.results)).tables / "pilot.md", text)
        print(text)


if __name__ == "__main__":
    run_main(main)
