"""Move a results folder written before results were scoped per experiment (the flat layout:
results/models/..., results/tables/...) under a config's experiment (results/<experiment>/...).

    python -m pipeline.core.migrate --config <the config it was run with> [--results results] [--dry-run]

Only the paths the config's grid owns move, so another grid's leftovers stay where they are; the
shared folders (data, hardneg, downloads, ...) already live where pipeline.core.layout puts them.
Nothing is overwritten: if any destination exists, nothing moves. Renames keep modification
times, so Snakemake sees the moved outputs as up to date. The tool reads the config and the
layout, so it sits above both (the layout imports no config).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.core import config as pcfg
from pipeline.core.common import PipelineError, run_main
from pipeline.core.layout import Layout


def _grid_paths(old: Layout, new: Layout, cfg: dict) -> list[tuple[Path, Path]]:
    """(old, new) of every file or folder a config's grid owns, from the flat layout to its
    experiment's folder; per-job paths only, so another experiment's leftovers stay where they are."""
    pairs: list[tuple[Path, Path]] = []

    def add(rel_of):  # rel_of(layout) -> path, applied to both layouts
        pairs.append((rel_of(old), rel_of(new)))

    for dataset in dict.fromkeys(pcfg.model_dataset(cfg, d) for d in cfg["datasets"]):
        add(lambda lay: lay.shard_plan(dataset))
        add(lambda lay: lay.logs / "shards" / dataset / "plan.log")
        for run in cfg["runs"]:
            for tag in dict.fromkeys(pcfg.model_tag(cfg, run, seed) for seed in cfg["seeds"]):
                for part in (lambda lay: lay.model(dataset, run, tag), lambda lay: lay.index(dataset, run, tag),
                             lambda lay: lay.shards(dataset, run, tag),
                             lambda lay: lay.logs / "train" / dataset / run / f"{tag}.log",
                             lambda lay: lay.logs / "index" / dataset / run / f"{tag}.log",
                             lambda lay: lay.logs / "index" / dataset / run / tag):
                    add(part)
    for job in pcfg.jobs(cfg):
        add(lambda lay: lay.eval(job.dataset, job.run, job.seed))
        add(lambda lay: lay.logs / "evaluate" / job.dataset / job.run / f"seed{job.seed}.log")
    for part in (lambda lay: lay.tables, lambda lay: lay.plots, lambda lay: lay.report,
                 lambda lay: lay.logs / "aggregate.log"):
        add(part)
    return [(src, dst) for src, dst in dict.fromkeys(pairs) if src.exists()]


def migrate(cfg: dict, root: str | os.PathLike = "results", dry_run: bool = False) -> list[tuple[Path, Path]]:
    """Move a config's grid from the flat layout under its experiment; returns the (old, new) moves."""
    moves = _grid_paths(Layout(root), Layout.for_config(cfg, root), cfg)
    taken = [str(dst) for _, dst in moves if dst.exists()]
    if taken:
        raise PipelineError(f"{Layout.for_config(cfg, root).scope}: already holds {taken[:3]}"
                            f"{' ...' if len(taken) > 3 else ''}; migrating would overwrite them (move them away first)")
    if not dry_run:
        for src, dst in moves:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    return moves


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipeline.core.migrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the experiment config the flat results were produced with")
    parser.add_argument("--results", default="results", help="results folder (default: results)")
    parser.add_argument("--dry-run", action="store_true", help="only list what would move")
    args = parser.parse_args(argv)
    cfg = pcfg.load(args.config)
    moves = migrate(cfg, args.results, dry_run=args.dry_run)
    for src, dst in moves:
        print(f"{'would move' if args.dry_run else 'moved'} {src} -> {dst}")
    print(f"{len(moves)} path(s) of experiment {cfg['experiment']!r}" + (" (dry run)" if args.dry_run else ""))


if __name__ == "__main__":
    run_main(main)
