"""Cluster profiles: the SLURM profile parses and its per-rule resources survive the workflow
profile (profiles/default is applied automatically and must not replace them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import yaml

from conftest import REPO


def dry_run(repo, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def rule_resources(output: str) -> dict[str, str]:
    """Map rule name -> its 'resources:' line from a dry run's job listing."""
    found, current = {}, None
    for line in output.splitlines():
        head = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if head:
            current = head.group(1)
        elif current and line.strip().startswith("resources:"):
            found.setdefault(current, line.strip())
    return found


def test_slurm_dry_run_shows_per_rule_resources(repo_copy):
    out = dry_run(repo_copy, "--profile", "profiles/slurm")
    resources = rule_resources(out)
    assert {"data", "train", "index", "evaluate", "aggregate"} <= set(resources)
    assert "gpu=1" in resources["train"] and "runtime=480" in resources["train"] and "mem_mb=16000" in resources["train"]
    assert "gpu=1" in resources["index"]
    assert "gpu" not in resources["evaluate"]


def test_workflow_profile_sets_no_resources():
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    assert not {"default-resources", "set-resources", "resources"} & set(profile)


def test_every_rule_declares_threads_mem_and_runtime():
    for smk in (REPO / "rules").glob("*.smk"):
        text = smk.read_text()
        for block in re.split(r"\n(?=rule )", text)[1:]:
            name = block.split(":")[0]
            for key in ("threads:", "mem_mb=", "runtime="):
                assert key in block, f"{smk.name}: {name} does not declare {key}"


def test_lint_is_clean(repo_copy):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=repo_copy, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
