"""train_summary.json: what a finished run reports, read off its train_log.jsonl rows."""

from __future__ import annotations

import numpy as np

from pipeline.models.encoder import BiEncoder


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
    summary = {
        "method": recipe.method, "steps": run.total, "examples": n_examples,
        "examples_per_update": method.examples_per_update,
        **method.shape(), "resumed_from_step": run.start_step, "seconds": seconds,
        "started_at": run.started_at, "finished_at": finished_at,
        "sec_per_update": float(np.median([r["seconds"] for r in rows])) if rows else 0.0,
        "peak_mem_mb": max((r["peak_mem_mb"] for r in rows), default=0.0),
        "final_loss": rows[-1]["loss"] if rows else None, "device": run.device.type,
        "false_negatives": recipe.false_negatives, "sampler": recipe.sampler,
        **encoder_provenance(run.model), **run.data.provenance(),
        "gradient_checkpointing": bool(recipe.gradient_checkpointing),
    }
    if method.has_memory:
        summary["bank_share"] = run.bank_share
    if method.guide is not None:
        # The guide's cost: its forwards (none for "self") and the filter mask, over the run.
        guide_seconds = float(sum(r.get("guide_seconds", 0.0) for r in rows))
        train_seconds = float(sum(r["seconds"] for r in rows))
        summary.update(negative_filter=recipe.negative_filter, guide_seconds=guide_seconds,
                       guide_share=guide_seconds / train_seconds if train_seconds else 0.0,
                       filtered_per_row=float(np.mean([r["filtered_per_row"] for r in rows])) if rows else 0.0)
    if run.world > 1 or recipe.precision != "fp32":
        summary.update(processes=run.world, precision=recipe.precision,
                       skipped_updates=int(sum(r.get("scaler_skipped", 0) for r in rows)))
        if run.world > 1:
            summary["peak_mem_mb_per_process"] = [max(r["peak_mem_mb_per_process"][i] for r in rows)
                                                  for i in range(run.world)]
    return summary
