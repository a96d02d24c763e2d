"""Sharded encoding through real Snakemake runs (tiny random BERT, embedded scifact-mini): a
lost shard is the only encoding job a re-run does, and the 4 encode_shard jobs of that resumed run
give the metrics and rankings of the unsharded run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import tiny_workflow

SHARD_SIZE = 250  # scifact-mini has 1000 docs: 4 shards


def snakemake(repo, *args):
    proc = tiny_workflow.snakemake(repo, *args, timeout=1800)
    return proc.stdout + proc.stderr


def job_counts(output: str) -> dict[str, int]:
    """{rule: jobs} from the job headers Snakemake prints (`localrule encode_shard:`), which also
    cover the jobs added after a checkpoint, unlike the first 'Job stats' table."""
    counts: dict[str, int] = {}
    for m in re.finditer(r"^(?:local)?(?:rule|checkpoint) (\w+):\s*$", output, re.M):
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def _config(tiny_model_dir, shard_size, shards=None):
    index = {"index_types": ["flat"], "batch_size": 16}
    if shard_size:
        index["shard_size"] = shard_size
    if shards:
        index["shards"] = shards
    return {"experiment": "shards-e2e", "datasets": {"scifact-mini": {"source": "embedded"}}, "seeds": [1],
            "encoder": {"model": str(tiny_model_dir), "query_max_length": 32, "passage_max_length": 64},
            "runs": {"zeroshot": {"method": "none"}}, "index": index,
            "evaluation": {"scorings": ["dot", "dn"], "lambdas": [0.25], "reference_run": "zeroshot"},
            "mlflow": {"enabled": False}}


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _run_killing_shard_2(repo: Path) -> dict:
    """Run the grid, SIGKILL the job encoding shard 2 mid-run (what a pre-empted cluster job gets)
    and let the others finish (--keep-going); then re-run it. What each step left behind."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "tiny.yaml",
                             "--keep-going"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    killed, deadline = None, time.time() + 600
    while killed is None and proc.poll() is None and time.time() < deadline:
        for pid in _descendants(proc.pid):
            cmd = _cmdline(pid)
            if "pipeline.retrieval.shards encode" in cmd and "--shard 2 " in cmd and "python" in cmd.split()[0]:
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
        time.sleep(0.05)
    out = {"first": proc.communicate(timeout=1800)[0], "killed": killed, "returncode": proc.returncode}
    folder = repo / "results/shards-e2e/shards/scifact-mini/zeroshot/base"
    out["done"] = {p.name: p.stat().st_mtime_ns for p in folder.glob("[0-9]*")}
    out["index_before_rerun"] = (repo / "results/shards-e2e/index/scifact-mini/zeroshot/base/index_stats.json").exists()
    out["rerun"] = snakemake(repo)
    out["after"] = {p.name: p.stat().st_mtime_ns for p in folder.glob("[0-9]*")}
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """The grid unsharded, and with a fixed count of 4 shards, one of them killed and re-encoded by
    a re-run: the comparison below is then also a check that the resumed index is whole."""
    from conftest import copy_workflow

    plain = copy_workflow(tmp_path_factory.mktemp("plain") / "repo")
    (plain / "tiny.yaml").write_text(yaml.safe_dump(_config(tiny_model_dir, None)))
    sharded = copy_workflow(tmp_path_factory.mktemp("sharded") / "repo")
    (sharded / "tiny.yaml").write_text(yaml.safe_dump(_config(tiny_model_dir, None, shards=4)))
    return {"plain": (plain, snakemake(plain)), "sharded": (sharded, _run_killing_shard_2(sharded))}


def test_dry_run_lists_the_shard_jobs(runs, tiny_model_dir, tmp_path):
    """shard_size: the plan is a checkpoint of the data step; its blocks are those of the fixed count
    (1000 docs / 250 = 4), so the sharded run below stands for both."""
    from conftest import copy_workflow

    repo = copy_workflow(tmp_path / "repo")
    (repo / "tiny.yaml").write_text(yaml.safe_dump(_config(tiny_model_dir, SHARD_SIZE)))
    # Before the data step has run, the plan is a pending checkpoint...
    assert "shard_plan" in snakemake(repo, "-n")
    # ...once it exists, a dry run shows one encode_shard job per shard.
    snakemake(repo, "--until", "shard_plan")
    assert job_counts(snakemake(repo, "-n"))["encode_shard"] == 4
    plan = "results/shards-e2e/shards/scifact-mini/plan.json"
    plans = [json.loads((root / plan).read_text())["shards"] for root in (repo, runs["sharded"][0])]
    assert plans[0] == plans[1] == [[0, 250], [250, 500], [500, 750], [750, 1000]]


