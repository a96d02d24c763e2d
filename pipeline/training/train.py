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

The loop reads as its phases: `setup` (processes, seeds, data, model, method, optimizer,
schedule, precision), `resume` (the newest good checkpoint, or a fresh log), `update` (one
optimizer update), `save_checkpoint` and `finish` (model, summary). Tests and the bench look in
through a `TrainHooks` object (pipeline.training.hooks).

Outputs in --out: model/ (a BiEncoder folder), train_log.jsonl, train_summary.json (last).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

import torch

from pipeline.core.common import (PipelineError, atomic_write_json, log, parse_json_object, run_main, seed_everything,
                                  step_parser)
from pipeline.core.layout import MODEL, TRAIN_LOG, TRAIN_SUMMARY
from pipeline.core.params import ZERO_SHOT, Recipe
from pipeline.models.encoder import BiEncoder, EncoderSpec, describe
from pipeline.sources.datasets import load_dataset
from pipeline.training import checkpoint, distributed
from pipeline.training.fanoise import FANoise
from pipeline.training.hardneg import load_hard_negatives
from pipeline.training.hooks import FaultInjection, TrainHooks
from pipeline.training.methods import get_method
from pipeline.training.methods.base import TrainingMethod, as_recipe
from pipeline.training.pairs import TrainingData
from pipeline.training.runtime import (grad_norm, linear_schedule, peak_memory_mb, pick_device, rng_state,
                                       set_rng_state, truncate_log)
from pipeline.training.sampler import update_plan
from pipeline.training.summary import summarize, zero_shot_summary

MAX_SKIPPED = 20  # fp16: this many overflow-skipped updates in a row means the values are broken
# A bank holding this share of the training pairs holds recent queries' positives often enough to
# matter under `false_negatives: keep`; at 1.0 it holds each query's own positive from its last epoch.
BANK_SHARE_WARNING = 0.1


@dataclass
class Run:
    """What `setup` builds and the later phases share."""

    out: Path
    recipe: Recipe
    seed: int
    device: torch.device
    rank: int
    world: int
    data: TrainingData
    examples: list  # epoch 0's training examples
    model: BiEncoder
    eval_spec: EncoderSpec  # the spec saved with the model: evaluation's sequence lengths
    method: TrainingMethod
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    params: list  # every trainable tensor once (tied towers share them)
    total: int
    bank_share: float
    started_at: float
    start_step: int = 0
    skipped_in_a_row: int = 0

    @property
    def main_process(self) -> bool:
        return self.rank == 0

    @property
    def log_path(self) -> Path:
        return self.out / TRAIN_LOG


