"""Every stage is a `python -m pipeline.<stage>.<step>` entry point with a usable --help."""

import os
import subprocess
import sys

import pytest

STEPS = ["sources.prepare", "training.hardneg", "training.train", "retrieval.index", "evaluation.evaluate",
         "results.aggregate", "bench.memory", "retrieval.shards", "bench.scale", "results.pilot", "export.export",
         "export.mteb_eval", "bench.gpu_check", "core.migrate", "core.numerics"]


@pytest.mark.parametrize("step", STEPS)
def test_help(step):
    proc = subprocess.run([sys.executable, "-m", f"pipeline.{step}", "--help"], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: python -m pipeline.{step}")
