"""Train a bi-encoder with one of the registered InfoNCE methods.

One loop serves every method (nanoGPT-style: read it top to bottom). Per optimizer update it
takes N_total examples, lets the method accumulate gradients, clips, steps AdamW and the
warm-up + linear-decay schedule, and appends one JSON line to train_log.jsonl. Checkpoints
carry everything needed to resume bit-for-bit: model, optimizer, scheduler, RNG states, the
position in the data order and the method's memory banks.

Several processes (`processes: P`, launched by torchrun): every process reads the same global
batch, embeds its slice of each micro-batch and gathers the others' embeddings
(`pipeline.training.distributed`); gradients are summed over the processes once per update, before
clipping, so P processes with per-process micro-batch n train like one process with n * P.
Only process 0 writes the log, checkpoints and outputs; every process restores the checkpoint.

Precision (`precision: fp32 | bf16 | fp16`): the encoder runs under autocast, the loss, banks and
FANoise in fp32. fp16 uses a gradient scaler: an update whose gradients overflow is skipped by
the scaler and logged (`scaler_skipped`, `loss_scale`); a non-finite loss, a non-finite gradient
without fp16, or MAX_SKIPPED overflows in a row stop the run.

Encoder shape (the recipe's `encoder`): `layers: L` trains the first L layers of the model;
`random_init: true` with `shape: {layers, hidden, heads, intermediate}` a fresh BERT of that size
with the model's tokenizer, drawn from the run's seed. Pairs (`pairs: {sources: [qrels, title,
crop], crop: {min_words, max_words}}`): the train split's qrels, title -> text pairs and
independent crops of one passage, redrawn per (seed, epoch). Both are recorded in
train_summary.json (docs/methods.md, "A regime with room to learn").

Outputs in --out: model/ (a BiEncoder folder), train_log.jsonl, train_summary.json (last).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import resource
import time
import warnings
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from pipeline.training import checkpoint, distributed
from pipeline.core.common import (PipelineError, atomic_write_json, log, parse_json_object, run_main,
                     seed_everything)
from pipeline.sources.datasets import load_dataset
from pipeline.training.pairs import TrainingData
from pipeline.models.encoder import BiEncoder, EncoderSpec, describe
from pipeline.core.layout import MODEL, TRAIN_LOG, TRAIN_SUMMARY
from pipeline.core.params import ZERO_SHOT, resolve_recipe
from pipeline.training.sampler import update_plan
from pipeline.training.fanoise import FANoise
from pipeline.training.methods import get_method
from pipeline.training.hardneg import load_hard_negatives

MAX_SKIPPED = 20  # fp16: this many overflow-skipped updates in a row means the values are broken
# A bank holding this share of the training pairs holds recent queries' positives often enough to
# matter under `false_negatives: keep`; at 1.0 it holds each query's own positive from its last epoch.
BANK_SHARE_WARNING = 0.1


# ----------------------------------------------------------------------------- helpers
def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError("training.device: 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def grad_norm(params) -> float:
    norms = [p.grad.detach().norm(2) for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def linear_schedule(warmup: int, total: int):
    """Linear warm-up to the peak lr over `warmup` updates, then linear decay to 0 at `total`."""
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def rng_state(device: torch.device) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ----------------------------------------------------------------------------- the loop
def train(dataset_dir: str, out_dir: str, recipe: dict, seed: int, hard_negatives: str | None = None,
          progress: bool = True, fail_at_step: int | None = None, overflow_at_step: int | None = None,
          on_update=None) -> dict:
    """`fail_at_step` (a NaN loss) and `overflow_at_step` (an inf gradient in process 0) are test
    hooks for the non-finite guard and the fp16 scaler; `on_update(step)`, if given, is called at
    the end of every update (pipeline.bench.bench_train's clock)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe = resolve_recipe(recipe)
    spec = EncoderSpec.from_dict(recipe["encoder"])
    started_at = time.time()

    if recipe["method"] == ZERO_SHOT:
        # Random weights cannot be rebuilt from the model name: a random zero-shot control saves them.
        seed_everything(seed)
        model = BiEncoder.from_spec(spec)
        model.save(out / MODEL, weights=spec.random_init)
        summary = {"method": ZERO_SHOT, "steps": 0, "examples": 0, "seconds": 0.0, **_encoder_provenance(model)}
        (out / TRAIN_LOG).write_text("")
        atomic_write_json(out / TRAIN_SUMMARY, summary)
        return summary

    seed_everything(seed)
    device = pick_device(recipe["device"])
    processes = int(recipe["processes"])
    if processes != distributed.env_world_size():
        raise PipelineError(f"training.processes is {processes} but {distributed.env_world_size()} process(es) were "
                            f"started; launch with `torchrun --standalone --nproc_per_node {processes} -m "
                            "pipeline.training.train ...` (plain python for 1)")
    rank, world, local_rank = distributed.init_from_env(device.type)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
    main_process = rank == 0
    if not main_process:
        log.setLevel(logging.WARNING)  # process 0 reports progress; the others only problems
    precision = recipe["precision"]
    if device.type == "cuda" and recipe["cuda_memory_fraction"]:
        # Emulates a smaller GPU, as the ContAccum paper does on an 80 GB card.
        torch.cuda.set_per_process_memory_fraction(float(recipe["cuda_memory_fraction"]), device)

    ds = load_dataset(dataset_dir)
    hn_cfg = recipe["hard_negatives"] or {}
    negatives = None
    if hn_cfg:
        if not hard_negatives:
            raise PipelineError("hard_negatives is set in the recipe but no --hard-negatives file was given")
        negatives = load_hard_negatives(hard_negatives)
    # The examples of each epoch (the dataset's own hard negatives are redrawn per epoch).
    data = TrainingData(ds, recipe["train_split"], negatives, hn_cfg, seed, pairs=recipe.get("pairs"))
    examples = data.epoch(0)

    model = BiEncoder.from_spec(spec).to(device)
    # Training may use shorter sequences than evaluation (CPU budget); the saved spec keeps the
    # evaluation lengths.
    eval_lengths = (spec.query_max_length, spec.passage_max_length)
    spec.query_max_length = recipe["train_query_max_length"] or spec.query_max_length
    spec.passage_max_length = recipe["train_passage_max_length"] or spec.passage_max_length
    model.train()

    noise = FANoise.from_config(recipe["fanoise"])
    method = get_method(recipe["method"])(model, recipe, noise=noise)
    method.positives = data.known_positives()
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    method.scaler = scaler
    per_update = method.examples_per_update
    updates_per_epoch = len(examples) // per_update
    if updates_per_epoch == 0:
        raise PipelineError(f"{dataset_dir}: split {recipe['train_split']!r} has {len(examples)} training pairs, "
                            f"fewer than one update of {per_update} (batch_size x accumulation_steps"
                            f"{' x processes' if world > 1 else ''})")
    total = recipe["max_steps"] or max(1, math.ceil(recipe["epochs"] * updates_per_epoch))
    memory = method.shape()["memory_size"]
    bank_share = memory / len(examples)
    if bank_share >= BANK_SHARE_WARNING and main_process:
        held = " and each query's own positive from its previous epoch" if bank_share >= 1 else ""
        effect = ("scores them as negatives" if recipe["false_negatives"] == "keep"
                  else "masks those that are known positives (docs/methods.md#false-negatives)")
        log.warning("memory_size %d samples is %.0f%% of the %d training pairs: the bank holds the positives of "
                    "recent queries%s; false_negatives: %s %s", memory, 100 * bank_share, len(examples), held,
                    recipe["false_negatives"], effect)
    warmup = recipe["warmup_steps"] or int(round(recipe["warmup_ratio"] * total))

    params = list({id(p): p for p in model.parameters()}.values())
    optimizer = torch.optim.AdamW(params, lr=recipe["lr"], eps=recipe["adam_eps"],
                                  weight_decay=recipe["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, total))
    q_params, p_params = model.query_parameters(), model.passage_parameters()

    log_path = out / TRAIN_LOG
    start_step = 0
    # The newest checkpoint whose sha256 matches (a damaged one is reported and the one before used).
    resumed = checkpoint.load_latest_good(out, map_location=device)
    if resumed is not None:
        ckpt_path, state = resumed
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        method.load_state_dict(state["method"])
        saved = int(state.get("processes", 1))
        if saved != world:
            raise PipelineError(f"{ckpt_path}: written by {saved} process(es), resumed with {world}; resume with "
                                f"processes: {saved} or delete the checkpoint")
        set_rng_state(state["rng_per_process"][rank] if world > 1 else state["rng"], device)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_step = state["step"]
        distributed.barrier()  # every process has read the checkpoint before process 0 touches the log
        if main_process:
            _truncate_log(log_path, start_step)
        log.info("resuming from checkpoint %s at step %d of %d", ckpt_path, start_step, total)
    else:
        distributed.barrier()  # every process has looked for a checkpoint before process 0 writes
        if main_process:
            log_path.write_text("")
        log.info("training %s on %d pairs: %d updates of %d examples, %s", recipe["method"], len(examples),
                 total, per_update, describe(model))

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start_step, desc=f"train {recipe['method']}", unit="update",
               disable=not progress or not main_process, mininterval=2.0)
    every = int(recipe["checkpoint_every"])
    t_start = time.perf_counter()
    skipped_in_a_row = 0
    with open(log_path, "a") if main_process else open(os.devnull, "w") as log_file:
        plan = update_plan(data.epoch, per_update, seed, recipe["sampler"])
        for step, (epoch, examples, indices) in zip(range(start_step, total), islice(plan, start_step, None)):
            batch = [examples[i] for i in indices]

            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            stats = method.accumulate(batch)
            if fail_at_step is not None and step + 1 == fail_at_step:
                stats["loss"] = float("nan")  # test hook for the non-finite guard
            if overflow_at_step is not None and step + 1 == overflow_at_step and main_process:
                params[0].grad.view(-1)[0] = float("inf")  # test hook for the fp16 scaler
            distributed.all_reduce_grads(params)  # the one gradient synchronisation of this update
            if scaler is not None:
                scaler.unscale_(optimizer)
            gq = grad_norm(q_params)
            gp = gq if model.spec.tied else grad_norm(p_params)  # tied towers share every parameter
            # fp16: an overflowing gradient is the scaler's business (it skips the step); the
            # loss is computed in fp32, so a non-finite loss means the values are broken.
            overflow = scaler is not None and math.isfinite(stats["loss"]) and not all(map(math.isfinite, (gq, gp)))
            if not overflow and not all(map(math.isfinite, (stats["loss"], gq, gp))):
                raise PipelineError(f"step {step + 1}: non-finite loss or gradient (loss={stats['loss']}, "
                                    f"grad_norm_query={gq}, grad_norm_passage={gp}); last good checkpoint: "
                                    f"{checkpoint.latest(out) or 'none'}")
            if recipe["grad_clip"] and not overflow:
                torch.nn.utils.clip_grad_norm_(params, recipe["grad_clip"])
            lr = scheduler.get_last_lr()[0]
            extra = {}
            if scaler is not None:
                scale = scaler.get_scale()
                scaler.step(optimizer)  # skipped when unscale_ found inf/NaN (same in every process)
                scaler.update()
                extra = {"loss_scale": scale, "scaler_skipped": float(overflow)}
                skipped_in_a_row = skipped_in_a_row + 1 if overflow else 0
                if overflow and main_process:
                    log.warning("step %d: fp16 gradient overflow, update skipped; loss scale %g -> %g",
                                step + 1, scale, scaler.get_scale())
                if skipped_in_a_row >= MAX_SKIPPED:
                    raise PipelineError(f"step {step + 1}: {MAX_SKIPPED} fp16 overflows in a row (loss scale now "
                                        f"{scaler.get_scale():g}); the values are broken, not just out of fp16 "
                                        f"range; last good checkpoint: {checkpoint.latest(out) or 'none'}")
            else:
                optimizer.step()
            with warnings.catch_warnings():  # a skipped first fp16 update makes torch warn here
                warnings.simplefilter("ignore", UserWarning)
                scheduler.step()
            method.after_optimizer_step()

            peak = peak_memory_mb(device)
            if world > 1:
                extra["peak_mem_mb_per_process"] = [v[0] for v in distributed.all_gather_floats([peak])]
                peak = max(extra["peak_mem_mb_per_process"])
            row = {"step": step + 1, "epoch": epoch, "lr": lr, **{k: float(v) for k, v in stats.items()},
                   "grad_norm_query": gq, "grad_norm_passage": gp,
                   "grad_norm_ratio": gp / gq if gq > 0 else float("nan"),
                   "seconds": time.perf_counter() - t0, "peak_mem_mb": peak, "time": time.time(), **extra}
            log_file.write(json.dumps(row) + "\n")
            log_file.flush()
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            bar.update(1)
            if on_update is not None:
                on_update(step + 1)
            if every and (step + 1) % every == 0 and step + 1 < total:
                _save_checkpoint(out, model, optimizer, scheduler, method, device, step + 1, scaler)
    bar.close()
    if not main_process:
        distributed.barrier()  # process 0 writes the outputs
        distributed.shutdown()
        return {}

    spec.query_max_length, spec.passage_max_length = eval_lengths
    model.to("cpu").save(out / MODEL)
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    summary = {
        "method": recipe["method"], "steps": total, "examples": len(examples), "examples_per_update": per_update,
        **method.shape(), "resumed_from_step": start_step, "seconds": time.perf_counter() - t_start,
        "started_at": started_at, "finished_at": time.time(),
        "sec_per_update": float(np.median([r["seconds"] for r in rows])) if rows else 0.0,
        "peak_mem_mb": max((r["peak_mem_mb"] for r in rows), default=0.0),
        "final_loss": rows[-1]["loss"] if rows else None, "device": device.type,
        "false_negatives": recipe["false_negatives"], "sampler": recipe["sampler"],
        **_encoder_provenance(model), **data.provenance(),
        "gradient_checkpointing": bool(recipe["gradient_checkpointing"]),
    }
    if method.has_memory:
        summary["bank_share"] = bank_share
    if method.guide is not None:
        # The guide's cost: its forwards (none for "self") and the filter mask, over the run.
        guide_seconds = float(sum(r.get("guide_seconds", 0.0) for r in rows))
        train_seconds = float(sum(r["seconds"] for r in rows))
        summary.update(negative_filter=recipe["negative_filter"], guide_seconds=guide_seconds,
                       guide_share=guide_seconds / train_seconds if train_seconds else 0.0,
                       filtered_per_row=float(np.mean([r["filtered_per_row"] for r in rows])) if rows else 0.0)
    if world > 1 or precision != "fp32":
        summary.update(processes=world, precision=precision,
                       skipped_updates=int(sum(r.get("scaler_skipped", 0) for r in rows)))
        if world > 1:
            summary["peak_mem_mb_per_process"] = [max(r["peak_mem_mb_per_process"][i] for r in rows)
                                                  for i in range(world)]
    atomic_write_json(out / TRAIN_SUMMARY, summary)
    checkpoint.remove_all(out)
    distributed.barrier()
    distributed.shutdown()
    return summary


def _encoder_provenance(model: BiEncoder) -> dict:
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


def _save_checkpoint(out: Path, model, optimizer, scheduler, method, device, step: int, scaler=None) -> None:
    """Process 0 writes model, optimizer, schedule, method state (banks: identical in every
    process, which is checked) and every process's RNG state; the others only contribute."""
    rngs = distributed.all_gather_object(rng_state(device))
    banks = [v["rows"] for _, v in sorted(method.state_dict().items()) if isinstance(v, dict) and "rows" in v]
    distributed.assert_identical(banks, "memory banks")
    if not distributed.is_main():
        return
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "method": method.state_dict(), "rng": rngs[0], "step": step}
    if len(rngs) > 1:
        state.update(processes=len(rngs), rng_per_process=rngs)
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    path = checkpoint.save(out, step, state)
    log.info("checkpoint at step %d -> %s", step, path)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint, so a resumed log has each step once."""
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep))


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.training.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="normalised dataset folder (output of pipeline.sources.prepare)")
    parser.add_argument("--out", required=True, help="output folder for model/, train_log.jsonl, train_summary.json")
    parser.add_argument("--recipe-json", required=True, help="resolved run recipe as JSON (see config/schema.yaml)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--hard-negatives", help="BM25 negatives JSONL (output of pipeline.training.hardneg)")
    parser.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    args = parser.parse_args(argv)
    recipe = parse_json_object(args.recipe_json, "--recipe-json")
    fail_at = os.environ.get("PIPELINE_FAIL_AT_STEP")
    overflow_at = os.environ.get("PIPELINE_OVERFLOW_AT_STEP")
    summary = train(args.dataset, args.out, recipe, args.seed, args.hard_negatives,
                    progress=not args.no_progress, fail_at_step=int(fail_at) if fail_at else None,
                    overflow_at_step=int(overflow_at) if overflow_at else None)
    log.info("done: %s", json.dumps(summary))


if __name__ == "__main__":
    run_main(main)
