"""The training loop under several processes (torchrun, gloo on CPU) and under bf16/fp16:
agreement with one process, resume after SIGKILL, the fp16 scaler's skipped updates, the
precision tolerances, and the launcher and GPU request of the train rule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pipeline.training.checkpoint import latest as latest_checkpoint
from pipeline.training.hooks import FaultInjection
from pipeline.core.common import PipelineError
from pipeline.core.config import TRAINING_DEFAULTS

from tests.training.test_train import mini_dataset, recipe, weights  # noqa: F401  (fixture and helpers)

METHODS = ["inbatch", "gradaccum", "gradcache", "contaccum"]


def run_train(dataset, out, rec, processes=1, seed=3, env=None, wait=True):
    launch = [sys.executable] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    cmd = [*launch, "-m", "pipeline.training.train", "--dataset", str(dataset), "--out", str(out),
           "--recipe-json", json.dumps({**rec, "processes": processes}), "--seed", str(seed), "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def descendants(pid):
    """Process ids below `pid` (torchrun starts its workers in sessions of their own)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def process_state(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def kill_job(proc):
    """SIGKILL torchrun and every worker at once, as a scheduler ends a job (cgroup kill)."""
    for pid in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def log_rows(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_two_processes_train_like_one_with_twice_the_batch(tiny_model_dir, mini_dataset, tmp_path):
    rec = recipe(tiny_model_dir, batch_size=2, memory_size=6, max_steps=4)
    two = run_train(mini_dataset, tmp_path / "p2", rec, processes=2)
    assert two.returncode == 0, two.stderr[-4000:]
    one = run_train(mini_dataset, tmp_path / "p1", {**rec, "batch_size": 4})
    assert one.returncode == 0, one.stderr[-4000:]
    rows2, rows1 = log_rows(tmp_path / "p2"), log_rows(tmp_path / "p1")
    assert [r["step"] for r in rows2] == [1, 2, 3, 4]
    assert [r["loss"] for r in rows2] == pytest.approx([r["loss"] for r in rows1], rel=1e-4)
    assert rows2[0]["grad_norm_query"] == pytest.approx(rows1[0]["grad_norm_query"], rel=1e-5)
    assert all(len(r["peak_mem_mb_per_process"]) == 2 for r in rows2)
    summary = json.loads((tmp_path / "p2" / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["examples_per_update"] == 8
    assert len(summary["peak_mem_mb_per_process"]) == 2
    a, b = weights(tmp_path / "p1"), weights(tmp_path / "p2")
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-4


def test_resume_after_sigkill_two_processes_matches_uninterrupted(tiny_model_dir, mini_dataset, tmp_path):
    rec = recipe(tiny_model_dir, batch_size=2, memory_size=6, max_steps=40, checkpoint_every=5,
                 fanoise={"alpha": 0.1, "scaling": "sublinear"})
    full = run_train(mini_dataset, tmp_path / "full", rec, processes=2)
    assert full.returncode == 0, full.stderr[-4000:]

    out = tmp_path / "killed"
    proc = run_train(mini_dataset, out, rec, processes=2, wait=False)
    deadline = time.time() + 300
    while latest_checkpoint(out) is None:
        assert proc.poll() is None, "training finished before it could be killed:\n" + proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.005)
    workers = descendants(proc.pid)
    kill_job(proc)
    assert len(workers) >= 2
    time.sleep(0.5)
    assert not [pid for pid in workers if process_state(pid) not in (None, "Z")], "a worker survived the kill"
    assert not (out / "train_summary.json").exists()
    state = torch.load(latest_checkpoint(out), weights_only=False)
    assert state["processes"] == 2 and len(state["rng_per_process"]) == 2 and state["method"]["bank_p"] is not None

    resumed = run_train(mini_dataset, out, rec, processes=2)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming from checkpoint" in resumed.stderr
    assert json.loads((out / "train_summary.json").read_text())["resumed_from_step"] >= 5
    rows, full_rows = log_rows(out), log_rows(tmp_path / "full")
    assert [r["step"] for r in rows] == list(range(1, 41))
    assert [r["loss"] for r in rows] == [r["loss"] for r in full_rows]
    a, b = weights(tmp_path / "full"), weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-identical on CPU


def test_fp16_overflow_is_skipped_and_logged_in_every_process(tiny_model_dir, mini_dataset, tmp_path):
    # The inf goes into process 0's gradient only; the all-reduce carries it to process 1, so both
    # skip the same update (otherwise their weights and banks would part, which the checkpoint
    # check would report).
    rec = recipe(tiny_model_dir, batch_size=2, max_steps=6, checkpoint_every=2, precision="fp16")
    proc = run_train(mini_dataset, tmp_path / "run", rec, processes=2, env={"PIPELINE_OVERFLOW_AT_STEP": "2"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "step 2: fp16 gradient overflow, update skipped" in proc.stderr
    rows = log_rows(tmp_path / "run")
    assert [r["scaler_skipped"] for r in rows] == [0, 1, 0, 0, 0, 0]
    assert rows[2]["loss_scale"] == rows[1]["loss_scale"] / 2
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["skipped_updates"] == 1 and summary["precision"] == "fp16"
    assert all(torch.isfinite(t).all() for t in weights(tmp_path / "run").values())


def test_fp16_nan_loss_still_stops(tiny_model_dir, mini_dataset, tmp_path):
    from pipeline.training.train import train

    with pytest.raises(PipelineError, match="step 2: non-finite loss"):
        train(str(mini_dataset), str(tmp_path / "x"), recipe(tiny_model_dir, max_steps=3, precision="fp16"),
              seed=1, progress=False, hooks=FaultInjection(fail_at_step=2))


def test_process_count_must_match_the_launch(tiny_model_dir, mini_dataset, tmp_path):
    from pipeline.training.train import train

    with pytest.raises(PipelineError, match="training.processes is 2 but 1 process"):
        train(str(mini_dataset), str(tmp_path / "x"), recipe(tiny_model_dir, processes=2), seed=1, progress=False)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("method", METHODS)
def test_mixed_precision_runs_finish(tiny_model_dir, mini_dataset, tmp_path, method, precision):
    from pipeline.training.train import train

    rec = recipe(tiny_model_dir, method=method, max_steps=2, precision=precision,
                 accumulation_steps=1 if method == "inbatch" else 2)
    summary = train(str(mini_dataset), str(tmp_path / "run"), rec, seed=1, progress=False)
    assert summary["steps"] == 2 and summary["precision"] == precision
    rows = log_rows(tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert ("loss_scale" in rows[0]) == (precision == "fp16")


# Relative error of the first update's whole gradient vector against fp32, on the tiny test BERT
# (measured: bf16 1.5-1.9e-4, fp16 2.0-2.3e-5), with FANoise and one hard negative.
TOLERANCE = {"bf16": 2e-3, "fp16": 5e-4}


@pytest.mark.parametrize("method", METHODS)
def test_mixed_precision_gradients_match_fp32(tiny_model_dir, method):
    from ddp_worker import examples

    from pipeline.models.encoder import BiEncoder, EncoderSpec
    from pipeline.training.fanoise import FANoise
    from pipeline.training.methods import get_method

    model = BiEncoder.from_spec(EncoderSpec(model=str(tiny_model_dir), tied=False, query_max_length=16,
                                            passage_max_length=24)).train()
    rec = {"inbatch": {"batch_size": 8}, "gradaccum": {"batch_size": 4, "accumulation_steps": 2},
           "gradcache": {"batch_size": 3, "accumulation_steps": 3},
           "contaccum": {"batch_size": 2, "accumulation_steps": 4, "memory_size": 4}}[method]

    def first_update(precision):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        m = get_method(method)(model, {**rec, "precision": precision}, FANoise(0.1))
        m.scaler = torch.amp.GradScaler("cpu") if precision == "fp16" else None
        stats = m.accumulate(examples(8, 1))
        grad = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
        return stats["loss"], grad / (m.scaler.get_scale() if m.scaler else 1.0)

    loss32, grad32 = first_update("fp32")
    for precision, tol in TOLERANCE.items():
        loss, grad = first_update(precision)
        assert loss == pytest.approx(loss32, rel=tol)
        err = float(torch.linalg.vector_norm(grad - grad32) / torch.linalg.vector_norm(grad32))
        assert err <= tol, f"{precision}: relative gradient error {err:.2e}"


def test_train_rule_launches_torchrun_and_asks_for_one_gpu_per_process(repo_copy):
    from tests.project.test_profiles import dry_run, rule_resources  # noqa: F401

    config = {"datasets": {"scifact-mini": {"source": "embedded"}}, "seeds": [1],
              "runs": {"zeroshot": {"method": "none"}, "dpr-2p": {"method": "inbatch", "batch_size": 2, "processes": 2}},
              "evaluation": {"reference_run": "zeroshot"}}
    (repo_copy / "p2.yaml").write_text(json.dumps(config))
    out = dry_run(repo_copy, "-p", "--profile", "profiles/slurm", "--configfile", "p2.yaml")
    jobs = out.split("rule train:")[1:]
    p2 = next(j for j in jobs if "dpr-2p" in j)
    zero = next(j for j in jobs if "zeroshot" in j)
    assert "gpu=2" in p2 and "gpu=1" in zero
    assert "python -m torch.distributed.run --standalone --nproc_per_node 2 -m pipeline.training.train" in out
    assert TRAINING_DEFAULTS["processes"] == 1 and TRAINING_DEFAULTS["precision"] == "fp32"


def test_bench_reports_each_process(tiny_model_dir, tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.bench.memory", "--out", str(out), "--processes", "2", "--methods",
         "gradcache,contaccum", "--n-local", "2", "--n-totals", "8", "--memory-sizes", "16", "--updates", "1",
         "--model", str(tiny_model_dir), "--query-length", "8", "--passage-length", "16", "--checkpointing", "off"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    import csv

    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["method"], r["n_total"], r["status"], r["processes"]) for r in rows] == [
        ("gradcache", "8", "ok", "2"), ("contaccum", "8", "ok", "2")]
    for row in rows:
        peaks = [float(x) for x in row["peak_mem_mb_per_process"].split(";")]
        assert len(peaks) == 2 and float(row["peak_mem_mb"]) == max(peaks) and float(row["sec_per_update"]) > 0
