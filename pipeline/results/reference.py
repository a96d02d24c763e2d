"""Publish a finished grid's tables as a committed reference, and check a re-run against it.

  publish  copy <results>/<experiment>/tables (summary, headline, dn, index) and its plots/*.png into
           a reference folder (e.g. results/reference/scifact) with provenance.json (git commit,
           config sha256, dataset checksums). It refuses tables that belong to another grid.
  replot   redraw a reference folder's plots from its summary.csv, per_query.csv and grad_norm.csv
           (after a change to the plots; no grid is re-run), with the config provenance.json names
  check    compare a results summary.csv against a reference summary.csv row by row, matched
           on dataset x run x seed x scoring x lambda, and fail if any metric differs by more
           than --tol. A row whose run collapsed both in the reference and in the re-run (its
           training loss ended at chance, diagnostics.csv's loss / chance >= 0.9) is reported as
           a reproduced collapse instead (--strict fails it too): a collapsed model embeds every
           passage near one point, so its ranking is decided by the last bits of the CPU's float
           kernels and its metrics reproduce only on the kernels that made it (pipeline.core.numerics).
           Re-run one row, then check it:

    snakemake --cores 2 --configfile config/scifact.yaml --config 'only_runs=[contaccum-8x8]' 'seeds=[13]'
    python -m pipeline.results.reference check --config config/scifact.yaml --reference results/reference/scifact/summary.csv

           (--config reads that experiment's results/<experiment>/tables/summary.csv; --results names
           another summary.csv)
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd

from pipeline.core import config as pcfg
from pipeline.results.grid import KEY_COLUMNS
from pipeline.core.common import (PipelineError, atomic_dir, atomic_path, atomic_write_json, command_parser, git,
                                  git_commit, log, read_json, run_main, sha256_file)
from pipeline.core.layout import Layout
from pipeline.core import numerics
from pipeline.results import plot_inputs
from pipeline.results.aggregate import draw_plots
from pipeline.results.diagnostics import LOSS_OVER_CHANCE

COLLAPSED_AT = 0.9  # loss / chance at or above this: training ended where every candidate scores alike
TABLES = ("grid.json", "summary.md", "summary.csv", "headline.md", "dn.md", "dn.csv", "index.md", "index.csv", "diagnostics.md",
          "diagnostics.csv", plot_inputs.PER_QUERY, plot_inputs.GRAD_NORM)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not a readable CSV ({exc})") from None


def read_summary(path: Path, metrics: list[str]) -> pd.DataFrame:
    """A summary.csv with its key columns normalised so two files can be joined (lambda NaN -> '')."""
    if not path.is_file():
        raise PipelineError(f"{path}: file not found (expected a summary.csv written by pipeline.results.aggregate)")
    frame = _read_csv(path)
    missing = [c for c in KEY_COLUMNS + metrics if c not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {missing}; expected a summary.csv with "
                            f"{KEY_COLUMNS} and the metric column(s)")
    frame = frame[KEY_COLUMNS + metrics].copy()
    frame["lambda"] = frame["lambda"].map(lambda v: "" if pd.isna(v) else f"{float(v):g}")
    frame["seed"] = frame["seed"].astype(int)
    frame[["dataset", "run", "scoring"]] = frame[["dataset", "run", "scoring"]].astype(str)
    return frame


def collapsed_runs(diagnostics: Path) -> set[str]:
    """The runs whose training ended at chance on every dataset they trained on, from a
    diagnostics.csv (none if the file or its loss / chance column is missing). Keyed by run, not
    by dataset: a model trained on one dataset is also evaluated on others."""
    if not diagnostics.is_file():
        return set()
    frame = _read_csv(diagnostics)
    if LOSS_OVER_CHANCE not in frame.columns:
        return set()
    at_chance = (frame[LOSS_OVER_CHANCE] >= COLLAPSED_AT).groupby(frame["run"].astype(str)).all()
    return set(at_chance[at_chance].index)


def compare(reference: Path, results: Path, metrics: list[str], tol: float) -> pd.DataFrame:
    """Rows present in both files with the absolute difference of each metric, and whether the
    row's run collapsed in both (read from the diagnostics.csv beside each summary). Raises when
    the results share no row with the reference (a typo in the run name, or the wrong table)."""
    ref, new = read_summary(reference, metrics), read_summary(results, metrics)
    joined = new.merge(ref, on=KEY_COLUMNS, how="inner", suffixes=("", "_reference"))
    if joined.empty:
        runs = sorted(set(new["run"]))
        raise PipelineError(f"{results}: none of its rows (runs {runs}) is in {reference}; "
                            f"re-run a run x seed of the grid the reference was published from")
    for metric in metrics:
        joined[f"{metric}_diff"] = (joined[metric] - joined[f"{metric}_reference"]).abs()
    joined["ok"] = (joined[[f"{m}_diff" for m in metrics]] <= tol).all(axis=1)
    both = collapsed_runs(reference.parent / "diagnostics.csv") & collapsed_runs(results.parent / "diagnostics.csv")
    joined["collapsed"] = joined["run"].isin(both)
    return joined


def _check_grid(summary: Path, cfg: dict) -> None:
    """Refuse to publish tables that are not this config's grid (a run with only_runs or other seeds)."""
    frame = read_summary(summary, [])
    found = set(frame[["dataset", "run", "seed"]].itertuples(index=False, name=None))
    expected = {(job.dataset, job.run, job.seed) for job in pcfg.jobs(cfg)}
    if found != expected:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise PipelineError(f"{summary}: its rows are not the grid of this config (missing {missing[:5]}, "
                            f"unexpected {extra[:5]}); run the grid first, then publish")


