"""The migration of a flat results folder (pipeline.core.migrate): the config's grid moves under its
experiment, shared folders and another grid's leftovers stay, and nothing is ever overwritten."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core import config as pcfg
from pipeline.core.common import PipelineError
from pipeline.core.migrate import migrate
from tests.core.test_layout import CONFIG

REPO = Path(__file__).resolve().parents[2]


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
    proc = subprocess.run([sys.executable, "-m", "pipeline.core.migrate", "--config", str(config),
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
