"""pipeline.bench.memory: the default cases (in-batch at 64 with and without checkpointing beside
the accumulating methods, SogCLR at 8), and a real run that writes one row per case."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

from pipeline.bench.memory import cases, parse_args


def test_bench_puts_checkpointing_beside_each_method(tiny_model_dir, tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.bench.memory", "--out", str(out), "--methods", "gradcache", "--n-local", "2",
         "--n-totals", "4", "--updates", "1", "--model", str(tiny_model_dir), "--query-length", "8",
         "--passage-length", "16"],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["method"], r["n_total"], r["gradient_checkpointing"], r["status"]) for r in rows] == [
        ("gradcache", "4", "False", "ok"), ("gradcache", "4", "True", "ok")]
    assert "N_total=4 gradcache+ckpt:" in proc.stdout


def test_default_bench_has_inbatch_64_with_checkpointing_and_sogclr_8():
    """Issue #24's bench rows: in-batch at 64 with and without checkpointing beside the
    accumulating methods at N_total 64, and SogCLR at one micro-batch of 8 (its small-batch claim)."""
    rows = {(c["method"], c["n_local"], c["n_total"], c["gradient_checkpointing"]) for c in cases(parse_args([]))}
    assert {("inbatch", 64, 64, True), ("inbatch", 64, 64, False), ("sogclr", 8, 8, False), ("sogclr", 8, 8, True),
            ("gradcache", 8, 64, True), ("contaccum", 8, 64, True), ("sogclr", 8, 64, False)} <= rows
