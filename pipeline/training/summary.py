"""train_summary.json: what a finished run reports, read off its train_log.jsonl rows. A zero-shot
run writes the same keys with the values of no training (0 updates, no loss, no memory measured),
so readers take every key as given."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.core.common import PipelineError, read_json

if TYPE_CHECKING:
    from pipeline.core.params import Recipe
    from pipeline.models.encoder import BiEncoder


@dataclass
class TrainSummary:
    """The keys of every train_summary.json; the sections that only some runs have (encoder shape,
    extra pair sources, bank share, guide cost, processes and precision) follow them."""

    method: str
    steps: int                 # optimizer updates trained
    examples: int              # training pairs of the last epoch trained
    examples_per_update: int
    n_local: int               # examples per micro-batch and process
    n_total: int               # examples per update, over all processes
    memory_size: int           # bank size in samples (0: no bank)
    resumed_from_step: int
    seconds: float             # training time, setup and saving left out
    started_at: float
    finished_at: float
    sec_per_update: float | None  # median over the logged updates; None for a zero-shot run
    peak_mem_mb: float | None     # highest peak over the logged updates; None for a zero-shot run
    final_loss: float | None
    device: str | None            # None: nothing ran on a device
    false_negatives: str
    sampler: str
    gradient_checkpointing: bool

    def to_json(self, *sections: dict) -> dict:
        out = asdict(self)
        for section in sections:
            out.update(section)
        return out


REQUIRED = tuple(f.name for f in fields(TrainSummary))


def encoder_provenance(model: BiEncoder) -> dict:
    """The shape actually trained (truncation, random shape), for the summary; only when it differs
    from the model as named, so older summaries keep their keys."""
    spec = model.spec
    if spec.layers is None and spec.shape is None and not spec.random_init:
        return {}
    config = model.query_model.config
    return {"encoder": {"model": spec.model, "random_init": spec.random_init, "layers": spec.layers,
                        "shape": spec.shape, "num_hidden_layers": config.num_hidden_layers,
                        "hidden_size": config.hidden_size, "num_attention_heads": config.num_attention_heads,
                        "intermediate_size": config.intermediate_size,
                        "parameters": sum(p.numel() for p in model.parameters())}}


def summarize(run, rows: list[dict], n_examples: int, seconds: float, finished_at: float) -> dict:
    """The summary of `run` (a pipeline.training.train.Run) from its log rows; `n_examples` is the
    size of the last epoch trained."""
    recipe, method = run.recipe, run.method
    summary = TrainSummary(
        method=recipe.method, steps=run.total, examples=n_examples, examples_per_update=method.examples_per_update,
        **method.shape(), resumed_from_step=run.start_step, seconds=seconds, started_at=run.started_at,
        finished_at=finished_at,
        sec_per_update=float(np.median([r["seconds"] for r in rows])) if rows else 0.0,
        peak_mem_mb=max((r["peak_mem_mb"] for r in rows), default=0.0),
        final_loss=rows[-1]["loss"] if rows else None, device=run.device.type,
        false_negatives=recipe.false_negatives, sampler=recipe.sampler,
        gradient_checkpointing=bool(recipe.gradient_checkpointing))
    return summary.to_json(encoder_provenance(run.model), run.data.provenance(), _method_costs(run, rows))


def zero_shot_summary(recipe: Recipe, model: BiEncoder, started_at: float, finished_at: float) -> dict:
    """The summary of an untrained model: no update, no example, no loss, nothing measured."""
    summary = TrainSummary(
        method=recipe.method, steps=0, examples=0, examples_per_update=0, n_local=0, n_total=0, memory_size=0,
        resumed_from_step=0, seconds=0.0, started_at=started_at, finished_at=finished_at, sec_per_update=None,
        peak_mem_mb=None, final_loss=None, device=None, false_negatives=recipe.false_negatives,
        sampler=recipe.sampler, gradient_checkpointing=bool(recipe.gradient_checkpointing))
    return summary.to_json(encoder_provenance(model))


def _method_costs(run, rows: list[dict]) -> dict:
    """The sections only some runs have: the bank's share of the pairs, the guide's cost, and the
    processes and precision when they are not one process in fp32."""
    recipe, method = run.recipe, run.method
    out = {}
    if method.has_memory:
        out["bank_share"] = run.bank_share
    if method.guide is not None:
        # The guide's cost: its forwards (none for "self") and the filter mask, over the run.
        guide_seconds = float(sum(r.get("guide_seconds", 0.0) for r in rows))
        train_seconds = float(sum(r["seconds"] for r in rows))
        out.update(negative_filter=recipe.negative_filter, guide_seconds=guide_seconds,
                   guide_share=guide_seconds / train_seconds if train_seconds else 0.0,
                   filtered_per_row=float(np.mean([r["filtered_per_row"] for r in rows])) if rows else 0.0)
    if run.world > 1 or recipe.precision != "fp32":
        out.update(processes=run.world, precision=recipe.precision,
                   skipped_updates=int(sum(r.get("scaler_skipped", 0) for r in rows)))
        if run.world > 1:
            out["peak_mem_mb_per_process"] = [max(r["peak_mem_mb_per_process"][i] for r in rows)
                                              for i in range(run.world)]
    return out


def read_summary(path: str | Path) -> dict:
    """A train_summary.json with every TrainSummary key; one written before zero-shot runs shared
    the trained shape is named with the keys it lacks."""
    summary = read_json(path)
    missing = [k for k in REQUIRED if k not in summary]
    if missing:
        raise PipelineError(f"{path}: train summary without {missing}; it was written by an older version of "
                            "the train step: delete its model folder (or rerun that train job) to rewrite it")
    return summary