# ----------------------------------------------------------------------------- the loop
def train(dataset_dir: str, out_dir: str, recipe: dict | Recipe, seed: int, hard_negatives: str | None = None,
          progress: bool = True, hooks: TrainHooks | None = None) -> dict:
    """Train, resuming from a checkpoint in `out_dir` if there is one; returns the summary
    (empty in processes other than 0)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe = as_recipe(recipe)
    hooks = hooks or TrainHooks()
    started_at = time.time()
    if recipe.method == ZERO_SHOT:
        return save_zero_shot(out, recipe, seed, started_at)

    run = setup(dataset_dir, out, recipe, seed, hard_negatives, started_at)
    resume(run)

    from tqdm.auto import tqdm

    bar = tqdm(total=run.total, initial=run.start_step, desc=f"train {recipe.method}", unit="update",
               disable=not progress or not run.main_process, mininterval=2.0)
    every = int(recipe.checkpoint_every)
    t_start = time.perf_counter()
    examples = run.examples
    with open(run.log_path, "a") if run.main_process else open(os.devnull, "w") as log_file:
        plan = update_plan(run.data.epoch, run.method.examples_per_update, seed, recipe.sampler)
        for step, (epoch, examples, indices) in zip(range(run.start_step, run.total), islice(plan, run.start_step, None)):
            row = update(run, [examples[i] for i in indices], step, epoch, hooks)
            log_file.write(json.dumps(row) + "\n")
            log_file.flush()
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            bar.update(1)
            hooks.after_update(step + 1)
            if every and (step + 1) % every == 0 and step + 1 < run.total:
                save_checkpoint(run, step + 1)
    bar.close()
    return finish(run, len(examples), time.perf_counter() - t_start)


def save_zero_shot(out: Path, recipe: Recipe, seed: int, started_at: float) -> dict:
    """An untrained run: the model's spec, and its weights only when random (a random zero-shot
    control cannot be rebuilt from the model name)."""
    seed_everything(seed)
    spec = EncoderSpec.from_dict(recipe.encoder)
    model = BiEncoder.from_spec(spec)
    model.save(out / MODEL, weights=spec.random_init)
    summary = zero_shot_summary(recipe, model, started_at, time.time())
    (out / TRAIN_LOG).write_text("")
    atomic_write_json(out / TRAIN_SUMMARY, summary)
    return summary


# ----------------------------------------------------------------------------- setup
def setup(dataset_dir: str, out: Path, recipe: Recipe, seed: int, hard_negatives: str | None,
          started_at: float) -> Run:
    """Processes, seeds, data, model, method, optimizer, schedule and precision, in the order
    that fixes the random draws (a resumed run replays it before restoring the RNG states)."""
    seed_everything(seed)
    device, rank, world = start_processes(recipe)
    data = training_data(dataset_dir, recipe, seed, hard_negatives)
    examples = data.epoch(0)

    eval_spec = EncoderSpec.from_dict(recipe.encoder)
    model = BiEncoder.from_spec(eval_spec).to(device)
    # Training may use shorter sequences than evaluation (CPU budget); finish saves eval_spec.
    model.spec = replace(eval_spec,
                         query_max_length=recipe.train_query_max_length or eval_spec.query_max_length,
                         passage_max_length=recipe.train_passage_max_length or eval_spec.passage_max_length)
    model.train()

    method = get_method(recipe.method)(model, recipe, noise=FANoise.from_config(recipe.fanoise))
    method.positives = data.known_positives()
    scaler = torch.amp.GradScaler(device.type) if recipe.precision == "fp16" else None
    method.scaler = scaler
    per_update = method.examples_per_update
    updates_per_epoch = len(examples) // per_update
    if updates_per_epoch == 0:
        raise PipelineError(f"{dataset_dir}: split {recipe.train_split!r} has {len(examples)} training pairs, "
                            f"fewer than one update of {per_update} (batch_size x accumulation_steps"
                            f"{' x processes' if world > 1 else ''})")
    total = recipe.max_steps or max(1, math.ceil(recipe.epochs * updates_per_epoch))
    bank_share = method.shape()["memory_size"] / len(examples)
    if bank_share >= BANK_SHARE_WARNING and rank == 0:
        warn_bank_share(recipe, method.shape()["memory_size"], len(examples), bank_share)
    warmup = recipe.warmup_steps or int(round(recipe.warmup_ratio * total))

    params = list({id(p): p for p in model.parameters()}.values())
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, eps=recipe.adam_eps, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, total))
    return Run(out=out, recipe=recipe, seed=seed, device=device, rank=rank, world=world, data=data,
               examples=examples, model=model, eval_spec=eval_spec, method=method, optimizer=optimizer,
               scheduler=scheduler, scaler=scaler, params=params, total=total, bank_share=bank_share,
               started_at=started_at)


def start_processes(recipe: Recipe) -> tuple[torch.device, int, int]:
    """(device, rank, world): this process's device and place among the torchrun processes."""
    device = pick_device(recipe.device)
    processes = int(recipe.processes)
    if processes != distributed.env_world_size():
        raise PipelineError(f"training.processes is {processes} but {distributed.env_world_size()} process(es) were "
                            f"started; launch with `torchrun --standalone --nproc_per_node {processes} -m "
                            "pipeline.training.train ...` (plain python for 1)")
    rank, world, local_rank = distributed.init_from_env(device.type)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
    if rank != 0:
        log.setLevel(logging.WARNING)  # process 0 reports progress; the others only problems
    if device.type == "cuda" and recipe.cuda_memory_fraction:
        # Emulates a smaller GPU, as the ContAccum paper does on an 80 GB card.
        torch.cuda.set_per_process_memory_fraction(float(recipe.cuda_memory_fraction), device)
    return device, rank, world


