"""Training throughput against sentence-transformers' trainer, on the same work.

Both sides train the same weights on the same (query, positive) pairs, in the same order and the
same batches, at the same maximum sequence length, with the same loss (InfoNCE at τ = 0.05 over
cosines = MultipleNegativesRankingLoss at scale 20), torch's AdamW with the same lr, eps and
weight decay, no warm-up, linear decay, gradient clipping at 2.0, for the same number of
optimizer updates:

- ours: `pipeline.training.train.train` (this pipeline's loop: method `inbatch` or `gradcache`, tied
  towers, mean pooling, L2-normalised, `false_negatives: keep` so the loss is MNRL's);
- theirs: `SentenceTransformerTrainer` with `MultipleNegativesRankingLoss` (in-batch) or
  `CachedMultipleNegativesRankingLoss` (GradCache, `mini_batch_size` = our chunk), fed the
  pairs in our update order by a sequential batch sampler.

Each run is its own child process (so its peak RSS is its own); repeats are interleaved (ours,
theirs, theirs, ours, ...) so machine noise hits both alike. The first update of every run is a
warm-up: updates/s is (updates − 1) over the wall time from the end of update 1 to the end of
the last (the whole loop: data, tokenisation, forward, backward, optimizer, logging). Peak RSS
is the child's ru_maxrss at the last update (before any model saving). Prints both sides, their
medians and the ratios ours/theirs (target: throughput >= 1.0 at memory <= 1.0).

    python -m pipeline.bench.bench_train --dataset scifact-mini --batch-size 16 --max-length 128 --updates 12
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.core.common import PipelineError, atomic_write_json, run_main
from pipeline.sources.prepare import main as prepare
from pipeline.sources.datasets import load_dataset
from pipeline.training.pairs import TrainingData
from pipeline.training.sampler import update_plan
from pipeline.training.hooks import TrainHooks

SIDES = ("ours", "sentence-transformers")
METHODS = ("inbatch", "gradcache")
THEIR_LOSS = {"inbatch": "MultipleNegativesRankingLoss", "gradcache": "CachedMultipleNegativesRankingLoss"}
TEMPERATURE = 0.05
RESULT_TAG = "BENCH_TRAIN_RESULT "


# ----------------------------------------------------------------------------- inputs
def make_tiny_model(out: Path, hidden: int = 32, layers: int = 2) -> Path:
    """A tiny random BERT with MiniLM's tokenizer (a Hugging Face folder): the fast smoke setting."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pipeline.models.encoder import packaged_minilm_path  # why: loads torch; kept out of this module's import

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(packaged_minilm_path()))
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=512)
    BertModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def prepare_dataset(dataset: str, out: Path) -> Path:
    """A normalised dataset folder: a name under data/embedded/ (e.g. scifact-mini), a BEIR folder
    (e.g. ../shared/data/scifact), or an already normalised folder (has manifest.json)."""
    path = Path(dataset)
    if (path / "manifest.json").is_file():
        return path
    if path.is_dir():
        prepare(["--name", path.name, "--source", "local", "--path", str(path), "--out", str(out), "--no-progress"])
    else:
        prepare(["--name", dataset, "--source", "embedded", "--out", str(out), "--no-progress"])
    return out


def update_examples(case: dict) -> list:
    """The examples of the run's updates in our loop's order (update_plan, seed, shuffle), flattened."""
    data = TrainingData(load_dataset(case["dataset"]), "train", seed=case["seed"])
    plan = update_plan(data.epoch, case["batch_size"], case["seed"], "shuffle")
    out = []
    for _, (_, examples, indices) in zip(range(case["updates"]), plan):
        out += [examples[i] for i in indices]
    return out


class Clock:
    """Wall and CPU time and peak memory at the end of every update: the process's peak RSS, or
    on CUDA torch's peak allocated GPU memory (what a memory cap limits)."""

    def __init__(self, device: str = "cpu"):
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.peak_mb = 0.0
        self.cuda = device.startswith("cuda")

    def tick(self, *_) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())
        self.peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if self.cuda
                        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux

    def result(self) -> dict:
        """updates per wall second and per CPU second after the warm-up update (CPU time is what a
        machine shared with other jobs inflates least)."""
        n = len(self.wall)
        if n < 2 or self.wall[-1] <= self.wall[0]:
            raise PipelineError(f"bench-train: need at least 2 timed updates, got {n}")
        return {"updates_per_s": (n - 1) / (self.wall[-1] - self.wall[0]),
                "updates_per_cpu_s": (n - 1) / max(1e-9, self.cpu[-1] - self.cpu[0]),
                "peak_rss_mb": self.peak_mb, "updates": n}


