"""One-GPU check of the training methods, their precisions and a memory cap, in one short run.

    python -m pipeline.bench.gpu_check [--out results/gpu_check]      (make gpu-check)
    python -m pipeline.bench.gpu_check --dry-run                       (make gpu-check DRY_RUN=1; CPU)

Three parts, one table:
- train: every registered method x precision fp32 / bf16 / fp16 x gradient checkpointing off / on,
  `--updates` optimizer updates each (MiniLM, untied towers, N_local 8, K 4): seconds per update,
  peak CUDA memory, the last loss, and for fp16 how many updates the gradient scaler skipped.
- cap: a child process caps itself with torch.cuda.set_per_process_memory_fraction (the
  `cuda_memory_fraction` recipe key's mechanism; `--cuda-memory-fraction`, default `--cap-gb` of
  the device) and trains a BERT-base-sized random encoder (untied, fp32, lengths 32/256, as the
  ContAccum paper's 11 GB setting) at each N_total with N_local 8: which methods fit. Out of memory
  is caught per case and reported as `oom`.
- encode: corpus encoding (BiEncoder.encode_texts) of synthetic passages under fp32 / bf16 / fp16
  autocast: passages per second and the largest difference from the fp32 embeddings.

`--dry-run` runs all of it on the CPU short of CUDA: a tiny random BERT, 2 updates, small
N_total, no cap (the child process still runs), a few passages; the CPU ignores the encoding
precision. Writes OUT/gpu_check.csv and OUT/gpu_check.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.core.params import PRECISIONS
from pipeline.core.common import PipelineError, atomic_write_text, log, run_main
from pipeline.bench.memory import synthetic_examples
from pipeline.training.methods import get_method, available

COLUMNS = ["part", "method", "precision", "checkpointing", "n_local", "n_total", "status", "sec_per_update",
           "peak_mem_mb", "note"]
RESULT_TAG = "GPU_CHECK_RESULT "


@dataclass
class Settings:
    """What one run does; `dry` shrinks everything to a CPU smoke test of the same code."""

    dry: bool = False
    updates: int = 20
    n_local: int = 8
    accumulation_steps: int = 4
    query_length: int = 32
    passage_length: int = 128
    cap_n_totals: list = field(default_factory=lambda: [32, 64, 128])
    cap_n_local: int = 8
    cap_passage_length: int = 256
    cap_gb: float = 11.0                 # the cap when no fraction is given (the paper's 11 GB setting)
    cuda_memory_fraction: float | None = None
    encode_passages: int = 4096
    encode_batch: int = 256
    max_seconds: float = 450.0

    @classmethod
    def for_dry_run(cls) -> "Settings":
        return cls(dry=True, updates=2, n_local=2, accumulation_steps=2, query_length=8, passage_length=16,
                   cap_n_totals=[4, 8], cap_n_local=2, cap_passage_length=16, encode_passages=64, encode_batch=16)


def random_bert_dir(out: Path, tiny: bool) -> Path:
    """A model folder with only a BERT config and MiniLM's tokenizer (bert-base-uncased's
    vocabulary), for `random_init: true`: BERT-base-sized, or tiny for the dry run."""
    from transformers import AutoTokenizer, BertConfig

    from pipeline.models.encoder import packaged_minilm_path  # why: loads torch; kept out of this module's import

    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64) if tiny else {}
    BertConfig(**size).save_pretrained(out)
    AutoTokenizer.from_pretrained(str(packaged_minilm_path())).save_pretrained(out)
    return out


def build_model(path: str, random_init: bool, query_length: int, passage_length: int, device):
    from pipeline.models.encoder import BiEncoder, EncoderSpec  # why: loads torch; kept out of this module's import

    spec = EncoderSpec(model=path, tied=False, random_init=random_init, query_max_length=query_length,
                       passage_max_length=passage_length)
    return BiEncoder.from_spec(spec).to(device).train()


def recipe_for(method: str, n_local: int, n_total: int, precision: str, ckpt: bool) -> dict:
    batch = n_total if method == "inbatch" else n_local
    return {"batch_size": batch, "accumulation_steps": n_total // batch, "memory_size": n_total,
            "precision": precision, "gradient_checkpointing": ckpt, "temperature": 0.05}


def peak_mb(device) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def train_updates(model, method_name: str, recipe: dict, updates: int, device) -> dict:
    """Allocate gradients and AdamW state, then `updates` optimizer updates on synthetic
    examples; the first is warm-up and not timed."""
    import torch

    method = get_method(method_name)(model, recipe)
    scaler = torch.amp.GradScaler(device.type) if recipe["precision"] == "fp16" else None
    method.scaler = scaler
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    n = method.examples_per_update
    data = synthetic_examples(model.tokenizer, n * updates, query_words=model.spec.query_max_length * 2,
                              passage_words=model.spec.passage_max_length * 2, seed=0)
    times, skipped, loss = [], 0, math.nan
    for step in range(updates):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = method.accumulate(data[step * n:(step + 1) * n])["loss"]
        if scaler is not None:
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            skipped += scaler.get_scale() < scale
        else:
            optimizer.step()
        method.after_optimizer_step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step or updates == 1:
            times.append(time.perf_counter() - start)
    status = "ok" if math.isfinite(loss) else "non-finite loss"
    return {"status": status, "sec_per_update": round(sum(times) / len(times), 4),
            "note": f"loss {loss:.4f}" + (f", {skipped} fp16 updates skipped" if scaler is not None else "")}


def fresh_peak(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# ----------------------------------------------------------------------------- the three parts
def train_part(settings: Settings, model_path: str, random_init: bool, device, deadline: float) -> list[dict]:
    rows = []
    n_total = settings.n_local * settings.accumulation_steps
    for method in available():
        for precision in PRECISIONS:
            for ckpt in (False, True):
                row = {"part": "train", "method": method, "precision": precision, "checkpointing": ckpt,
                       "n_local": settings.n_local, "n_total": n_total}
                if time.time() > deadline:
                    rows.append({**row, "status": "skipped (time)"})
                    continue
                fresh_peak(device)
                model = build_model(model_path, random_init, settings.query_length, settings.passage_length, device)
                recipe = recipe_for(method, settings.n_local, n_total, precision, ckpt)
                rows.append({**row, **train_updates(model, method, recipe, settings.updates, device),
                             "peak_mem_mb": peak_mb(device)})
                log.info("train %s %s ckpt=%s: %s", method, precision, ckpt, rows[-1]["status"])
                del model
    return rows


CAP_CASES = (("inbatch", False), ("inbatch", True), ("gradaccum", False), ("gradcache", False),
             ("contaccum", False), ("sogclr", False))


def cap_child(spec: dict) -> None:
    """In its own process (the cap and any out-of-memory stay here): cap the CUDA allocator,
    then try every (method, N_total) and print one result line per case."""
    import torch

    settings = Settings(**spec["settings"])
    device = torch.device(spec["device"])
    fraction = spec["fraction"]
    if fraction:
        torch.cuda.set_per_process_memory_fraction(fraction, device)
    deadline = spec["deadline"]
    for n_total in settings.cap_n_totals:
        for method, ckpt in CAP_CASES:
            row = {"part": "cap", "method": method, "precision": "fp32", "checkpointing": ckpt,
                   "n_local": n_total if method == "inbatch" else settings.cap_n_local, "n_total": n_total,
                   "note": f"cap {fraction:.3f} of the device" if fraction else "no cap (dry run)"}
            if time.time() > deadline:
                print(RESULT_TAG + json.dumps({**row, "status": "skipped (time)"}), flush=True)
                continue
            fresh_peak(device)
            try:
                model = build_model(spec["model"], True, 32, settings.cap_passage_length, device)
                recipe = recipe_for(method, settings.cap_n_local, n_total, "fp32", ckpt)
                result = train_updates(model, method, recipe, 2, device)
                row.update(status=result["status"], sec_per_update=result["sec_per_update"])
            except torch.OutOfMemoryError:
                row.update(status="oom")
            row["peak_mem_mb"] = peak_mb(device)
            model = None  # free the graph and the optimizer before the next case
            print(RESULT_TAG + json.dumps(row), flush=True)


def cap_part(settings: Settings, model_dir: Path, device, deadline: float) -> list[dict]:
    fraction = settings.cuda_memory_fraction
    spec = {"settings": asdict(settings), "device": str(device), "model": str(model_dir),
            "fraction": fraction if device.type == "cuda" else None, "deadline": deadline}
    proc = subprocess.run([sys.executable, "-m", "pipeline.bench.gpu_check", "--cap-child", json.dumps(spec)],
                          stdout=subprocess.PIPE, text=True)
    rows = [json.loads(line[len(RESULT_TAG):]) for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0:
        rows.append({"part": "cap", "method": "-", "status": f"child failed (exit {proc.returncode})"})
    return rows


def encode_part(settings: Settings, model_path: str, random_init: bool, device) -> list[dict]:
    import numpy as np

    model = build_model(model_path, random_init, 32, 256, device).eval()
    texts = [ex.positive for ex in synthetic_examples(model.tokenizer, settings.encode_passages, 4, 512, seed=1)]
    rows, reference = [], None
    for precision in PRECISIONS:
        model.encode_texts(texts[:settings.encode_batch], "passage", settings.encode_batch, False, precision=precision)
        fresh_peak(device)
        start = time.perf_counter()
        emb = model.encode_texts(texts, "passage", settings.encode_batch, progress=False, precision=precision)
        seconds = time.perf_counter() - start
        reference = emb if reference is None else reference
        note = f"max abs diff from fp32 {float(np.abs(emb - reference).max()):.2e}"
        if device.type != "cuda":
            note += " (CPU: encoded in fp32)"
        rows.append({"part": "encode", "method": "-", "precision": precision, "n_total": len(texts), "status": "ok",
                     "sec_per_update": round(seconds, 3), "peak_mem_mb": peak_mb(device),
                     "note": f"{len(texts) / seconds:.0f} passages/s, length 256; {note}"})
    return rows


# ----------------------------------------------------------------------------- output
def table(rows: list[dict]) -> str:
    cells = [[("" if row.get(c) is None else str(row.get(c))) for c in COLUMNS] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(COLUMNS)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    return "\n".join([line(COLUMNS), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(r) for r in cells)]) + "\n"


def write(rows: list[dict], out: Path, header: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    csv = [",".join(COLUMNS)] + [",".join("" if r.get(c) is None else str(r.get(c)) for c in COLUMNS) for r in rows]
    atomic_write_text(out / "gpu_check.csv", "\n".join(csv) + "\n")
    text = header + "\n\n" + table(rows)
    atomic_write_text(out / "gpu_check.md", text)
    return text


def run(settings: Settings, out: Path) -> str:
    import torch

    if not settings.dry and not torch.cuda.is_available():
        raise PipelineError("gpu_check: no CUDA device here; run it on a GPU machine, or use --dry-run for the CPU "
                            "check of the script")
    device = torch.device("cpu" if settings.dry else "cuda")
    started = time.time()
    deadline = started + settings.max_seconds
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        cap_model = random_bert_dir(Path(tmp) / "cap-model", tiny=settings.dry)
        # The dry run trains the tiny random BERT; the real run the packaged MiniLM.
        model, random_init = (str(cap_model), True) if settings.dry else ("all-MiniLM-L6-v2", False)
        if device.type == "cuda" and settings.cuda_memory_fraction is None:
            total = torch.cuda.get_device_properties(device).total_memory
            settings.cuda_memory_fraction = min(1.0, settings.cap_gb * 2**30 / total)
        rows = train_part(settings, model, random_init, device, deadline)
        rows += cap_part(settings, cap_model, device, deadline)
        rows += encode_part(settings, model, random_init, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    header = (f"gpu_check on {name}, torch {torch.__version__}: {settings.updates} updates per train case, "
              f"{time.time() - started:.0f} s in all")
    return write(rows, out, header)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/gpu_check"), help="output folder")
    parser.add_argument("--dry-run", action="store_true", help="the whole check on the CPU, short of CUDA")
    parser.add_argument("--updates", type=int, help="optimizer updates per train case (default 20; dry run 2)")
    parser.add_argument("--cap-gb", type=float, default=11.0, help="memory cap in GiB (the paper's 11 GB setting)")
    parser.add_argument("--cuda-memory-fraction", type=float,
                        help="the cap as a fraction of the device (overrides --cap-gb)")
    parser.add_argument("--max-seconds", type=float, default=450.0, help="skip the cases left after this long")
    parser.add_argument("--cap-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cap_child:
        return cap_child(json.loads(args.cap_child))
    settings = Settings.for_dry_run() if args.dry_run else Settings()
    if args.updates is not None:
        if args.updates < 1:
            raise PipelineError(f"--updates: expected a positive integer, got {args.updates}")
        settings.updates = args.updates
    if args.cuda_memory_fraction is not None and not 0 < args.cuda_memory_fraction <= 1:
        raise PipelineError(f"--cuda-memory-fraction: expected a number in (0, 1], got {args.cuda_memory_fraction}")
    if args.cap_gb <= 0:
        raise PipelineError(f"--cap-gb: expected a positive number, got {args.cap_gb}")
    settings.cuda_memory_fraction, settings.max_seconds, settings.cap_gb = (args.cuda_memory_fraction,
                                                                            args.max_seconds, args.cap_gb)
    print(run(settings, args.out))
    print(f"wrote {args.out / 'gpu_check.csv'} and {args.out / 'gpu_check.md'}")


if __name__ == "__main__":
    run_main(main)
