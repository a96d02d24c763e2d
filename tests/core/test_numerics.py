"""`pipeline.core.numerics`: pinning every library's float kernels to one instruction set, and
naming the kernels a process uses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.core import numerics


def run_numerics(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pipeline.core.numerics", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_run_pins_the_kernels_that_torch_and_faiss_then_report():
    pinned = run_numerics("run", "avx2", "--", sys.executable, "-m", "pipeline.core.numerics", "show")
    assert pinned.returncode == 0, pinned.stderr
    assert "torch_cpu_capability: AVX2" in pinned.stdout
    assert "faiss_simd_level: AVX2" in pinned.stdout
    assert "'MKL_CBWR': 'AVX2'" in pinned.stdout


def test_platform_names_cpu_versions_and_no_pinning_by_default(monkeypatch):
    for key in numerics.ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    found = numerics.platform()
    assert set(found) == {"cpu", "torch", "torch_cpu_capability", "faiss", "faiss_simd_level", "pinned_env"}
    assert found["pinned_env"] == {} and found["torch"] and found["faiss"]


def test_env_prints_the_variables_and_unknown_sets_are_refused():
    printed = run_numerics("env", "avx2")
    assert dict(pair.split("=") for pair in printed.stdout.split()) == numerics.PINNED["avx2"]
    bad = run_numerics("run", "avx512", "--", "true")
    assert bad.returncode != 0 and "unknown instruction set 'avx512'; expected one of ['avx2']" in bad.stderr
    assert run_numerics("bogus").returncode != 0
    assert "give the command after --" in run_numerics("run", "avx2", "--").stderr
    with pytest.raises(ValueError, match="avx9"):
        numerics.pinned_env("avx9")