# ----------------------------------------------------------------------------- the two sides
def run_ours(case: dict) -> dict:
    from pipeline.training.train import train  # why: loads torch; kept out of this module's import

    recipe = {"method": case["method"], "batch_size": case["chunk"] if case["method"] == "gradcache" else case["batch_size"],
              "accumulation_steps": case["batch_size"] // case["chunk"] if case["method"] == "gradcache" else 1,
              "temperature": TEMPERATURE, "lr": case["lr"], "weight_decay": 0.01, "adam_eps": 1e-8,
              "warmup_steps": 0, "warmup_ratio": 0.0, "grad_clip": 2.0, "max_steps": case["updates"],
              "false_negatives": "keep", "device": case["device"], "train_split": "train",
              "encoder": {"model": case["model"], "tied": True, "pooling": "mean", "normalize": True,
                          "query_max_length": case["max_length"], "passage_max_length": case["max_length"]}}
    clock = Clock(case["device"])

    class Tick(TrainHooks):
        def after_update(self, step: int) -> None:
            clock.tick()

    with tempfile.TemporaryDirectory() as tmp:
        train(case["dataset"], tmp, recipe, case["seed"], progress=False, hooks=Tick())
    return clock.result()


def _sequential_sampler(dataset, batch_size, drop_last, **kwargs):
    """Batches in dataset order: the dataset already holds our update order."""
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from torch.utils.data import SequentialSampler

    return DefaultBatchSampler(SequentialSampler(dataset), batch_size=batch_size, drop_last=drop_last, **kwargs)


def run_theirs(case: dict) -> dict:
    import logging

    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer import losses
    from transformers import TrainerCallback

    from pipeline.models.encoder import resolve_model_path  # why: loads torch; kept out of this module's import

    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    examples = update_examples(case)
    dataset = Dataset.from_dict({"anchor": [ex.query for ex in examples], "positive": [ex.positive for ex in examples]})
    model = SentenceTransformer(resolve_model_path(case["model"]), device=case["device"])
    model.max_seq_length = case["max_length"]
    loss_cls = getattr(losses, THEIR_LOSS[case["method"]])
    extra = {"mini_batch_size": case["chunk"]} if case["method"] == "gradcache" else {}
    loss = loss_cls(model, scale=1 / TEMPERATURE, **extra)
    clock = Clock(case["device"])

    class Tick(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.tick()

    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp, max_steps=case["updates"], per_device_train_batch_size=case["batch_size"],
            learning_rate=case["lr"], weight_decay=0.01, adam_epsilon=1e-8, warmup_steps=0, lr_scheduler_type="linear",
            max_grad_norm=2.0, optim="adamw_torch", seed=case["seed"], report_to="none", save_strategy="no",
            logging_strategy="no", disable_tqdm=True, dataloader_drop_last=True, use_cpu=case["device"] == "cpu",
            batch_sampler=_sequential_sampler)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss,
                                             callbacks=[Tick()])
        trainer.train()
    return clock.result()


def child(case: dict) -> None:
    import torch

    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    result = (run_ours if case["side"] == "ours" else run_theirs)(case)
    print(RESULT_TAG + json.dumps({**case, **result}), flush=True)


# ----------------------------------------------------------------------------- the parent
def run_child(case: dict, timeout: float = 3600) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "pipeline.bench.bench_train", "--child", json.dumps(case)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise PipelineError(f"bench-train child {case['side']}/{case['method']} failed (exit {proc.returncode}):\n"
                        + (proc.stderr or proc.stdout)[-3000:])


