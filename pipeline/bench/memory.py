"""Memory/time benchmark of the training methods.

Each (method, N_total, memory) case runs in its own child process, so a peak-memory reading
belongs to one method alone. A child loads the encoder (untied MiniLM by default), materialises
gradients and AdamW state, takes a baseline, runs one warm-up update and then `--updates` timed
updates (accumulate + optimizer step), and reports:

- peak_mem_mb: the whole process's peak. CPU: ru_maxrss of the child; CUDA:
  torch.cuda.max_memory_allocated. This is what a memory cap limits, and what the ContAccum
  paper's Table 3 reports (model + optimizer + activations).
- peak_delta_mb: the peak minus the post-setup baseline (weights, gradients and AdamW state
  already allocated), i.e. what the method itself adds: activations, caches, banks.

On CPU, glibc's dynamic mmap threshold lets freed activation buffers stay in the heap, so RSS
tracks the allocator's history rather than live tensors; children therefore run with
MALLOC_MMAP_THRESHOLD_=65536 (unless already set), which returns large buffers on free.

Texts are synthetic and long enough that every sequence is truncated to its max length, so
every method pays for identical, fully padded batches. ContAccum's banks are pre-filled to
capacity with random unit vectors so the timing reflects a full bank (steady state).

`--processes P` runs each case under torchrun with P processes (gloo on CPU, NCCL on CUDA, one
GPU each), as `training.processes: P` trains: N_local is then the per-process micro-batch and
N_total the global update (N_local * P * K); gradients are summed over the processes once per
update. peak_mem_mb is the largest process's peak and peak_mem_mb_per_process lists each one;
sec_per_update is process 0's wall time per update (all processes synchronise every update).
`--precision bf16|fp16` runs the encoder under autocast (fp16 with a gradient scaler).
`--checkpointing off,on` runs every case without and with `gradient_checkpointing` (encoder
activations recomputed in backward), so the table holds e.g. in-batch and in-batch + ckpt at the
same N_total.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from pipeline.core.params import PRECISIONS
from pipeline.core.common import PipelineError, atomic_path, atomic_write_text, log, run_main
from pipeline.training.methods import available, get_method
from pipeline.sources.datasets import Example

COLUMNS = ["method", "n_local", "n_total", "memory_size", "peak_mem_mb", "sec_per_update",
           "peak_delta_mb", "baseline_mb", "updates", "device", "query_length", "passage_length", "status",
           "processes", "precision", "peak_mem_mb_per_process", "gradient_checkpointing"]
RESULT_TAG = "BENCH_RESULT "


# ----------------------------------------------------------------------------- child process
def synthetic_examples(tokenizer, n: int, query_words: int, passage_words: int, seed: int):
    vocab = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii() and len(w) > 2)
    rng = random.Random(seed)
    words = lambda k: " ".join(rng.choices(vocab, k=k))  # noqa: E731
    # Ids make every method runnable (SogCLR keys its state by them); no id is a known positive
    # of another, so nothing is masked.
    return [Example(words(query_words), words(passage_words), query_id=f"q{i}", positive_id=f"d{i}")
            for i in range(n)]


def peak_mb(device) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def run_case(case: dict) -> dict:
    import torch

    from pipeline.training import distributed  # why: loads torch; kept out of this module's import
    from pipeline.models.encoder import BiEncoder, EncoderSpec  # why: loads torch; kept out of this module's import

    device = torch.device(case["device"])
    processes = int(case.get("processes", 1))
    _, world, local_rank = distributed.init_from_env(device.type)
    if world != processes:
        raise PipelineError(f"bench child: {processes} processes requested, {world} started")
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
    spec = EncoderSpec(model=case["model"], tied=False, query_max_length=case["query_length"],
                       passage_max_length=case["passage_length"])
    model = BiEncoder.from_spec(spec).to(device).train()
    recipe = {"temperature": 0.05, "memory_size": case["memory_size"], "precision": case.get("precision", "fp32"),
              "gradient_checkpointing": bool(case.get("gradient_checkpointing", False))}
    if case["method"] == "inbatch":
        recipe.update(batch_size=case["n_total"] // processes, accumulation_steps=1)
    else:
        recipe.update(batch_size=case["n_local"], accumulation_steps=case["n_total"] // (case["n_local"] * processes))
    method = get_method(case["method"])(model, recipe)
    scaler = torch.amp.GradScaler(device.type) if recipe["precision"] == "fp16" else None
    method.scaler = scaler
    params = list({id(p): p for p in model.parameters()}.values())
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)

    # Allocate gradients and AdamW state now, so the baseline already contains them and the
    # delta is what the method adds on top.
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)
    method.fill_memory(case["memory_size"])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    baseline = peak_mb(device) if device.type == "cpu" else torch.cuda.memory_allocated(device) / 2**20

    n = method.examples_per_update
    data = synthetic_examples(model.tokenizer, n * (case["updates"] + 1), query_words=case["query_length"] * 2,
                              passage_words=case["passage_length"] * 2, seed=0)
    times, losses = [], []
    for step in range(case["updates"] + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=False)
        stats = method.accumulate(data[step * n:(step + 1) * n])
        distributed.all_reduce_grads(params)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        method.after_optimizer_step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:  # the first update is warm-up
            times.append(time.perf_counter() - start)
        losses.append(stats["loss"])
        if distributed.is_main():
            print(f"  {case['method']} N_total={case['n_total']} update {step}/{case['updates']}: "
                  f"{time.perf_counter() - start:.2f}s", file=sys.stderr, flush=True)
    peaks = distributed.all_gather_floats([peak_mb(device), baseline])
    peak, baseline = max(p[0] for p in peaks), max(p[1] for p in peaks)
    distributed.shutdown()
    return {"peak_mem_mb": round(peak, 1), "sec_per_update": round(sum(times) / len(times), 4),
            "peak_delta_mb": round(peak - baseline, 1), "baseline_mb": round(baseline, 1), "status": "ok",
            "peak_mem_mb_per_process": ";".join(f"{p[0]:.1f}" for p in peaks)}


# ----------------------------------------------------------------------------- parent process
def cases(args) -> list[dict]:
    common = {"n_local": args.n_local, "updates": args.updates, "device": args.device, "model": args.model,
              "query_length": args.query_length, "passage_length": args.passage_length,
              "processes": args.processes, "precision": args.precision}
    out = []
    step = args.n_local * args.processes  # one micro-batch over all processes
    if "inbatch" in args.methods:
        out.append({**common, "method": "inbatch", "n_local": args.n_local, "n_total": step, "memory_size": 0})
    if "sogclr" in args.methods and step not in args.n_totals:
        # SogCLR's claim is that a small batch suffices: its one-micro-batch run (sogclr-8 at the
        # default N_local) sits beside in-batch at N_local and the large-N_total rows.
        out.append({**common, "method": "sogclr", "n_total": step, "memory_size": 0})
    for n_total in args.n_totals:
        for method in args.methods:
            if get_method(method).has_memory:
                sizes = sorted({n_total if m == "total" else int(m) for m in args.memory_sizes})
                out += [{**common, "method": method, "n_total": n_total, "memory_size": m} for m in sizes]
            elif method == "inbatch":
                if n_total != step:
                    out.append({**common, "method": method, "n_local": n_total, "n_total": n_total, "memory_size": 0})
            else:
                out.append({**common, "method": method, "n_total": n_total, "memory_size": 0})
    return [{**case, "gradient_checkpointing": ckpt} for case in out for ckpt in args.checkpointing]


def run_child(case: dict) -> dict:
    cmd = [sys.executable, "-m", "pipeline.bench.memory", "--child", json.dumps(case)]
    env = {"MALLOC_MMAP_THRESHOLD_": "65536", **os.environ}
    processes = int(case.get("processes", 1))
    if processes > 1:
        cmd[1:2] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m"]
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return {**case, **json.loads(line[len(RESULT_TAG):])}
    status = "oom" if proc.returncode in (-9, 137) else f"failed (exit {proc.returncode})"
    return {**case, "peak_mem_mb": "", "sec_per_update": "", "peak_delta_mb": "", "baseline_mb": "", "status": status,
            "peak_mem_mb_per_process": ""}


def label(row) -> str:
    return (row["method"] + (f"(M={row['memory_size']})" if row["memory_size"] else "")
            + ("+ckpt" if row.get("gradient_checkpointing") else ""))


def find(rows, method, n_total, memory_size=0, ckpt=False):
    for row in rows:
        if (row["method"], row["n_total"], row["memory_size"], bool(row.get("gradient_checkpointing"))) == \
                (method, n_total, memory_size, ckpt) and row["status"] == "ok":
            return row
    return None


def ratios(rows, n_local: int) -> list[str]:
    lines = []
    base8 = find(rows, "inbatch", n_local)
    for n_total in sorted({r["n_total"] for r in rows if r["method"] != "inbatch" or r["n_total"] != n_local}):
        ga = find(rows, "gradaccum", n_total)
        for row in rows:
            if row["n_total"] != n_total or row["status"] != "ok" or \
                    (row["method"] in ("inbatch", "gradaccum") and not row.get("gradient_checkpointing")):
                continue
            parts = [f"N_total={n_total} {label(row)}{'@' + str(n_total) if row['method'] == 'inbatch' else ''}:"]
            if ga:
                parts.append(f"time/gradaccum {row['sec_per_update'] / ga['sec_per_update']:.2f}x")
            if base8:
                parts.append(f"peak/inbatch@{n_local} {row['peak_mem_mb'] / base8['peak_mem_mb']:.2f}x "
                             f"(delta {row['peak_delta_mb'] / max(base8['peak_delta_mb'], 1e-9):.2f}x)")
            lines.append(" ".join(parts))
        big = find(rows, "inbatch", n_total)
        if big and base8 and n_total != n_local:
            lines.append(f"N_total={n_total} inbatch@{n_total}: peak/inbatch@{n_local} "
                         f"{big['peak_mem_mb'] / base8['peak_mem_mb']:.2f}x "
                         f"(delta {big['peak_delta_mb'] / max(base8['peak_delta_mb'], 1e-9):.2f}x)")
    return lines


def plot(rows, path: Path, n_local: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    series: dict[str, list] = {}
    for row in rows:
        if row["status"] != "ok" or (row["method"] == "inbatch" and row["n_total"] == n_local):
            continue
        series.setdefault(label(row), []).append(row)
    for ax, key, title in zip(axes, ("peak_mem_mb", "peak_delta_mb", "sec_per_update"),
                              ("peak memory (MB)", "peak over baseline (MB)", "seconds per update")):
        for name, items in sorted(series.items()):
            items = sorted(items, key=lambda r: r["n_total"])
            ax.plot([r["n_total"] for r in items], [r[key] for r in items], marker="o", label=name)
        ref = find(rows, "inbatch", n_local)
        if ref:
            ax.axhline(ref[key], color="grey", linestyle="--", label=f"inbatch@{n_local}")
        ax.set_xlabel("N_total")
        ax.set_title(title)
        ax.set_xscale("log", base=2)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"N_local={n_local}, device={rows[0]['device'] if rows else '?'}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.memory", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Writes OUT/summary.csv and OUT/bench.png and prints the ratios.")
    csv_list = lambda cast: lambda s: [cast(x) for x in s.split(",") if x]  # noqa: E731
    parser.add_argument("--out", type=Path, default=Path("results/bench"), help="output folder")
    parser.add_argument("--methods", type=csv_list(str), default=available(), help="comma-separated")
    parser.add_argument("--n-totals", type=csv_list(int), default=[32, 64, 128], help="comma-separated N_total")
    parser.add_argument("--n-local", type=int, default=8, help="micro-batch / chunk size (and the small in-batch)")
    parser.add_argument("--memory-sizes", type=csv_list(str), default=["512", "2048"],
                        help="ContAccum bank sizes in samples; 'total' means N_total")
    parser.add_argument("--updates", type=int, default=3, help="timed updates after one warm-up update")
    parser.add_argument("--query-length", type=int, default=32)
    parser.add_argument("--passage-length", type=int, default=128)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="encoder (untied towers)")
    parser.add_argument("--processes", type=int, default=1,
                        help="training processes per case (torchrun; N_local is then per process)")
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS), help="training autocast")
    parser.add_argument("--checkpointing", type=csv_list(str), default=["off", "on"],
                        help="gradient checkpointing per case: off, on or off,on (both, side by side)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.methods) - set(available()))
    if unknown:
        raise PipelineError(f"--methods: unknown {unknown}; expected some of {available()}")
    if args.processes < 1:
        raise PipelineError("--processes: expected at least 1")
    step = args.n_local * args.processes
    bad = [n for n in args.n_totals if n < step or n % step]
    if bad:
        raise PipelineError(f"--n-totals: {bad} must be multiples of --n-local {args.n_local} x --processes "
                            f"{args.processes}")
    if not args.checkpointing or set(args.checkpointing) - {"off", "on"}:
        raise PipelineError(f"--checkpointing: expected off, on or off,on, got {','.join(args.checkpointing)!r}")
    args.checkpointing = [c == "on" for c in dict.fromkeys(args.checkpointing)]
    if args.updates < 1:
        raise PipelineError("--updates: expected at least 1")
    for m in args.memory_sizes:
        if m != "total" and not m.isdigit():
            raise PipelineError(f"--memory-sizes: expected integers or 'total', got {m!r}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        result = run_case(json.loads(args.child))
        if int(os.environ.get("RANK", "0")) == 0:
            print(RESULT_TAG + json.dumps(result), flush=True)
        return
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    todo = cases(args)
    rows = []
    for i, case in enumerate(todo, 1):
        log.info("[%d/%d] %s N_local=%d N_total=%d memory=%d", i, len(todo), case["method"], case["n_local"],
                 case["n_total"], case["memory_size"])
        rows.append(run_child(case))
        log.info("  -> peak %s MB (+%s), %s s/update, %s", rows[-1]["peak_mem_mb"], rows[-1]["peak_delta_mb"],
                 rows[-1]["sec_per_update"], rows[-1]["status"])

    args.out.mkdir(parents=True, exist_ok=True)
    lines = [",".join(COLUMNS)]
    for row in rows:
        lines.append(",".join(str(row[c]) for c in COLUMNS))
    atomic_write_text(args.out / "summary.csv", "\n".join(lines) + "\n")
    plot(rows, args.out / "bench.png", args.n_local * args.processes)

    shown = ["method", "gradient_checkpointing", *COLUMNS[1:7]]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in shown]
    print("  ".join(c.ljust(w) for c, w in zip(shown, widths)))
    for row in rows:
        print("  ".join(str(row[c]).ljust(w) for c, w in zip(shown, widths)))
    print()
    for line in ratios(rows, args.n_local * args.processes):
        print(line)
    print(f"\nwrote {args.out / 'summary.csv'} and {args.out / 'bench.png'}")


if __name__ == "__main__":
    run_main(main)
