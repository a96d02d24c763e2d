"""The tiny end-to-end grid shared by tests/e2e/test_pipeline.py and tests/e2e/test_browser.py: embedded
scifact-mini, a tiny random BERT, two trained methods plus zero-shot, two seeds, dot/DN/DN* and an
HNSW index. conftest.py's session fixture `finished_run` runs it once for the whole session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

WORKFLOW_FILES = ("Snakefile", "rules", "config", "pipeline", "profiles", "data", "report", "environment.yml")


def copy_workflow_from(repo: Path, dest: Path) -> Path:
    """Copy a repository's workflow files to `dest`, for a real Snakemake run in a temp dir."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = repo / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest

EXPERIMENT = "e2e-tiny"
SEEDS = [1, 2]
RUNS = {
    "zeroshot": {"method": "none"},
    "dpr-4": {"method": "inbatch", "batch_size": 4, "fanoise": {"alpha": 0.1, "scaling": "sublinear"}},
    "contaccum-4x2": {"method": "contaccum", "batch_size": 4, "accumulation_steps": 2, "memory_size": 8,
                      "hard_negatives": {"source": "bm25", "per_query": 1}},
}


def tiny_config(model_dir: Path) -> dict:
    return {
        "experiment": EXPERIMENT,
        "datasets": {"scifact-mini": {"source": "embedded"}},
        "seeds": SEEDS,
        "encoder": {"model": str(model_dir), "query_max_length": 32, "passage_max_length": 64, "tied": False},
        "training": {"max_steps": 3, "lr": 1e-4, "warmup_ratio": 0.0},
        "runs": RUNS,
        "index": {"index_types": ["flat", "hnsw"]},
        "evaluation": {"scorings": ["dot", "dn", "dn*"], "lambdas": [0.25, 0.5],
                       "dn_star": {"samples": 20, "repeats": 2}, "reference_run": "zeroshot",
                       "significance_permutations": 500},
    }


def snakemake(repo: Path, *args: str, check: bool = True, configfile: str = "tiny.yaml",
              timeout: int = 900) -> subprocess.CompletedProcess:
    """Run Snakemake on a copy of the workflow; on failure, the error and every job log."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", configfile, *args],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in (repo / "results").rglob("*.log"))
        raise AssertionError(f"snakemake {configfile} {args} failed:\n{proc.stderr[-4000:]}\n{logs}")
    return proc


def copy_finished_grid(finished_run: Path, dest: Path, edit) -> Path:
    """A copy of the finished tiny grid at `dest`, with `edit(config)` applied to its tiny.yaml and
    MLflow off (the copy never writes a store). copytree keeps modification times, so the jobs the
    edit leaves alone stay done."""
    shutil.copytree(finished_run, dest, symlinks=True)
    config = yaml.safe_load((dest / "tiny.yaml").read_text())
    edit(config)
    config["mlflow"] = {"enabled": False}
    (dest / "tiny.yaml").write_text(yaml.safe_dump(config))
    return dest


def run_tiny_workflow(repo: Path, model_dir: Path) -> Path:
    """Write tiny.yaml into a copy of the workflow at `repo` and run it to the end."""
    (repo / "tiny.yaml").write_text(yaml.safe_dump(tiny_config(model_dir)))
    # A checkout is a git repository (as a clone is): runs record the commit they came from.
    if not (repo / ".git").exists():
        git = ["git", "-c", "user.email=tests@localhost", "-c", "user.name=tests"]
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "tiny workflow"]):
            subprocess.run(git + args, cwd=repo, check=True, capture_output=True)
    snakemake(repo)
    return repo
