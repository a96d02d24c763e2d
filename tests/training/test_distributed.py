"""Several processes (gloo on CPU): P = 2 with per-process micro-batch n trains like P = 1 with 2n.

Both sides run tests/ddp_worker.py in fresh processes with one thread each, the two-process side
under torchrun; the worker sums gradients over processes once per update, as the training loop
does. Compared: the loss of every update, the whole gradient vector (relative error <= 1e-5) and
the memory banks, which the worker also checks are bit-identical in both processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.training import distributed

WORKER = Path(__file__).resolve().parents[1] / "ddp_worker.py"  # the helper stays in tests/
N = 2  # per-process micro-batch of the two-process run

CASES = [
    {"name": "inbatch", "method": "inbatch", "recipe": {"batch_size": N}, "updates": 2},
    {"name": "inbatch-hn-tied", "method": "inbatch", "recipe": {"batch_size": N}, "negatives": 1, "tied": True,
     "updates": 2},
    {"name": "gradaccum", "method": "gradaccum", "recipe": {"batch_size": N, "accumulation_steps": 2}, "updates": 2},
    {"name": "gradaccum-hn", "method": "gradaccum", "recipe": {"batch_size": N, "accumulation_steps": 2},
     "negatives": 1, "updates": 1},
    {"name": "gradcache", "method": "gradcache", "recipe": {"batch_size": N, "accumulation_steps": 3},
     "updates": 2},
    {"name": "gradcache-hn", "method": "gradcache", "recipe": {"batch_size": N, "accumulation_steps": 2},
     "negatives": 1, "updates": 1},
    {"name": "contaccum-micro", "method": "contaccum",
     "recipe": {"batch_size": N, "accumulation_steps": 2, "memory_size": 6}, "updates": 3},
    {"name": "contaccum-micro-hn", "method": "contaccum",
     "recipe": {"batch_size": N, "accumulation_steps": 2, "memory_size": 6,
                "hard_negatives": {"per_query": 1}}, "negatives": 1, "updates": 3},
    {"name": "contaccum-step", "method": "contaccum",
     "recipe": {"batch_size": N, "accumulation_steps": 2, "memory_size": 6, "bank_update": "step"}, "updates": 3},
    {"name": "contaccum-step-hn", "method": "contaccum",
     "recipe": {"batch_size": N, "accumulation_steps": 2, "memory_size": 6, "bank_update": "step",
                "hard_negatives": {"per_query": 1}}, "negatives": 1, "updates": 3},
    {"name": "prebatch", "method": "contaccum",
     "recipe": {"batch_size": N, "accumulation_steps": 2, "memory_size": 6, "query_bank": False}, "updates": 3},
    {"name": "fanoise-inbatch", "method": "inbatch", "recipe": {"batch_size": N}, "noise": {"alpha": 0.3},
     "updates": 2},
    {"name": "fanoise-gradaccum", "method": "gradaccum", "recipe": {"batch_size": N, "accumulation_steps": 2},
     "noise": {"alpha": 0.3}, "updates": 1},
    {"name": "fanoise-gradcache", "method": "gradcache", "recipe": {"batch_size": N, "accumulation_steps": 2},
     "noise": {"alpha": 0.3, "scaling": "linear"}, "updates": 1},
    {"name": "fanoise-contaccum-hn", "method": "contaccum",
     "recipe": {"batch_size": N, "accumulation_steps": 2, "memory_size": 6, "hard_negatives": {"per_query": 1}},
     "negatives": 1, "noise": {"alpha": 0.3}, "updates": 3},
    # Known positives masked across processes: in-batch, hard-negative and bank columns.
    {"name": "mask-inbatch-hn", "method": "inbatch", "recipe": {"batch_size": N}, "negatives": 1, "ids": True,
     "updates": 2},
    {"name": "mask-gradcache-hn", "method": "gradcache", "recipe": {"batch_size": N, "accumulation_steps": 2},
     "negatives": 1, "ids": True, "updates": 1},
    {"name": "mask-contaccum-hn", "method": "contaccum",
     "recipe": {"batch_size": N, "accumulation_steps": 2, "memory_size": 6, "hard_negatives": {"per_query": 1}},
     "negatives": 1, "ids": True, "updates": 3},
    # SogCLR's per-example state u_i: computed from the gathered batch, so identical in every
    # process; updates 2 and 3 re-visit examples (the worker cycles through 8), so u_i is used.
    {"name": "sogclr-hn", "method": "sogclr", "recipe": {"batch_size": N, "accumulation_steps": 2, "sogclr_gamma": 0.5},
     "negatives": 1, "ids": True, "updates": 3, "cycle": 8},
]


def _examples_needed(case, processes):
    k = case["recipe"].get("accumulation_steps", 1)
    return case["recipe"]["batch_size"] * processes * k * case["updates"]


def run_worker(model_dir, tmp_path, processes, cases):
    cases = [{**c, "examples": _examples_needed(c, processes)} for c in cases]
    spec_path, out = tmp_path / f"cases-{processes}.json", tmp_path / f"out-{processes}.pt"
    spec_path.write_text(json.dumps({"model_dir": str(model_dir), "cases": cases}))
    launch = [sys.executable, str(WORKER)] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), str(WORKER)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*launch, str(spec_path), str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return torch.load(out, weights_only=False)


def rel_err(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.fixture(scope="module")
def results(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    two = run_worker(tiny_model_dir, tmp, 2, CASES)
    one = run_worker(tiny_model_dir, tmp, 1, [{**c, "recipe": {**c["recipe"], "batch_size": N * 2}} for c in CASES])
    return one, two


@pytest.mark.parametrize("name", [c["name"] for c in CASES])
def test_two_processes_equal_one_process_with_twice_the_micro_batch(results, name):
    one, two = results[0][name], results[1][name]
    assert one["examples_per_update"] == two["examples_per_update"]
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    for u, (g1, g2) in enumerate(zip(one["grads"], two["grads"])):
        assert g1.shape == g2.shape
        assert rel_err(g2, g1) <= 1e-5, f"update {u + 1}: relative gradient error {rel_err(g2, g1):.2e}"
    for s1, s2 in zip(one["stats"], two["stats"]):
        assert s1["negatives_per_query"] == s2["negatives_per_query"]
        assert s1.keys() == s2.keys() and s1.get("bank_fill") == s2.get("bank_fill")
        assert s1["masked_per_row"] == s2["masked_per_row"]
        if name.startswith("mask-"):
            assert s1["masked_per_row"] > 0  # the case really masks something
    assert one["bank_ids"] == two["bank_ids"]
    assert one["banks"].keys() == two["banks"].keys()
    for key, bank in one["banks"].items():
        if bank is None:
            assert two["banks"][key] is None
        else:
            torch.testing.assert_close(two["banks"][key], bank, rtol=1e-5, atol=1e-6, msg=key)
    if one["banks"].get("bank_p") is not None:
        assert len(one["banks"]["bank_p"]) == 6  # banks filled to capacity: the comparison covers real rows


def test_slices_cover_the_batch_in_rank_order():
    for n in range(0, 11):
        for world in (1, 2, 3, 4):
            bounds = [distributed.slice_bounds(n, world, r) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(e - s for s, e in bounds) - min(e - s for s, e in bounds) <= 1


def test_helpers_are_identity_in_one_process():
    x = torch.randn(3, 4, requires_grad=True)
    assert distributed.world_size() == 1 and distributed.gather(x) is x and distributed.broadcast(x) is x
    assert distributed.local_slice([1, 2, 3]) == [1, 2, 3]
    distributed.assert_identical([x], "anything")
