"""Side-by-side corpus-encoding benchmark: our `BiEncoder.encode_texts` (the index step's path)
against sentence-transformers' `SentenceTransformer.encode` on the same texts, model, maximum
length and batch size.

Repeats are interleaved (ours, theirs, theirs, ours, ...) so machine noise (other jobs on a
shared box) hits both sides alike; one untimed warm-up batch each comes first. Prints the
throughput of each side (passages/s over wall time, median and best repeat, and over the process's
CPU time, which contention inflates less), the ratios ours/theirs (target >= 1.0) and the maximum
absolute difference between the two sets of embeddings.

    python -m pipeline.bench.bench_encode --dataset ../shared/data/scifact --max-length 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from pipeline.core.params import PRECISIONS
from pipeline.core.common import PipelineError, atomic_write_json, run_main
from pipeline.sources.datasets import passage_text


def read_passages(dataset: str | Path, limit: int | None = None) -> list[str]:
    """Passages of a BEIR-style folder's corpus.jsonl (title and text joined, as the index step does)."""
    path = Path(dataset) / "corpus.jsonl"
    if not path.is_file():
        raise PipelineError(f"{dataset}: no corpus.jsonl")
    texts = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                texts.append(passage_text(json.loads(line)))
                if limit is not None and len(texts) >= limit:
                    break
    return texts


def load_both(model: str, max_length: int, device: str = "cpu"):
    """Our bi-encoder (one tower, mean pooling, L2-normalised) and sentence-transformers' model
    from the same weights folder."""
    from sentence_transformers import SentenceTransformer

    from pipeline.models.encoder import BiEncoder, EncoderSpec, resolve_model_path  # why: loads torch; kept out of this module's import

    ours = BiEncoder.from_spec(EncoderSpec(model=model, pooling="mean", normalize=True, tied=True,
                                           passage_max_length=max_length)).to(device).eval()
    theirs = SentenceTransformer(resolve_model_path(model), device=device)
    theirs.max_seq_length = max_length
    return ours, theirs


def bench(texts: list[str], model: str = "all-MiniLM-L6-v2", max_length: int = 256, batch_size: int = 64,
          repeats: int = 3, device: str = "cpu", precision: str = "fp32") -> dict:
    if not texts:
        raise PipelineError("no texts to encode")
    ours, theirs = load_both(model, max_length, device)

    def run_ours():
        return ours.encode_texts(texts, "passage", batch_size=batch_size, progress=False, precision=precision)

    def run_theirs():
        return theirs.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                             show_progress_bar=False)

    def timed(fn):
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        emb = fn()
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0, np.asarray(emb, dtype=np.float32)

    # Untimed warm-up (lazy initialisation, allocator, thread pools) on one batch each.
    ours.encode_texts(texts[:batch_size], "passage", batch_size=batch_size, progress=False, precision=precision)
    theirs.encode(texts[:batch_size], batch_size=batch_size, show_progress_bar=False)
    times: dict[str, list[float]] = {"ours": [], "sentence-transformers": []}
    cpu: dict[str, list[float]] = {"ours": [], "sentence-transformers": []}
    emb_ours = emb_theirs = None
    for r in range(repeats):
        pair = [("ours", run_ours), ("sentence-transformers", run_theirs)]
        for name, fn in (pair if r % 2 == 0 else pair[::-1]):
            seconds, cpu_seconds, emb = timed(fn)
            times[name].append(seconds)
            cpu[name].append(cpu_seconds)
            if name == "ours":
                emb_ours = emb
            else:
                emb_theirs = emb
    n = len(texts)
    result = {
        "texts": n, "model": model, "max_length": max_length, "batch_size": batch_size, "repeats": repeats,
        "device": device, "precision": precision,
        "seconds": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "cpu_seconds": {k: [round(t, 4) for t in v] for k, v in cpu.items()},
        "passages_per_second": {k: round(n / statistics.median(v), 2) for k, v in times.items()},
        "passages_per_second_best": {k: round(n / min(v), 2) for k, v in times.items()},
        "passages_per_cpu_second": {k: round(n / statistics.median(v), 2) for k, v in cpu.items()},
        "max_abs_diff": float(np.abs(emb_ours - emb_theirs).max()),
    }
    for name, key in (("ratio", "passages_per_second"), ("ratio_best", "passages_per_second_best"),
                      ("ratio_cpu", "passages_per_cpu_second")):
        pps = result[key]
        result[name] = round(pps["ours"] / pps["sentence-transformers"], 4)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.bench.bench_encode",
        description="Corpus-encoding throughput of our encoder vs sentence-transformers on the same texts "
                    "(interleaved repeats), with the maximum embedding difference.")
    parser.add_argument("--dataset", required=True, help="folder with a BEIR corpus.jsonl")
    parser.add_argument("--model", default="all-MiniLM-L6-v2",
                        help="model id or folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--max-length", type=int, default=256, help="maximum passage length in tokens")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of both encoders")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per side (interleaved)")
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N passages")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                        help="our side's precision (autocast on CUDA only; sentence-transformers stays fp32)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json-out", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    for name in ("max_length", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            raise PipelineError(f"--{name.replace('_', '-')}: expected a positive integer")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    texts = read_passages(args.dataset, args.limit)
    result = bench(texts, args.model, args.max_length, args.batch_size, args.repeats, device, args.precision)
    pps, best, per_cpu = (result[k] for k in ("passages_per_second", "passages_per_second_best",
                                               "passages_per_cpu_second"))
    print(f"{result['texts']} passages, {args.model}, max length {args.max_length}, batch {args.batch_size}, "
          f"{device}, {torch.get_num_threads()} threads, {args.repeats} interleaved repeats")
    for name in ("ours", "sentence-transformers"):
        print(f"  {name:<22} {pps[name]:9.1f} passages/s median, {best[name]:.1f} best, "
              f"{per_cpu[name]:.1f} per CPU-second  (wall s: {result['seconds'][name]}, "
              f"CPU s: {result['cpu_seconds'][name]})")
    print(f"  ratio ours / sentence-transformers: {result['ratio']:.3f} median, {result['ratio_best']:.3f} best, "
          f"{result['ratio_cpu']:.3f} per CPU-second  (target >= 1.0)")
    print(f"  max |embedding difference|: {result['max_abs_diff']:.2e}")
    if args.json_out:
        atomic_write_json(args.json_out, result)
    return result


if __name__ == "__main__":
    run_main(main)
