"""The one interface every training method implements. The shared loop in `pipeline.train`
owns the optimizer, schedule, clipping and logging; a method only turns a list of examples into
accumulated gradients."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..encoder import BiEncoder


@dataclass
class Example:
    """One training triple: a query, its positive passage, and optional hard negatives."""

    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)


class TrainingMethod(ABC):
    """Turns one optimizer update's worth of examples into gradients on `model`.

    `recipe` is the validated run recipe from the config (batch_size, accumulation_steps,
    temperature, memory_size, ...). `noise` is an optional FANoise applied to embeddings
    before the loss, in training only.
    """

    name: ClassVar[str] = ""

    def __init__(self, model: BiEncoder, recipe: dict[str, Any], noise=None):
        self.model = model
        self.recipe = recipe
        self.noise = noise

    @property
    def examples_per_update(self) -> int:
        """How many examples one call to `accumulate` consumes (N_total)."""
        return int(self.recipe["batch_size"]) * int(self.recipe.get("accumulation_steps", 1))

    @abstractmethod
    def accumulate(self, examples: list[Example]) -> dict[str, float]:
        """Forward and backward over `examples`, leaving gradients in `.grad` (the caller zeroes
        them before and steps the optimizer after). Returns per-update stats for the log, at
        least `loss` and `negatives_per_query`."""

    def after_optimizer_step(self) -> None:
        """Hook called after each optimizer step (e.g. to clear memory banks)."""

    def state_dict(self) -> dict[str, Any]:
        """State that a checkpoint must carry besides the model (memory banks)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
