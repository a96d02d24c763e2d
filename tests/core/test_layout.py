"""Results scoped per experiment (pipeline.core.layout): shared, recipe-independent folders, every
recipe-dependent path under results/<experiment>/, and the migration of a flat results folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core import config as pcfg
from pipeline.core.common import PipelineError
from pipeline.core.layout import Layout, migrate

REPO = Path(__file__).resolve().parents[2]
CONFIG = {"experiment": "exp-a", "datasets": {"mini": {"source": "embedded"}}, "seeds": [1, 2],
          "runs": {"zeroshot": {"method": "none"}, "dpr-8": {"method": "inbatch", "batch_size": 8}}}


def test_recipe_dependent_paths_live_under_the_experiment_and_data_is_shared():
    a, b = Layout("results", "exp-a"), Layout("results", "exp-b")
    for path in (lambda lay: lay.model("mini", "dpr-8", "seed1"), lambda lay: lay.index("mini", "dpr-8", "seed1"),
                 lambda lay: lay.shards("mini", "dpr-8", "seed1"), lambda lay: lay.shard_plan("mini"),
                 lambda lay: lay.eval("mini", "dpr-8", 1), lambda lay: lay.tables, lambda lay: lay.plots,
                 lambda lay: lay.logs, lambda lay: lay.report, lambda lay: lay.mlflow_artifacts):
        assert path(a) != path(b)
        assert path(a).is_relative_to("results/exp-a") and path(b).is_relative_to("results/exp-b")
    for path in (lambda lay: lay.data("mini"), lambda lay: lay.hardneg("mini"), lambda lay: lay.mlflow_store,
                 lambda lay: lay.downloads, lambda lay: lay.shared_logs, lambda lay: lay.reference("x")):
        assert path(a) == path(b) and not path(a).is_relative_to("results/exp-a")
    assert Layout.for_config(pcfg.validate(CONFIG)).tables == Path("results/exp-a/tables")


def test_an_experiment_may_not_take_a_shared_folder_name():
    with pytest.raises(PipelineError, match=r"config key experiment: 'data' names a folder every experiment shares"):
        pcfg.validate({**CONFIG, "experiment": "data"})


def _flat_results(root: Path) -> dict[str, str]:
    """A results folder in the flat layout: this grid's files, plus another grid's run (dpr-64)
    and the shared data; returns relative path -> content."""
    files = {"data/mini/manifest.json": "{}", "hardneg/mini.jsonl": "",
             "models/mini/zeroshot/base/train_summary.json": "zs",
             "models/mini/dpr-8/seed1/train_summary.json": "m1", "models/mini/dpr-8/seed2/model/w.bin": "m2",
             "index/mini/dpr-8/seed1/index_stats.json": "i1", "eval/mini/dpr-8/seed2/metrics.json": "e2",
             "eval/mini/zeroshot/seed1/metrics.json": "z1", "tables/summary.csv": "t", "plots/a.png": "p",
             "logs/train/mini/dpr-8/seed1.log": "l", "logs/data/mini.log": "d",
             "models/mini/dpr-64/seed1/train_summary.json": "other grid"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return files


def test_migrate_moves_the_grid_under_its_experiment_and_nothing_else(tmp_path):
    root = tmp_path / "results"
    files = _flat_results(root)
    config = tmp_path / "a.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    proc = subprocess.run([sys.executable, "-m", "pipeline.core.layout", "migrate", "--config", str(config),
                           "--results", str(root)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    shared = {"data/mini/manifest.json", "hardneg/mini.jsonl", "logs/data/mini.log",
              "models/mini/dpr-64/seed1/train_summary.json"}
    for rel, text in files.items():
        moved = root / rel if rel in shared else root / "exp-a" / rel
        assert moved.read_text() == text, rel
        if rel not in shared:
            assert not (root / rel).exists(), rel
    assert "moved" in proc.stdout and "of experiment 'exp-a'" in proc.stdout


def test_migrate_refuses_to_overwrite_and_moves_nothing(tmp_path):
    root = tmp_path / "results"
    _flat_results(root)
    taken = root / "exp-a" / "tables" / "summary.csv"
    taken.parent.mkdir(parents=True)
    taken.write_text("newer")
    with pytest.raises(PipelineError, match=r"exp-a: already holds .*tables"):
        migrate(pcfg.validate(CONFIG), root)
    assert taken.read_text() == "newer"
    assert (root / "models/mini/dpr-8/seed1/train_summary.json").read_text() == "m1"  # nothing moved