def bench(cases: list[dict], repeats: int, log=print) -> dict:
    """Every case on both sides, `repeats` times, interleaved; medians and ratios per method."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(repeats):
        for case in cases:
            for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
                result = run_child({**case, "side": side})
                runs.setdefault((case["method"], side), []).append(result)
                log(f"  repeat {r + 1}/{repeats} {case['method']:<9} {side:<22} {result['updates_per_s']:.3f} updates/s, "
                    f"{result['updates_per_cpu_s']:.3f} per CPU-s, peak RSS {result['peak_rss_mb']:.0f} MB")
    table = []
    for case in cases:
        row = {"method": case["method"], "their_loss": THEIR_LOSS[case["method"]]}
        for side in SIDES:
            results = runs[(case["method"], side)]
            row[side] = {key: statistics.median(x[key] for x in results)
                         for key in ("updates_per_s", "updates_per_cpu_s", "peak_rss_mb")}
            row[side]["per_repeat"] = [round(x["updates_per_s"], 4) for x in results]
        ours, theirs = row["ours"], row["sentence-transformers"]
        row["throughput_ratio"] = ours["updates_per_s"] / theirs["updates_per_s"]
        row["cpu_throughput_ratio"] = ours["updates_per_cpu_s"] / theirs["updates_per_cpu_s"]
        row["memory_ratio"] = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
        table.append(row)
    return {"rows": table, "setting": {k: v for k, v in cases[0].items() if k != "method"}, "repeats": repeats}


def markdown(result: dict) -> str:
    lines = ["| method | side | updates/s (median) | per repeat | updates / CPU-s | peak RSS MB | ours / theirs |",
             "|---|---|---:|---|---:|---:|---|"]
    for row in result["rows"]:
        for side in SIDES:
            s = row[side]
            name = "ours (pipeline.training.train)" if side == "ours" else f"sentence-transformers ({row['their_loss']})"
            ratio = (f"{row['throughput_ratio']:.2f}x updates/s ({row['cpu_throughput_ratio']:.2f}x per CPU-s), "
                     f"{row['memory_ratio']:.2f}x peak RSS" if side == "ours" else "")
            lines.append(f"| {row['method']} | {name} | {s['updates_per_s']:.3f} | {s['per_repeat']} | "
                         f"{s['updates_per_cpu_s']:.3f} | {s['peak_rss_mb']:.0f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.bench_train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact-mini",
                        help="a data/embedded name, a BEIR folder (../shared/data/scifact) or a normalised folder")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="model folder (default: the packaged MiniLM)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random BERT instead (smoke test)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--batch-size", type=int, default=16, help="examples per optimizer update (N_total)")
    parser.add_argument("--chunk", type=int, default=4, help="GradCache chunk = CachedMNRL mini_batch_size")
    parser.add_argument("--max-length", type=int, default=128, help="maximum tokens of queries and passages")
    parser.add_argument("--updates", type=int, default=12, help="optimizer updates per run (the first is a warm-up)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side and method, interleaved")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in each child")
    parser.add_argument("--json-out", default=None, help="also write the result as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return None
    for name in ("batch_size", "chunk", "max_length", "repeats"):
        if getattr(args, name) < 1:
            raise PipelineError(f"--{name.replace('_', '-')}: expected a positive integer")
    if args.updates < 2:
        raise PipelineError("--updates: expected at least 2 (the first is a warm-up)")
    if "gradcache" in args.methods and args.batch_size % args.chunk:
        raise PipelineError(f"--chunk {args.chunk} must divide --batch-size {args.batch_size}")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        model = str(make_tiny_model(Path(tmp) / "tiny")) if args.tiny else args.model
        dataset = str(prepare_dataset(args.dataset, Path(tmp) / "data"))
        base = {"dataset": dataset, "model": model, "batch_size": args.batch_size, "chunk": args.chunk,
                "max_length": args.max_length, "updates": args.updates, "lr": args.lr, "seed": args.seed,
                "device": args.device, "threads": args.threads}
        print(f"bench-train: {'tiny BERT' if args.tiny else args.model}, {args.dataset}, batch {args.batch_size} "
              f"(GradCache chunk {args.chunk}), max length {args.max_length}, {args.updates} updates "
              f"(1 warm-up), {args.repeats} interleaved repeats, {args.device}, threads {args.threads or 'default'}")
        result = bench([{**base, "method": m} for m in args.methods], args.repeats)
    result["setting"].update(dataset=args.dataset, model="tiny BERT" if args.tiny else args.model)
    print()
    print(markdown(result))
    if args.json_out:
        atomic_write_json(args.json_out, result)
    return result


if __name__ == "__main__":
    run_main(main)
