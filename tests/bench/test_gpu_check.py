"""`make gpu-check`'s CPU dry run: the whole script (every method x precision x checkpointing,
the capped child process, corpus encoding) short of CUDA, so the GPU run does not fail on a
code path first met on the device."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from pipeline.bench.gpu_check import CAP_CASES, PRECISIONS, Settings
from pipeline.training.methods import available

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_dry_run_covers_every_case(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run([sys.executable, "-m", "pipeline.bench.gpu_check", "--dry-run", "--out", str(out)],
                          env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = list(csv.DictReader((out / "gpu_check.csv").open()))
    assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
    train = {(r["method"], r["precision"], r["checkpointing"]) for r in rows if r["part"] == "train"}
    assert train == {(m, p, c) for m in available() for p in PRECISIONS for c in ("False", "True")}
    cap = [(r["method"], r["checkpointing"], int(r["n_total"])) for r in rows if r["part"] == "cap"]
    assert cap == [(m, str(c), n) for n in Settings.for_dry_run().cap_n_totals for m, c in CAP_CASES]
    assert [r["precision"] for r in rows if r["part"] == "encode"] == list(PRECISIONS)
    assert all(float(r["sec_per_update"]) > 0 for r in rows)
    assert "CPU (dry run)" in proc.stdout and "| train " in proc.stdout  # the one table is printed
    assert (out / "gpu_check.md").read_text().count("\n| ") == len(rows) + 1


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device is present")
def test_without_cuda_the_real_run_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.bench.gpu_check", "--out", str(tmp_path)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "--dry-run" in proc.stderr
