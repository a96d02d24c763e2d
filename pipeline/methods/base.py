"""The one interface every training method implements. The shared loop in `pipeline.train`
owns the optimizer, schedule, clipping and logging; a method only turns a list of examples into
accumulated gradients."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .. import distributed
from ..encoder import BiEncoder

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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

    Several processes (`distributed.world_size() > 1`): `batch_size` is the per-process
    micro-batch, so one micro-batch holds batch_size * P examples of which each process embeds
    its contiguous slice and gathers the others' embeddings (`pipeline.distributed`).
    Precision: `encode` runs the encoder under autocast (bf16/fp16) and returns fp32, so the
    loss, banks and FANoise stay in fp32; `scale_loss` applies the fp16 gradient scaler that the
    training loop sets as `self.scaler` (None otherwise).
    """

    name: ClassVar[str] = ""

    def __init__(self, model: BiEncoder, recipe: dict[str, Any], noise=None):
        self.model = model
        self.recipe = recipe
        self.noise = noise
        self.world = distributed.world_size()
        precision = recipe.get("precision") or "fp32"
        if precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision: expected one of {sorted(AUTOCAST_DTYPES)}, got {precision!r}")
        self.autocast_dtype = AUTOCAST_DTYPES[precision]
        self.scaler = None  # a torch.amp.GradScaler for fp16, set by the training loop

    @property
    def examples_per_update(self) -> int:
        """How many examples one call to `accumulate` consumes (N_total, over all processes)."""
        return int(self.recipe["batch_size"]) * self.world * int(self.recipe.get("accumulation_steps", 1))

    def encode(self, inputs: dict[str, torch.Tensor], side: str) -> torch.Tensor:
        """The encoder forward, under autocast for bf16/fp16, returning fp32 embeddings."""
        if self.autocast_dtype is None:
            return self.model.embed(inputs, side)
        device_type = next(self.model.parameters()).device.type
        with torch.autocast(device_type, dtype=self.autocast_dtype):
            out = self.model.embed(inputs, side)
        return out.float()

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to back-propagate: multiplied by the fp16 loss scale, else unchanged."""
        return loss if self.scaler is None else self.scaler.scale(loss)

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
