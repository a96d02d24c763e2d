"""Train a bi-encoder with one of the registered InfoNCE methods.

One loop serves every method (nanoGPT-style: read it top to bottom). Per optimizer update it
takes N_total examples, lets the method accumulate gradients, clips, steps AdamW and the
warm-up + linear-decay schedule, and appends one JSON line to train_log.jsonl. Checkpoints
carry everything needed to resume bit-for-bit: model, optimizer, scheduler, RNG states, the
position in the data order and the method's memory banks.

Outputs in --out: model/ (a BiEncoder folder), train_log.jsonl, train_summary.json (last).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import time
from pathlib import Path

import numpy as np
import torch

from .common import (PipelineError, atomic_path, atomic_write_json, log, parse_json_object, run_main,
                     seed_everything)
from .datasets import TrainingData, load_dataset
from .encoder import BiEncoder, EncoderSpec, describe
from .layout import MODEL, TRAIN_LOG, TRAIN_SUMMARY
from .params import ZERO_SHOT, resolve_recipe

CHECKPOINT = "checkpoint.pt"


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


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The data order of one epoch depends only on (seed, epoch), so a resumed run replays it."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


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
          progress: bool = True, fail_at_step: int | None = None) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe = resolve_recipe(recipe)
    spec = EncoderSpec.from_dict(recipe["encoder"])
    started_at = time.time()

    if recipe["method"] == ZERO_SHOT:
        BiEncoder.from_spec(spec).save(out / MODEL, weights=False)
        summary = {"method": ZERO_SHOT, "steps": 0, "examples": 0, "seconds": 0.0}
        (out / TRAIN_LOG).write_text("")
        atomic_write_json(out / TRAIN_SUMMARY, summary)
        return summary

    from .fanoise import FANoise
    from .methods import get_method

    seed_everything(seed)
    device = pick_device(recipe.get("device", "auto"))
    if device.type == "cuda" and recipe.get("cuda_memory_fraction"):
        # Emulates a smaller GPU, as the ContAccum paper does on an 80 GB card.
        torch.cuda.set_per_process_memory_fraction(float(recipe["cuda_memory_fraction"]), device)

    ds = load_dataset(dataset_dir)
    hn_cfg = recipe.get("hard_negatives") or {}
    negatives = None
    if hn_cfg:
        if not hard_negatives:
            raise PipelineError("hard_negatives is set in the recipe but no --hard-negatives file was given")
        from .hardneg import load_hard_negatives

        negatives = load_hard_negatives(hard_negatives)
    # The examples of each epoch (the dataset's own hard negatives are redrawn per epoch).
    data = TrainingData(ds, recipe["train_split"], negatives, hn_cfg, seed)
    examples = data.epoch(0)

    model = BiEncoder.from_spec(spec).to(device)
    # Training may use shorter sequences than evaluation (CPU budget); the saved spec keeps the
    # evaluation lengths.
    eval_lengths = (spec.query_max_length, spec.passage_max_length)
    spec.query_max_length = recipe.get("train_query_max_length") or spec.query_max_length
    spec.passage_max_length = recipe.get("train_passage_max_length") or spec.passage_max_length
    model.train()

    noise = FANoise.from_config(recipe.get("fanoise"))
    method = get_method(recipe["method"])(model, recipe, noise=noise)
    per_update = method.examples_per_update
    updates_per_epoch = len(examples) // per_update
    if updates_per_epoch == 0:
        raise PipelineError(f"{dataset_dir}: split {recipe['train_split']!r} has {len(examples)} training pairs, "
                            f"fewer than one update of {per_update} (batch_size x accumulation_steps)")
    total = recipe.get("max_steps") or max(1, math.ceil(recipe["epochs"] * updates_per_epoch))
    warmup = recipe.get("warmup_steps") or int(round(recipe.get("warmup_ratio", 0.0) * total))

    params = list({id(p): p for p in model.parameters()}.values())
    optimizer = torch.optim.AdamW(params, lr=recipe["lr"], eps=recipe["adam_eps"],
                                  weight_decay=recipe["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, total))
    q_params, p_params = model.query_parameters(), model.passage_parameters()

    log_path, ckpt_path = out / TRAIN_LOG, out / CHECKPOINT
    start_step = 0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        method.load_state_dict(state["method"])
        set_rng_state(state["rng"], device)
        start_step = state["step"]
        _truncate_log(log_path, start_step)
        log.info("resuming from checkpoint %s at step %d of %d", ckpt_path, start_step, total)
    else:
        log_path.write_text("")
        log.info("training %s on %d pairs: %d updates of %d examples, %s", recipe["method"], len(examples),
                 total, per_update, describe(model))

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start_step, desc=f"train {recipe['method']}", unit="update",
               disable=not progress, mininterval=2.0)
    every = int(recipe.get("checkpoint_every") or 0)
    t_start = time.perf_counter()
    with open(log_path, "a") as log_file:
        for step in range(start_step, total):
            epoch, pos = divmod(step, updates_per_epoch)
            order = epoch_order(len(examples), seed, epoch)
            examples = data.epoch(epoch)
            batch = [examples[i] for i in order[pos * per_update:(pos + 1) * per_update]]

            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            stats = method.accumulate(batch)
            if fail_at_step is not None and step + 1 == fail_at_step:
                stats["loss"] = float("nan")  # test hook for the non-finite guard
            gq, gp = grad_norm(q_params), grad_norm(p_params)
            if not all(map(math.isfinite, (stats["loss"], gq, gp))):
                raise PipelineError(f"step {step + 1}: non-finite loss or gradient (loss={stats['loss']}, "
                                    f"grad_norm_query={gq}, grad_norm_passage={gp}); last good checkpoint: "
                                    f"{ckpt_path if ckpt_path.exists() else 'none'}")
            if recipe.get("grad_clip"):
                torch.nn.utils.clip_grad_norm_(params, recipe["grad_clip"])
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            method.after_optimizer_step()

            row = {"step": step + 1, "epoch": epoch, "lr": lr, **{k: float(v) for k, v in stats.items()},
                   "grad_norm_query": gq, "grad_norm_passage": gp,
                   "grad_norm_ratio": gp / gq if gq > 0 else float("nan"),
                   "seconds": time.perf_counter() - t0, "peak_mem_mb": peak_memory_mb(device),
                   "time": time.time()}
            log_file.write(json.dumps(row) + "\n")
            log_file.flush()
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            bar.update(1)
            if every and (step + 1) % every == 0 and step + 1 < total:
                _save_checkpoint(ckpt_path, model, optimizer, scheduler, method, device, step + 1)
    bar.close()

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
    }
    atomic_write_json(out / TRAIN_SUMMARY, summary)
    ckpt_path.unlink(missing_ok=True)
    return summary


def _save_checkpoint(path: Path, model, optimizer, scheduler, method, device, step: int) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "method": method.state_dict(), "rng": rng_state(device), "step": step}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    log.info("checkpoint at step %d -> %s", step, path)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint, so a resumed log has each step once."""
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep))


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="normalised dataset folder (output of pipeline.data)")
    parser.add_argument("--out", required=True, help="output folder for model/, train_log.jsonl, train_summary.json")
    parser.add_argument("--recipe-json", required=True, help="resolved run recipe as JSON (see config/schema.yaml)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--hard-negatives", help="BM25 negatives JSONL (output of pipeline.hardneg)")
    parser.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    args = parser.parse_args(argv)
    recipe = parse_json_object(args.recipe_json, "--recipe-json")
    fail_at = os.environ.get("PIPELINE_FAIL_AT_STEP")
    summary = train(args.dataset, args.out, recipe, args.seed, args.hard_negatives,
                    progress=not args.no_progress, fail_at_step=int(fail_at) if fail_at else None)
    log.info("done: %s", json.dumps(summary))


if __name__ == "__main__":
    run_main(main)
