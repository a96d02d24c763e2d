"""pipeline.training.runtime: the learning-rate schedule, gradient norms, RNG states a checkpoint
restores, the device choice and the log a resume truncates."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from pipeline.core.common import PipelineError
from pipeline.training import runtime


def test_linear_schedule_warms_up_then_decays_to_zero():
    factor = runtime.linear_schedule(warmup=4, total=12)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert [factor(s) for s in (4, 8, 12, 20)] == [1.0, 0.5, 0.0, 0.0]
    assert runtime.linear_schedule(0, 4)(0) == 1.0


def test_grad_norm_is_the_norm_over_every_gradient():
    a, b, c = (torch.zeros(2, requires_grad=True) for _ in range(3))
    (3 * a[0] + 4 * b[1]).backward()
    assert runtime.grad_norm([a, b, c]) == pytest.approx(5.0)  # c has no gradient
    assert runtime.grad_norm([torch.zeros(1, requires_grad=True)]) == 0.0


def test_rng_state_round_trip_replays_every_generator():
    cpu = torch.device("cpu")
    state = runtime.rng_state(cpu)
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    runtime.set_rng_state(state, cpu)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first


def test_device_choice_and_peak_memory():
    assert runtime.pick_device("cpu").type == "cpu"
    assert runtime.pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(PipelineError, match="training.device: 'cuda' requested but no CUDA device"):
            runtime.pick_device("cuda")
    assert runtime.peak_memory_mb(torch.device("cpu")) > 10  # this process's resident peak, in MiB


def test_truncate_log_keeps_the_steps_up_to_the_checkpoint(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3, 4)) + "\n")
    runtime.truncate_log(log, 2)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
    runtime.truncate_log(tmp_path / "absent.jsonl", 2)
    assert not (tmp_path / "absent.jsonl").exists()