def training_data(dataset_dir: str, recipe: Recipe, seed: int, hard_negatives: str | None) -> TrainingData:
    """The examples of each epoch (the dataset's own hard negatives are redrawn per epoch)."""
    ds = load_dataset(dataset_dir)
    hn_cfg = recipe.hard_negatives or {}
    negatives = None
    if hn_cfg:
        if not hard_negatives:
            raise PipelineError("hard_negatives is set in the recipe but no --hard-negatives file was given")
        negatives = load_hard_negatives(hard_negatives)
    return TrainingData(ds, recipe.train_split, negatives, hn_cfg, seed, pairs=recipe.pairs)


def warn_bank_share(recipe: Recipe, memory: int, pairs: int, share: float) -> None:
    held = " and each query's own positive from its previous epoch" if share >= 1 else ""
    effect = ("scores them as negatives" if recipe.false_negatives == "keep"
              else "masks those that are known positives (docs/methods.md#false-negatives)")
    log.warning("memory_size %d samples is %.0f%% of the %d training pairs: the bank holds the positives of "
                "recent queries%s; false_negatives: %s %s", memory, 100 * share, pairs, held,
                recipe.false_negatives, effect)


# ----------------------------------------------------------------------------- resume
def resume(run: Run) -> None:
    """Restore the newest checkpoint whose sha256 matches (a damaged one is reported and the one
    before used) in every process, or start a fresh log."""
    resumed = checkpoint.load_latest_good(run.out, map_location=run.device)
    if resumed is None:
        distributed.barrier()  # every process has looked for a checkpoint before process 0 writes
        if run.main_process:
            run.log_path.write_text("")
        log.info("training %s on %d pairs: %d updates of %d examples, %s", run.recipe.method, len(run.examples),
                 run.total, run.method.examples_per_update, describe(run.model))
        return
    ckpt_path, state = resumed
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.method.load_state_dict(state["method"])
    saved = int(state.get("processes", 1))
    if saved != run.world:
        raise PipelineError(f"{ckpt_path}: written by {saved} process(es), resumed with {run.world}; resume with "
                            f"processes: {saved} or delete the checkpoint")
    set_rng_state(state["rng_per_process"][run.rank] if run.world > 1 else state["rng"], run.device)
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.start_step = state["step"]
    distributed.barrier()  # every process has read the checkpoint before process 0 touches the log
    if run.main_process:
        truncate_log(run.log_path, run.start_step)
    log.info("resuming from checkpoint %s at step %d of %d", ckpt_path, run.start_step, run.total)


# ----------------------------------------------------------------------------- update
def update(run: Run, batch: list, step: int, epoch: int, hooks: TrainHooks) -> dict:
    """One optimizer update on `batch` (0-based `step`); returns its train_log.jsonl row."""
    t0 = time.perf_counter()
    run.optimizer.zero_grad(set_to_none=True)
    stats = run.method.accumulate(batch)
    hooks.after_backward(step + 1, stats, run.params, run.main_process)
    distributed.all_reduce_grads(run.params)  # the one gradient synchronisation of this update
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    gq = grad_norm(run.model.query_parameters())
    gp = gq if run.model.spec.tied else grad_norm(run.model.passage_parameters())
    # fp16: an overflowing gradient is the scaler's business (it skips the step); the loss is
    # computed in fp32, so a non-finite loss means the values are broken.
    overflow = run.scaler is not None and math.isfinite(stats["loss"]) and not all(map(math.isfinite, (gq, gp)))
    if not overflow and not all(map(math.isfinite, (stats["loss"], gq, gp))):
        raise PipelineError(f"step {step + 1}: non-finite loss or gradient (loss={stats['loss']}, "
                            f"grad_norm_query={gq}, grad_norm_passage={gp}); last good checkpoint: "
                            f"{checkpoint.latest(run.out) or 'none'}")
    if run.recipe.grad_clip and not overflow:
        torch.nn.utils.clip_grad_norm_(run.params, run.recipe.grad_clip)
    lr = run.scheduler.get_last_lr()[0]
    extra = optimizer_step(run, step, overflow)
    with warnings.catch_warnings():  # a skipped first fp16 update makes torch warn here
        warnings.simplefilter("ignore", UserWarning)
        run.scheduler.step()
    run.method.after_optimizer_step()

    peak = peak_memory_mb(run.device)
    if run.world > 1:
        extra["peak_mem_mb_per_process"] = [v[0] for v in distributed.all_gather_floats([peak])]
        peak = max(extra["peak_mem_mb_per_process"])
    return {"step": step + 1, "epoch": epoch, "lr": lr, **{k: float(v) for k, v in stats.items()},
            "grad_norm_query": gq, "grad_norm_passage": gp, "grad_norm_ratio": gp / gq if gq > 0 else float("nan"),
            "seconds": time.perf_counter() - t0, "peak_mem_mb": peak, "time": time.time(), **extra}


