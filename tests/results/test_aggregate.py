"""pipeline.results.aggregate: a finished grid's tables and plots written from its job outputs
(summary.csv row for row the collected frame, every report table and plot present), through the
command line too."""

from __future__ import annotations

import shutil

import pandas as pd

from pipeline.core.layout import REPORT_TABLES
from pipeline.results import aggregate
from pipeline.results.plots import PLOTS


def test_tables_and_plots_of_a_finished_grid(zero_shot_grid, tmp_path, capsys):
    root, cfg, layout = zero_shot_grid
    copy = tmp_path / "results"
    shutil.copytree(layout.root, copy)
    grid = aggregate.write_tables(copy, cfg)
    tables = copy / layout.tables.relative_to(layout.root)
    summary = pd.read_csv(tables / "summary.csv")
    assert list(summary.columns) == list(grid.frame.columns) and len(summary) == len(grid.frame) == 2
    assert summary["ndcg@10"].tolist() == grid.frame["ndcg@10"].tolist()
    assert {f"{name}.md" for name in REPORT_TABLES} | {"dn.csv", "grid.json"} <= {p.name for p in tables.iterdir()}
    assert all(path.is_file() for path in grid.tables.values())
    assert set(PLOTS) <= {p.stem for p in (copy / layout.plots.relative_to(layout.root)).iterdir()}
    (tables / "summary.csv").unlink()
    aggregate.main(["--results", str(copy), "--config", str(root / "grid.yaml")])
    assert "Summary table:" in capsys.readouterr().out and (tables / "summary.csv").is_file()
