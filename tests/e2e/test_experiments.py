"""Two experiments in one clone (the acceptance test of results scoped per experiment): the
session's finished tiny grid (tests/tiny_workflow.py, experiment A), then a second config that
reuses its dataset and run names with another recipe and experiment name, then the first again.
Also: a hand-run aggregate never leaves tables that the workflow reports as done, and a flat results
folder migrated under its experiment is up to date. Real Snakemake, real MLflow (sqlite), the tiny
random BERT for speed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import tiny_workflow

A, B = tiny_workflow.EXPERIMENT, "other-exp"
RUNS_A, SEEDS_A = tiny_workflow.RUNS, tiny_workflow.SEEDS
STEPS_A = 3  # tiny_workflow's training.max_steps
# The second experiment: the same run name with another recipe (more updates), one seed.
RUNS_B = {"zeroshot": {"method": "none"}, "dpr-4": {**RUNS_A["dpr-4"], "max_steps": 5}}
STEPS_B, SEED_B = 5, tiny_workflow.SEEDS[0]


def snakemake(repo: Path, configfile: str, *args: str) -> str:
    proc = tiny_workflow.snakemake(repo, *args, configfile=configfile)
    return proc.stdout + proc.stderr


def jobs(output: str) -> dict[str, int]:
    """{rule: jobs} from the job headers Snakemake prints."""
    counts: dict[str, int] = {}
    for m in re.finditer(r"^(?:local)?(?:rule|checkpoint) (\w+):\s*$", output, re.M):
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file under a folder: what 'intact' means."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def two_experiments(tmp_path_factory, finished_run):
    """A copy of the finished tiny grid (its first experiment, already run: training it again here
    would only repeat e2e/test_pipeline.py's run), then the second experiment and the first again."""
    from pipeline.results.mlflow_ui import relocate_artifacts

    repo = tmp_path_factory.mktemp("experiments") / "repo"
    shutil.copytree(finished_run, repo, symlinks=True)  # copy2 keeps modification times: A stays up to date
    relocate_artifacts(repo / "results" / "mlflow.db")  # a copied store logs beside itself, not into the original
    first = yaml.safe_load((repo / "tiny.yaml").read_text())
    (repo / "a.yaml").write_text(yaml.safe_dump(first, sort_keys=False))
    second = {**first, "experiment": B, "runs": RUNS_B, "seeds": [SEED_B]}
    (repo / "b.yaml").write_text(yaml.safe_dump(second, sort_keys=False))
    out = {"first_dry": snakemake(repo, "a.yaml", "-n")}
    out["a_before"] = fingerprint(repo / "results" / A)
    out["plan_b"] = snakemake(repo, "b.yaml", "-n")
    out["second"] = snakemake(repo, "b.yaml")
    out["again_dry"] = snakemake(repo, "a.yaml", "-n")
    out["again"] = snakemake(repo, "a.yaml")
    return repo, out


def test_a_second_experiment_reuses_the_data_and_retrains_only_its_own_models(two_experiments):
    repo, out = two_experiments
    assert "Nothing to be done" in out["first_dry"]  # the copied first experiment is up to date
    plan = jobs(out["plan_b"])
    assert plan["train"] == 2 and "data" not in plan, out["plan_b"][-3000:]  # the dataset is shared
    assert f"results/{B}/models/scifact-mini/dpr-4/seed{SEED_B}" in out["plan_b"]
    assert f"results/{A}/" not in out["plan_b"]  # nothing of the first experiment is rewritten


def test_both_experiments_models_metrics_and_tables_are_intact_and_distinct(two_experiments):
    repo, out = two_experiments
    a, b = repo / "results" / A, repo / "results" / B
    assert fingerprint(a) == out["a_before"]  # after the second experiment and the first again
    model = f"models/scifact-mini/dpr-4/seed{SEED_B}"
    steps = {name: json.loads((root / model / "train_summary.json").read_text())["steps"]
             for name, root in ((A, a), (B, b))}
    assert steps == {A: STEPS_A, B: STEPS_B}
    metrics = [json.loads((root / f"eval/scifact-mini/dpr-4/seed{SEED_B}/metrics.json").read_text()) for root in (a, b)]
    assert metrics[0] != metrics[1]
    tables = {name: pd.read_csv(root / "tables/summary.csv") for name, root in ((A, a), (B, b))}
    assert set(tables[A].run) == set(RUNS_A) and set(tables[B].run) == set(RUNS_B)
    assert set(tables[A][tables[A].run == "dpr-4"].train_steps) == {STEPS_A}
    assert set(tables[B][tables[B].run == "dpr-4"].train_steps) == {STEPS_B}
    grids = [json.loads((root / "tables/grid.json").read_text())["digest"] for root in (a, b)]
    assert grids[0] != grids[1]


def test_the_first_experiment_again_does_no_work(two_experiments):
    _, out = two_experiments
    assert "Nothing to be done" in out["again_dry"] and "Nothing to be done" in out["again"]
    assert "train" not in jobs(out["again"])


def test_each_config_has_its_own_mlflow_experiment_and_artifacts(two_experiments):
    from mlflow.tracking import MlflowClient

    repo, _ = two_experiments
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'results' / 'mlflow.db'}")
    # A zero-shot model is one run; a trained run is a parent with one child per seed.
    for name, runs, seeds in ((A, RUNS_A, SEEDS_A), (B, RUNS_B, [SEED_B])):
        experiment = client.get_experiment_by_name(name)
        digest = json.loads((repo / "results" / name / "tables/grid.json").read_text())["digest"]
        assert experiment.tags["pipeline.grid_digest"] == digest
        assert experiment.artifact_location == (repo / "results" / name / "mlartifacts").resolve().as_uri()
        found = client.search_runs([experiment.experiment_id], max_results=100)
        expected = sum(1 if recipe.get("method") == "none" else 1 + len(seeds) for recipe in runs.values())
        assert len(found) == expected  # nothing duplicated by the re-run
        assert {r.data.tags["pipeline.grid_digest"] for r in found} == {digest}
        child = next(r for r in found if r.data.tags["run"] == "dpr-4" and r.data.tags["pipeline.level"] == "seed")
        assert child.data.metrics["train.steps"] == (STEPS_A if name == A else STEPS_B)