def optimizer_step(run: Run, step: int, overflow: bool) -> dict:
    """AdamW's step, through the fp16 scaler when there is one; returns the scaler's log columns."""
    if run.scaler is None:
        run.optimizer.step()
        return {}
    scale = run.scaler.get_scale()
    run.scaler.step(run.optimizer)  # skipped when unscale_ found inf/NaN (same in every process)
    run.scaler.update()
    run.skipped_in_a_row = run.skipped_in_a_row + 1 if overflow else 0
    if overflow and run.main_process:
        log.warning("step %d: fp16 gradient overflow, update skipped; loss scale %g -> %g",
                    step + 1, scale, run.scaler.get_scale())
    if run.skipped_in_a_row >= MAX_SKIPPED:
        raise PipelineError(f"step {step + 1}: {MAX_SKIPPED} fp16 overflows in a row (loss scale now "
                            f"{run.scaler.get_scale():g}); the values are broken, not just out of fp16 "
                            f"range; last good checkpoint: {checkpoint.latest(run.out) or 'none'}")
    return {"loss_scale": scale, "scaler_skipped": float(overflow)}


# ----------------------------------------------------------------------------- checkpoint
def save_checkpoint(run: Run, step: int) -> None:
    """Process 0 writes model, optimizer, schedule, method state (banks: identical in every
    process, which is checked) and every process's RNG state; the others only contribute."""
    rngs = distributed.all_gather_object(rng_state(run.device))
    banks = [v["rows"] for _, v in sorted(run.method.state_dict().items()) if isinstance(v, dict) and "rows" in v]
    distributed.assert_identical(banks, "memory banks")
    if not run.main_process:
        return
    state = {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
             "scheduler": run.scheduler.state_dict(), "method": run.method.state_dict(), "rng": rngs[0], "step": step}
    if len(rngs) > 1:
        state.update(processes=len(rngs), rng_per_process=rngs)
    if run.scaler is not None:
        state["scaler"] = run.scaler.state_dict()
    path = checkpoint.save(run.out, step, state)
    log.info("checkpoint at step %d -> %s", step, path)


# ----------------------------------------------------------------------------- finish
def finish(run: Run, n_examples: int, seconds: float) -> dict:
    """Process 0 saves the model with its evaluation spec and writes the summary; the run's
    checkpoints go once the summary exists."""
    if not run.main_process:
        distributed.barrier()  # process 0 writes the outputs
        distributed.shutdown()
        return {}
    run.model.spec = run.eval_spec
    run.model.to("cpu").save(run.out / MODEL)
    rows = [json.loads(line) for line in run.log_path.read_text().splitlines() if line.strip()]
    summary = summarize(run, rows, n_examples, seconds, time.time())
    atomic_write_json(run.out / TRAIN_SUMMARY, summary)
    checkpoint.remove_all(run.out)
    distributed.barrier()
    distributed.shutdown()
    return summary


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    parser = step_parser("python -m pipeline.training.train", __doc__, {
        "dataset": "normalised dataset folder (output of pipeline.sources.prepare)",
        "out": "output folder for model/, train_log.jsonl, train_summary.json"})
    parser.add_argument("--recipe-json", required=True, help="resolved run recipe as JSON (see config/schema.yaml)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--hard-negatives", help="BM25 negatives JSONL (output of pipeline.training.hardneg)")
    parser.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    args = parser.parse_args(argv)
    recipe = parse_json_object(args.recipe_json, "--recipe-json")
    summary = train(args.dataset, args.out, recipe, args.seed, args.hard_negatives,
                    progress=not args.no_progress, hooks=FaultInjection.from_env())
    log.info("done: %s", json.dumps(summary))


if __name__ == "__main__":
    run_main(main)
