"""pipeline.training.hooks: the no-op hooks change nothing; FaultInjection makes a NaN loss and an
inf gradient at the steps it is given, or at the steps the environment names."""

from __future__ import annotations

import math

import torch

from pipeline.training.hooks import FAIL_AT_STEP, OVERFLOW_AT_STEP, FaultInjection, TrainHooks


def test_faults_come_from_the_environment(monkeypatch):
    monkeypatch.delenv(FAIL_AT_STEP, raising=False)
    monkeypatch.delenv(OVERFLOW_AT_STEP, raising=False)
    assert FaultInjection.from_env() == FaultInjection(None, None)
    monkeypatch.setenv(FAIL_AT_STEP, "5")
    monkeypatch.setenv(OVERFLOW_AT_STEP, "2")
    assert FaultInjection.from_env() == FaultInjection(fail_at_step=5, overflow_at_step=2)


def test_faults_hit_only_their_step_and_the_main_process():
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.ones(3)
    hooks = FaultInjection(fail_at_step=2, overflow_at_step=3)
    stats = {"loss": 0.5}
    hooks.after_backward(1, stats, [param], main_process=True)
    assert stats["loss"] == 0.5 and torch.isfinite(param.grad).all()
    hooks.after_backward(2, stats, [param], main_process=True)
    assert math.isnan(stats["loss"])
    hooks.after_backward(3, stats, [param], main_process=False)
    assert torch.isfinite(param.grad).all()  # another process's gradients stay finite
    hooks.after_backward(3, stats, [param], main_process=True)
    assert param.grad[0] == float("inf") and param.grad[1] == 1.0
    quiet = {"loss": 0.5}
    TrainHooks().after_backward(2, quiet, [param], main_process=True)
    TrainHooks().after_update(2)
    assert quiet == {"loss": 0.5}