def _dirty(paths: list[str]) -> bool:
    status = git("status", "--porcelain", "--", *(f":/{p}" for p in paths))
    return status is None or bool(status.strip())


def publish_reference(results: Path, config_path: Path, dest: Path) -> list[Path]:
    cfg = pcfg.load(config_path)
    layout = Layout.for_config(cfg, results)
    tables, plots = layout.tables, layout.plots
    _check_grid(tables / "summary.csv", cfg)
    datasets = {}
    for name in cfg["datasets"]:
        manifest = read_json(layout.manifest(name))
        datasets[name] = {key: manifest[key] for key in ("source", "counts", "input_sha256") if key in manifest}
    written = []
    with atomic_dir(dest) as tmp:
        for name in TABLES:
            if (tables / name).is_file():
                shutil.copy2(tables / name, tmp / name)
                written.append(dest / name)
        for plot in sorted(plots.glob("*.png")):
            shutil.copy2(plot, tmp / plot.name)
            written.append(dest / plot.name)
        atomic_write_json(tmp / "provenance.json", {
            "git_commit": git_commit(),
            "code_modified_since_commit": _dirty(["pipeline", "rules", "Snakefile", "config"]),
            "config": str(config_path), "config_sha256": sha256_file(config_path),
            "datasets": datasets, "numerics": numerics.platform(),
        })
        written.append(dest / "provenance.json")
    return written


def replot_reference(folder: Path, config_path: Path | None = None) -> list[Path]:
    provenance = read_json(folder / "provenance.json")
    config_path = config_path or Path(provenance["config"])
    if not config_path.is_file():
        raise PipelineError(f"{config_path}: no such config ({folder / 'provenance.json'} names it); run from the "
                            f"repository root or give --config")
    if sha256_file(config_path) != provenance.get("config_sha256"):
        log.warning("%s differs from the config %s was published with (sha256): its runs' order and reference "
                    "run decide colours and bands", config_path, folder)
    frame = pd.read_csv(folder / "summary.csv", dtype={"dataset": str, "run": str, "scoring": str})
    written = []
    with tempfile.TemporaryDirectory() as scratch:
        for plot in draw_plots(pcfg.load(config_path), frame, plot_inputs.read(folder), Path(scratch)).values():
            with atomic_path(folder / plot.name) as tmp:
                shutil.copy2(plot, tmp)
            written.append(folder / plot.name)
    return written


def _rerun_summary(args) -> Path:
    if args.results:
        return Path(args.results)
    if not args.config:
        raise PipelineError("check: give --config (the re-run's config; its experiment's summary.csv is read) "
                            "or --results (a summary.csv)")
    return Layout.for_config(pcfg.load(args.config)).tables / "summary.csv"


