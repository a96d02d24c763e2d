"""Where a caller looks into or perturbs the training loop: the bench's clock after each update,
and the tests' injected faults. `TrainHooks` does nothing; `FaultInjection` is what the tests use."""

from __future__ import annotations

import os
from dataclasses import dataclass

FAIL_AT_STEP = "PIPELINE_FAIL_AT_STEP"
OVERFLOW_AT_STEP = "PIPELINE_OVERFLOW_AT_STEP"


class TrainHooks:
    """No-op hooks; `step` is 1-based, the step train_log.jsonl reports."""

    def after_backward(self, step: int, stats: dict, params: list, main_process: bool) -> None:
        """After the method's backward, before the gradients are summed over the processes."""

    def after_update(self, step: int) -> None:
        """After the update is logged, before its checkpoint (if any)."""


@dataclass
class FaultInjection(TrainHooks):
    """A NaN loss at `fail_at_step` (the non-finite guard stops the run) and an inf gradient in
    process 0 at `overflow_at_step` (the fp16 scaler skips the update)."""

    fail_at_step: int | None = None
    overflow_at_step: int | None = None

    @classmethod
    def from_env(cls) -> "FaultInjection":
        """The faults named by PIPELINE_FAIL_AT_STEP / PIPELINE_OVERFLOW_AT_STEP: tests that run
        the command line in a subprocess cannot pass an object."""
        fail_at, overflow_at = os.environ.get(FAIL_AT_STEP), os.environ.get(OVERFLOW_AT_STEP)
        return cls(int(fail_at) if fail_at else None, int(overflow_at) if overflow_at else None)

    def after_backward(self, step: int, stats: dict, params: list, main_process: bool) -> None:
        if step == self.fail_at_step:
            stats["loss"] = float("nan")
        if step == self.overflow_at_step and main_process:
            params[0].grad.view(-1)[0] = float("inf")
