"""The tiny workflow run end to end through profiles/slurm on a real SLURM cluster.

CI starts a single-node cluster on the test machine with `.ci/start-slurm` (root, Debian's
slurm-wlm and munge); where no cluster answers, the test is skipped and says why. The test
cluster has 2 CPUs, no GPU and no accounting daemon, so the run overrides only what such a
cluster cannot grant: the GPU and 8-thread requests, and the status command (`sacct` needs
slurmdbd; `squeue` sees finished jobs for MinJobAge=600 s). One run trains with `processes: 2`
(torchrun, gloo on the CPU) inside its SLURM job."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

RUNS = {"zeroshot": {"method": "none"}, "dpr-4": {"method": "inbatch", "batch_size": 4},
        # two training processes (torchrun, gloo on the CPU) in one SLURM job
        "dpr-2x2p": {"method": "inbatch", "batch_size": 2, "processes": 2}}


def cluster_unavailable() -> str | None:
    """None when a SLURM controller answers and a node is idle, else why not."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM client tools (sinfo, sbatch) are not installed; run .ci/start-slurm as root to set up a cluster"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo did not answer ({exc}); run .ci/start-slurm as root"
    if proc.returncode != 0:
        return f"no SLURM controller answers (sinfo: {proc.stderr.strip()[:300]}); run .ci/start-slurm as root"
    states = proc.stdout.split()
    if not any(s.rstrip("*~#!%$@^-") in ("idle", "mix") for s in states):
        return f"no idle SLURM node (sinfo states: {states or 'none'}); run .ci/start-slurm as root"
    return None


@pytest.fixture(scope="module")
def slurm_run(request, tmp_path_factory):
    reason = cluster_unavailable()
    if reason:
        pytest.skip(reason)
    from conftest import copy_workflow

    tiny_model_dir = request.getfixturevalue("tiny_model_dir")

    repo = copy_workflow(tmp_path_factory.mktemp("slurm") / "repo")
    config = {
        "experiment": "slurm-tiny",
        "datasets": {"scifact-mini": {"source": "embedded"}},
        "seeds": [1],
        "encoder": {"model": str(tiny_model_dir), "query_max_length": 32, "passage_max_length": 64, "tied": False},
        "training": {"max_steps": 3, "lr": 1e-4, "warmup_ratio": 0.0},
        "runs": RUNS,
        "index": {"index_types": ["flat"]},
        "evaluation": {"scorings": ["dot", "dn"], "lambdas": [0.5], "reference_run": "zeroshot",
                       "significance_permutations": 200},
    }
    (repo / "tiny.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--configfile", "tiny.yaml",
            "--jobs", "4", "--latency-wait", "10",
            # what a 2-CPU, GPU-less, slurmdbd-less test cluster cannot grant:
            "--set-threads", "train=1", "index=1", "evaluate=1",
            "--set-resources", "train:gpu=0", "train:mem_mb=2000", "index:gpu=0", "index:mem_mb=2000",
            "--slurm-status-command", "squeue",
            # the executor polls after this many seconds, adding 10 s after each poll that finds no
            # job finished: a short start keeps a chain of ~20 s jobs from waiting on its own polls
            "--slurm-init-seconds-before-status-checks", "3"]
    proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=840)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted((repo / "results").rglob("*.log")))
        raise AssertionError(f"snakemake via SLURM failed ({proc.returncode}):\n{output[-6000:]}\n{logs}")
    return repo, output


def test_workflow_runs_through_slurm(slurm_run):
    repo, output = slurm_run
    frame = pd.read_csv(repo / "results" / "slurm-tiny" / "tables" / "summary.csv")
    assert set(frame.run) == set(RUNS) and set(frame.seed) == {1}
    assert set(frame.scoring) == {"dot", "dn"}

    # Every job was submitted with sbatch and got a SLURM job id: data, then train/index/evaluate
    # per run, then aggregate ...
    job_ids = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    assert len(job_ids) >= 1 + 3 * len(RUNS) + 1, output[-4000:]
    # ... SLURM wrote each one's log, named by that id, under results/logs/slurm/rule_<rule>/ ...
    slurm_logs = repo / "results" / "logs" / "slurm"
    logs = list(slurm_logs.rglob("*.log"))
    assert {p.stem for p in logs} >= set(job_ids)
    assert {p.relative_to(slurm_logs).parts[0] for p in logs} >= {
        f"rule_{r}" for r in ("data", "train", "index", "evaluate", "aggregate")}
    # ... and the controller reports those jobs as completed.
    queue = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i|%T"], capture_output=True, text=True,
                           timeout=30).stdout
    states = dict(line.split("|", 1) for line in queue.split())
    assert all(states.get(j) == "COMPLETED" for j in job_ids), {j: states.get(j) for j in job_ids}


def test_two_process_training_job_ran_under_slurm(slurm_run):
    import json

    repo, _ = slurm_run
    summary = json.loads((repo / "results" / "slurm-tiny" / "models" / "scifact-mini" / "dpr-2x2p" / "seed1" /
                          "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["examples_per_update"] == 4
    assert len(summary["peak_mem_mb_per_process"]) == 2
    log = (repo / "results" / "slurm-tiny" / "logs" / "train" / "scifact-mini" / "dpr-2x2p" / "seed1.log").read_text()
    assert "training inbatch on" in log and "updates of 4 examples" in log
