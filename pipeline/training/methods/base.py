"""The one interface every training method implements. The shared loop in `pipeline.training.train`
owns the optimizer, schedule, clipping and logging; a method only turns a list of examples into
accumulated gradients."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import fields
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from pipeline.training import distributed
from pipeline.training.guide import GuideFilter
from pipeline.sources.datasets import Example, false_negative_mask
from pipeline.core.params import Recipe, resolve_recipe

if TYPE_CHECKING:
    from pipeline.models.encoder import BiEncoder

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FALSE_NEGATIVE_MODES = ("mask", "keep")
_RECIPE_KEYS = frozenset(f.name for f in fields(Recipe))


def as_recipe(recipe: "Recipe | dict[str, Any] | None") -> Recipe:
    """The typed recipe: a dict is resolved over the defaults (keys that are no recipe field are
    ignored, as they always were); a Recipe is already resolved and passes through."""
    if isinstance(recipe, Recipe):
        return recipe
    return Recipe(**{k: v for k, v in resolve_recipe(recipe).items() if k in _RECIPE_KEYS})


def examples_per_update(batch_size: int, accumulation_steps: int, processes: int) -> int:
    """N_total: the examples of one optimizer update, over all processes (batch_size is per process)."""
    return batch_size * accumulation_steps * processes


class TrainingMethod(ABC):
    """Turns one optimizer update's worth of examples into gradients on `model`.

    `recipe` is the run's resolved `Recipe` (batch_size, accumulation_steps, temperature,
    memory_size, ...), or a dict whose missing keys take the Recipe defaults. `noise` is an
    optional FANoise applied to embeddings before the loss, in training only.

    `emits` names the per-update statistics `accumulate` returns (train_log.jsonl columns and
    MLflow curves); `has_memory` says whether `memory_size` means anything to the method.

    False negatives (docs/methods.md#false-negatives): the training loop sets `positives` (query
    id -> its known positive passage ids). Every loss column whose passage is a known positive of
    a row's query, other than the row's own label column, is counted per update and, under
    `false_negatives: mask`, removed from that row's softmax (`column_mask`).

    Guided filtering (`negative_filter`, docs/methods.md#guided-false-negative-filtering): a
    guide model's scores remove the columns it rates as good as a row's positive (`loss_mask`,
    composed with the id mask); `filtered_per_row` and `guide_seconds` join the stats.

    Several processes (`distributed.world_size() > 1`): `batch_size` is the per-process
    micro-batch, so one micro-batch holds batch_size * P examples of which each process embeds
    its contiguous slice and gathers the others' embeddings (`pipeline.training.distributed`).
    `gradient_checkpointing` recomputes each encoder layer's activations in backward, in both
    towers, for every method (docs/methods.md#gradient-checkpointing).
    Precision: `encode` runs the encoder under autocast (bf16/fp16) and returns fp32, so the
    loss, banks and FANoise stay in fp32; `scale_loss` applies the fp16 gradient scaler that the
    training loop sets as `self.scaler` (None otherwise).
    """

    name: ClassVar[str] = ""
    emits: ClassVar[tuple[str, ...]] = ("loss", "negatives_per_query", "false_negatives_per_row",
                                        "masked_per_row", "effective_negatives_per_row")
    has_memory: ClassVar[bool] = False
    accumulates: ClassVar[bool] = True  # False: one batch per update, accumulation_steps ignored

    def __init__(self, model: "BiEncoder", recipe: "Recipe | dict[str, Any]", noise=None):
        self.model = model
        self.recipe = as_recipe(recipe)
        self.noise = noise
        self.world = distributed.world_size()
        precision = self.recipe.precision
        if precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision: expected one of {sorted(AUTOCAST_DTYPES)}, got {precision!r}")
        self.autocast_dtype = AUTOCAST_DTYPES[precision]
        self.scaler = None  # a torch.amp.GradScaler for fp16, set by the training loop
        self.false_negatives = self.recipe.false_negatives
        if self.false_negatives not in FALSE_NEGATIVE_MODES:
            raise ValueError(f"false_negatives: expected one of {FALSE_NEGATIVE_MODES}, got {self.false_negatives!r}")
        self.positives: dict[str, set[str]] = {}  # query id -> known positive passage ids
        # Set (or cleared) on every construction, so a model reused by another method keeps no
        # stale setting; an encoder without support is a PipelineError naming the key.
        model.set_gradient_checkpointing(bool(self.recipe.gradient_checkpointing))
        self.guide = None
        if self.recipe.negative_filter:
            self.guide = GuideFilter(self.recipe.negative_filter, model, self.autocast_dtype,
                                     chunk=int(self.recipe.batch_size))
            # An instance attribute: the filter's stats exist only when a guide does.
            self.emits = type(self).emits + ("filtered_per_row", "guide_seconds")

    @property
    def examples_per_update(self) -> int:
        """How many examples one call to `accumulate` consumes (N_total, over all processes)."""
        steps = int(self.recipe.accumulation_steps) if self.accumulates else 1
        return examples_per_update(int(self.recipe.batch_size), steps, self.world)

    def shape(self) -> dict[str, int]:
        """What the run's tables report: examples per micro-batch (per process) and per update
        (over all processes), bank size."""
        return {"n_local": int(self.recipe.batch_size), "n_total": self.examples_per_update,
                "memory_size": int(self.recipe.memory_size) if self.has_memory else 0}

    def encode(self, inputs: dict[str, torch.Tensor], side: str) -> torch.Tensor:
        """The encoder forward, under autocast for bf16/fp16, returning fp32 embeddings."""
        if self.autocast_dtype is None:
            return self.model.embed(inputs, side)
        device_type = next(self.model.parameters()).device.type
        with torch.autocast(device_type, dtype=self.autocast_dtype):
            out = self.model.embed(inputs, side)
        return out.float()

    def column_mask(self, row_ids: list, column_ids: list, device) -> tuple[torch.Tensor | None, dict[str, float]]:
        """The loss mask for rows (query ids) against columns (passage ids), row i's label being
        column i, and the per-row counts: known positives found among the other columns, how
        many of them leave the softmax, and the negatives that remain."""
        found = false_negative_mask(row_ids, column_ids, self.positives)
        labels = range(min(len(row_ids), len(column_ids)))
        found[labels, labels] = False
        per_row = float(found.sum()) / max(1, len(row_ids))
        masked = per_row if self.false_negatives == "mask" else 0.0
        stats = {"false_negatives_per_row": per_row, "masked_per_row": masked,
                 "effective_negatives_per_row": len(column_ids) - 1 - masked}
        return (torch.from_numpy(found).to(device) if masked else None), stats

    def loss_mask(self, row_ids: list, column_ids: list, guide_rows: torch.Tensor | None = None,
                  guide_columns: torch.Tensor | None = None, device=None) -> tuple[torch.Tensor | None, dict]:
        """`column_mask` composed with the guide's filter (when there is a guide): a column leaves
        a row's softmax when either removes it. `filtered_per_row` counts the guide's removals
        (whether or not the id mask also removes them); `effective_negatives_per_row` what is left."""
        mask, stats = self.column_mask(row_ids, column_ids, device)
        if self.guide is None:
            return mask, stats
        drop = self.guide.mask(guide_rows, guide_columns).to(device)
        union = drop if mask is None else (drop | mask)
        rows = max(1, len(row_ids))
        stats.update(filtered_per_row=float(drop.sum()) / rows,
                     effective_negatives_per_row=len(column_ids) - 1 - float(union.sum()) / rows)
        return union, stats

    def guide_stats(self, before: float) -> dict[str, float]:
        """The guide's seconds since `before` (an earlier `self.guide.seconds`)."""
        return {"guide_seconds": self.guide.seconds - before} if self.guide is not None else {}

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to back-propagate: multiplied by the fp16 loss scale, else unchanged."""
        return loss if self.scaler is None else self.scaler.scale(loss)

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