def test_a_hand_run_aggregate_is_rebuilt_by_the_next_grid_run(two_experiments):
    """A hand-run aggregate (here of a sub-grid, as when publishing in a hurry) writes tables with
    no workflow stamp: the next grid run rebuilds them instead of reporting nothing to do."""
    repo, _ = two_experiments
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    sub = yaml.safe_load((repo / "a.yaml").read_text())
    sub["only_runs"] = ["zeroshot", "dpr-4"]
    (repo / "a-sub.yaml").write_text(yaml.safe_dump(sub, sort_keys=False))
    hand = subprocess.run([sys.executable, "-m", "pipeline.results.aggregate", "--config", "a-sub.yaml", "--no-mlflow"],
                          cwd=repo, env=env, capture_output=True, text=True)
    assert hand.returncode == 0, hand.stderr
    tables = repo / "results" / A / "tables"
    assert set(pd.read_csv(tables / "summary.csv").run) == {"zeroshot", "dpr-4"}  # stale for grid A
    assert not list(tables.glob(".grid-*"))
    dry = snakemake(repo, "a.yaml", "-n")
    assert jobs(dry) == {"aggregate": 1, "all": 1}, dry[-3000:]
    snakemake(repo, "a.yaml")
    assert set(pd.read_csv(tables / "summary.csv").run) == set(RUNS_A)
    assert "Nothing to be done" in snakemake(repo, "a.yaml", "-n")


def test_a_migrated_flat_results_folder_is_up_to_date(two_experiments, tmp_path):
    """The first experiment's folder laid out flat (as before results were scoped), migrated by the
    documented command: Snakemake then plans no training, indexing or evaluation."""
    repo, _ = two_experiments
    old = tmp_path / "repo"
    shutil.copytree(repo, old, symlinks=True)
    results = old / "results"
    shutil.rmtree(results / B)
    for child in (results / A).iterdir():  # the pre-experiment layout (logs merge with the shared ones)
        if child.name == "logs":
            shutil.copytree(child, results / "logs", dirs_exist_ok=True)  # copy2 keeps modification times
        elif child.name != "mlartifacts":
            os.replace(child, results / child.name)
    shutil.rmtree(results / A)
    proc = subprocess.run([sys.executable, "-m", "pipeline.core.migrate", "--config", "a.yaml"], cwd=old,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (results / A / f"models/scifact-mini/dpr-4/seed{SEED_B}/model").is_dir()
    assert not (results / "models").exists() or not any((results / "models").rglob("*.json"))
    dry = jobs(snakemake(old, "a.yaml", "-n"))
    assert not {"train", "index", "evaluate", "data"} & set(dry), dry