def main(argv: list[str] | None = None) -> None:
    parser, sub = command_parser("python -m pipeline.results.reference", __doc__)
    pub = sub.add_parser("publish", help="copy a finished grid's tables and plots into a reference folder")
    pub.add_argument("--config", required=True, help="the experiment config the grid ran with")
    pub.add_argument("--to", required=True, help="reference folder, e.g. results/reference/scifact")
    pub.add_argument("--results", default="results", help="results folder (default: results)")
    rep = sub.add_parser("replot", help="redraw a reference folder's plots from its tables and plot inputs")
    rep.add_argument("--reference", required=True, help="reference folder, e.g. results/reference/scifact")
    rep.add_argument("--config", help="the grid's config (default: the one its provenance.json names)")
    chk = sub.add_parser("check", help="compare a re-run's summary.csv with a reference summary.csv")
    chk.add_argument("--reference", required=True, help="reference summary.csv")
    chk.add_argument("--config", help="the re-run's config: compare its results/<experiment>/tables/summary.csv")
    chk.add_argument("--results", help="summary.csv of the re-run (instead of --config)")
    chk.add_argument("--metric", action="append", dest="metrics",
                     help="metric column to compare; repeat for several (default: ndcg@10)")
    chk.add_argument("--tol", type=float, default=1e-4, help="largest allowed absolute difference (default: 1e-4)")
    chk.add_argument("--strict", action="store_true",
                     help="fail rows whose run collapsed in both too (by default a reproduced collapse passes)")
    args = parser.parse_args(argv)

    if args.command == "check":
        check(Path(args.reference), _rerun_summary(args), args.metrics or ["ndcg@10"], args.tol, args.strict)
        return
    if args.command == "publish":
        written = publish_reference(Path(args.results), Path(args.config), Path(args.to))
    else:
        written = replot_reference(Path(args.reference), args.config and Path(args.config))
    for path in written:
        print(f"wrote {path}")


def check(reference: Path, results: Path, metrics: list[str], tol: float, strict: bool = False) -> None:
    joined = compare(reference, results, metrics, tol)
    shown = joined[KEY_COLUMNS + [c for m in metrics for c in (f"{m}_reference", m, f"{m}_diff")] + ["ok", "collapsed"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.5f}"))
    differ = joined[~joined["ok"]]
    collapse = differ[differ["collapsed"] & (not strict)]
    bad = differ.drop(collapse.index)
    if not differ.empty:
        print(_kernels_note(reference))
    if not bad.empty:
        raise PipelineError(f"{len(bad)} of {len(joined)} row(s) differ from {reference} by more than "
                            f"{tol:g}: {_names(bad)}")
    if not collapse.empty:
        print(f"{len(collapse)} row(s) differ by more than {tol:g}, but their run collapsed in the reference and "
              f"in this re-run (loss / chance >= {COLLAPSED_AT}: training ended at chance): {_names(collapse)}. "
              f"A collapsed model embeds every passage near one point, so its ranking is decided by the last "
              f"bits of the float kernels; the collapse is reproduced, its metrics are not comparable "
              f"(--strict fails these rows)")
    print(f"{len(joined) - len(differ)} row(s) match {reference} within {tol:g}"
          + (f"; {len(collapse)} reproduce a collapse" if not collapse.empty else ""))


def _names(rows: pd.DataFrame) -> str:
    return ", ".join(f"{r.run} seed {r.seed} {r.scoring}{'@' + r['lambda'] if r['lambda'] else ''}"
                     for _, r in rows.iterrows())


def _kernels_note(reference: Path) -> str:
    """Which float kernels made the reference (provenance.json beside it) and which ran here."""
    provenance = reference.parent / "provenance.json"
    made = read_json(provenance).get("numerics") if provenance.is_file() else None
    show = lambda platform: ", ".join(f"{key} {value}" for key, value in platform.items())
    return (f"float kernels of the reference: {show(made) if made else 'not recorded'}\n"
            f"float kernels here:             {show(numerics.platform())}")


if __name__ == "__main__":
    run_main(main)