def test_a_fixed_shard_count_is_planned_before_any_data(tiny_model_dir, tmp_path):
    """index.shards: the dry run lists every encode_shard job with no data at all."""
    from conftest import copy_workflow

    repo = copy_workflow(tmp_path / "repo")
    (repo / "tiny.yaml").write_text(yaml.safe_dump(_config(tiny_model_dir, None, shards=4)))
    dry = snakemake(repo, "-n")
    assert not (repo / "results").exists()
    assert job_counts(dry)["encode_shard"] == 4 and job_counts(dry)["data"] == 1


def test_killed_shard_is_the_only_one_re_encoded(runs):
    """The killed shard fails its job and the others finish; the re-run encodes shard 2 alone."""
    run = runs["sharded"][1]
    assert run["killed"] is not None, run["first"][-3000:]
    assert run["returncode"] != 0 and "Error in rule encode_shard" in run["first"]
    done = run["done"]
    assert sorted(done) == sorted(f"{i}.{ext}" for i in (0, 1, 3) for ext in ("json", "npy"))
    assert not run["index_before_rerun"]
    counts = job_counts(run["rerun"])
    assert counts["encode_shard"] == 1
    assert "wildcards: dataset=scifact-mini, run=zeroshot, tag=base, shard=2" in run["rerun"]
    assert "shard_plan" not in counts and "train" not in counts and counts["index"] == 1
    after = run["after"]
    assert {k: after[k] for k in done} == done  # finished shards untouched
    assert sorted(set(after) - set(done)) == ["2.json", "2.npy"]
    assert "Nothing to be done" in snakemake(runs["sharded"][0], "-n")


def test_four_shards_match_unsharded(runs):
    plain, sharded = runs["plain"][0], runs["sharded"][0]
    assert job_counts(runs["sharded"][1]["first"])["encode_shard"] == 4
    assert "encode_shard" not in job_counts(runs["plain"][1])
    ev = "results/shards-e2e/eval/scifact-mini/zeroshot/seed1"
    rankings = {}
    for name, repo in (("plain", plain), ("sharded", sharded)):
        rankings[name] = [line.split()[:4] for line in (repo / ev / "run-dot.trec").read_text().splitlines()]
    assert rankings["plain"] == rankings["sharded"]  # identical rankings for flat search
    assert (plain / ev / "metrics.json").read_text() == (sharded / ev / "metrics.json").read_text()
    assert (plain / "results/shards-e2e/tables/summary.csv").read_text() == (sharded / "results/shards-e2e/tables/summary.csv").read_text()
    shards = sorted(p.name for p in (sharded / "results/shards-e2e/shards/scifact-mini/zeroshot/base").iterdir())
    assert shards == sorted(f"{i}.{ext}" for i in range(4) for ext in ("json", "npy"))
    assert not (plain / "results/shards-e2e/shards").exists()


COMPRESSED = ["HNSW32,SQ8", "IVF64,PQ48"]


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.timeout(3600)
def test_full_scifact_four_shards_match_unsharded(shared_data, tmp_path):
    """Full SciFact, zero-shot MiniLM (max length 256): 4 encode_shard jobs give the unsharded
    run's metrics and rankings, and the compressed indexes get their recall in index.md."""
    from conftest import copy_workflow

    repos = {}
    for name, size in (("plain", None), ("sharded", 1296)):  # 5,183 docs: 4 shards
        repo = copy_workflow(tmp_path / name)
        index = {"index_types": ["flat", *COMPRESSED]}
        if size:
            index["shard_size"] = size
        config = {"experiment": f"scifact-{name}",
                  "datasets": {"scifact": {"source": "local", "path": str(shared_data / "scifact")}},
                  "seeds": [13], "encoder": {"model": "all-MiniLM-L6-v2", "query_max_length": 256,
                                             "passage_max_length": 256},
                  "runs": {"zeroshot": {"method": "none"}}, "index": index,
                  "evaluation": {"scorings": ["dot", "dn"], "lambdas": [0.25], "reference_run": "zeroshot"},
                  "mlflow": {"enabled": False}}
        (repo / "tiny.yaml").write_text(yaml.safe_dump(config))
        output = snakemake(repo)
        assert job_counts(output).get("encode_shard", 0) == (4 if size else 0)
        repos[name] = repo
    ev = {n: f"results/scifact-{n}/eval/scifact/zeroshot/seed13" for n in repos}
    for name in ("run-dot.trec", "run-dn-0.25.trec"):
        ranks = [[line.split()[:4] for line in (repos[n] / ev[n] / name).read_text().splitlines()]
                 for n in ("plain", "sharded")]
        assert ranks[0] == ranks[1], name
    metrics = [json.loads((repos[n] / ev[n] / "metrics.json").read_text()) for n in ("plain", "sharded")]
    assert metrics[0] == metrics[1]
    dot = next(r for r in metrics[1]["rows"] if r["scoring"] == "dot")
    assert dot["ndcg@10"] == pytest.approx(0.6451, abs=1e-3)
    index_md = (repos["sharded"] / "results/scifact-sharded/tables/index.md").read_text()
    assert all(kind in index_md for kind in COMPRESSED)
    print(index_md)
