"""The one interface every training method implements. The shared loop in `pipeline.train`
owns the optimizer, schedule, clipping and logging; a method only turns a list of examples into
accumulated gradients."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from ..datasets import Example
from ..params import resolve_recipe

if TYPE_CHECKING:
    from ..encoder import BiEncoder


class TrainingMethod(ABC):
    """Turns one optimizer update's worth of examples into gradients on `model`.

    `recipe` is the run recipe from the config (batch_size, accumulation_steps, temperature,
    memory_size, ...); keys it lacks take the defaults of pipeline.params.Recipe. `noise` is an
    optional FANoise applied to embeddings before the loss, in training only.

    `emits` names the per-update statistics `accumulate` returns (train_log.jsonl columns and
    MLflow curves); `has_memory` says whether `memory_size` means anything to the method.
    """

    name: ClassVar[str] = ""
    emits: ClassVar[tuple[str, ...]] = ("loss", "negatives_per_query")
    has_memory: ClassVar[bool] = False

    def __init__(self, model: "BiEncoder", recipe: dict[str, Any], noise=None):
        self.model = model
        self.recipe = resolve_recipe(recipe)
        self.noise = noise

    @property
    def examples_per_update(self) -> int:
        """How many examples one call to `accumulate` consumes (N_total)."""
        return int(self.recipe["batch_size"]) * int(self.recipe["accumulation_steps"])

    def shape(self) -> dict[str, int]:
        """What the run's tables report: examples per micro-batch and per update, bank size."""
        return {"n_local": int(self.recipe["batch_size"]), "n_total": self.examples_per_update,
                "memory_size": int(self.recipe["memory_size"]) if self.has_memory else 0}

    @abstractmethod
    def accumulate(self, examples: list[Example]) -> dict[str, float]:
        """Forward and backward over `examples`, leaving gradients in `.grad` (the caller zeroes
        them before and steps the optimizer after). Returns the per-update stats named in
        `emits`."""

    def after_optimizer_step(self) -> None:
        """Hook called after each optimizer step (e.g. to clear memory banks)."""

    def fill_memory(self, rows: int) -> None:
        """Fill any memory to `rows` samples of random unit vectors (benchmarks measure the
        steady state of a full bank); a method without memory ignores it."""

    def state_dict(self) -> dict[str, Any]:
        """State that a checkpoint must carry besides the model (memory banks)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
