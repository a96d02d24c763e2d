"""Scale benchmark: how encode, index build, search and evaluation time and peak memory grow with
the corpus, on synthetic corpora (10k .. 1M passages) and a tiny random BERT.

    python -m pipeline.bench.scale --sizes 10000,100000,1000000 --out results/scale

Every step runs as the pipeline runs it, in its own child process (the real entry points:
`pipeline.retrieval.shards encode`, `pipeline.retrieval.index --shards`, `pipeline.evaluation.evaluate`), and its peak resident
set is the child's own ru_maxrss (os.wait4), so the numbers include Python, torch and FAISS.
The fixed overhead (a child that only imports them) is measured and reported separately.
`search` is exact (flat) search of the test queries over the memory-mapped embeddings plus the
DN corpus mean: what evaluation does with the embeddings, without the corpus text that
`pipeline.evaluation.evaluate` also loads.

Writes <out>/scale.csv, scale.md and scale.png (log-log).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.core.common import atomic_write_json, atomic_write_text, log, run_main, set_threads, sha256_file
from pipeline.evaluation import distribution_normalization as dnlib
from pipeline.retrieval.readers import load_embeddings, load_index
from pipeline.evaluation import evaluate  # noqa: F401
from pipeline.retrieval import index, shards

STEPS = ("encode", "index", "search", "evaluate")
THREADS = 1  # per child (--threads): on a shared machine one thread gives steadier timings


# ----------------------------------------------------------------------------- synthetic data
def make_corpus(out: Path, num_docs: int, num_queries: int = 200, words: int = 12, vocab: int = 20000,
                seed: int = 0) -> Path:
    """A normalised dataset folder of `num_docs` synthetic passages (Zipf-distributed words drawn
    from a made-up vocabulary), `num_queries` test queries built from words of one passage each,
    and qrels naming that passage."""
    rng = np.random.default_rng(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "vi", "so", "pe", "du", "ga", "zo", "fi", "be", "xu", "ha"]
    lex = ["".join(syllables[j] for j in rng.integers(0, len(syllables), size=rng.integers(2, 5)))
           for _ in range(vocab)]
    p = 1.0 / np.arange(1, vocab + 1) ** 1.1
    p /= p.sum()
    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    gold = np.sort(rng.choice(num_docs, size=min(num_queries, num_docs), replace=False))
    queries = {}
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for start in range(0, num_docs, 10000):
            n = min(10000, num_docs - start)
            ids = rng.choice(vocab, size=(n, words), p=p)
            for i in range(n):
                row = start + i
                text = " ".join(lex[w] for w in ids[i])
                fh.write(json.dumps({"_id": f"d{row}", "title": "", "text": text}) + "\n")
                j = np.searchsorted(gold, row)
                if j < len(gold) and gold[j] == row:
                    queries[f"q{row}"] = (" ".join(lex[w] for w in ids[i][:8]), f"d{row}")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, (text, _) in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(out / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, (_, doc) in queries.items():
            fh.write(f"{qid}\t{doc}\t1\n")
    atomic_write_json(out / "manifest.json", {
        "name": f"synthetic-{num_docs}", "counts": {"docs": num_docs, "queries": len(queries)},
        "output_sha256": {"corpus.jsonl": sha256_file(out / "corpus.jsonl")}})
    return out


def make_tiny_encoder(out: Path, hidden: int = 64, layers: int = 1, max_length: int = 16, seed: int = 0) -> Path:
    """A random-weight BERT (MiniLM's tokenizer) saved as a zero-shot bi-encoder model folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pipeline.models.encoder import BiEncoder, EncoderSpec, packaged_minilm_path  # why: loads torch; kept out of this module's import

    if (out / "model").exists():
        return out / "model"
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(packaged_minilm_path()))
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=512)
    BertModel(config).save_pretrained(out / "bert")
    tok.save_pretrained(out / "bert")
    spec = EncoderSpec(model=str(out / "bert"), query_max_length=max_length, passage_max_length=max_length)
    BiEncoder.from_spec(spec).save(out / "model", weights=False)
    return out / "model"


# ----------------------------------------------------------------------------- measuring
# Linux keeps a process's peak RSS across exec, and a forked child starts with its parent's
# resident pages, so a step forked straight from this (torch-importing) process would report at
# least this process's RSS. A lean launcher forks the step instead and reports its wait4 rusage.
_LAUNCHER = """import json, os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    json.dump({"exit": os.waitstatus_to_exitcode(status), "seconds": time.perf_counter() - t0,
               "maxrss_kb": usage.ru_maxrss}, fh)
"""


def measure(cmd: list[str], log_path: Path) -> dict:
    """Run one step in its own process; its wall seconds and its own peak RSS (MiB)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(THREADS)}
    report = log_path.with_suffix(".rusage.json")
    with open(log_path, "w") as fh:
        subprocess.run([sys.executable, "-c", _LAUNCHER, str(report), *cmd], stdout=fh, stderr=subprocess.STDOUT,
                       env=env, check=True)
    usage = json.loads(report.read_text())
    if usage["exit"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({usage['exit']}); see {log_path}")
    return {"seconds": round(usage["seconds"], 2), "peak_rss_mb": round(usage["maxrss_kb"] / 1024, 1)}


def search_child(index_dir: str, dataset_dir: str, model_dir: str, top_k: int) -> None:
    """The `search` step measured by `run`: encode the test queries, DN corpus mean over the
    memory-mapped embeddings, exact top-k over embeddings.npy (query batches, corpus blocks)."""
    from pipeline.models.encoder import BiEncoder  # why: loads torch; kept out of this module's import

    set_threads()
    emb, _, stats = load_embeddings(index_dir)
    texts = [json.loads(line)["text"] for line in open(Path(dataset_dir) / "queries.jsonl", encoding="utf-8")]
    q = BiEncoder.load(model_dir).encode_texts(texts, "query", batch_size=256, progress=False)
    means = dnlib.dn_means(q, emb)
    index = load_index(index_dir, "flat", stats)
    dnlib.dn_search(index, q, top_k, means, 0.25, doc_emb=emb)


def overhead_child() -> None:
    import faiss  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401


# ----------------------------------------------------------------------------- benchmark
def run(sizes: list[int], out: Path, shard_size: int, dtype: str, work: Path, top_k: int = 100) -> list[dict]:
    py = sys.executable
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    model = make_tiny_encoder(work / "encoder")
    overhead = measure([py, "-m", "pipeline.bench.scale", "--child", "overhead"], work / "overhead.log")
    log.info("fixed overhead (python + numpy + torch + faiss + transformers + pipeline imports): %s MiB", overhead["peak_rss_mb"])
    rows = []
    if (out / "scale.csv").is_file():  # sizes already measured into this folder are kept
        import pandas as pd

        done = pd.read_csv(out / "scale.csv")
        rows = [r for r in done.to_dict("records") if r["passages"] in sizes and r["dtype"] == dtype]
    for n in sizes:
        if any(r["passages"] == n for r in rows):
            continue
        ds = work / f"data-{n}"
        if not (ds / "manifest.json").is_file():
            make_corpus(ds, n)
        plan = work / f"plan-{n}.json"
        shards_dir, index_dir, eval_dir = work / f"shards-{n}", work / f"index-{n}", work / f"eval-{n}"
        shards_dir.mkdir(exist_ok=True)
        subprocess.run([py, "-m", "pipeline.retrieval.shards", "plan", "--dataset", str(ds), "--shard-size", str(shard_size),
                        "--out", str(plan)], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        params = json.dumps({"batch_size": 256, "dtype": dtype, "index_types": ["flat"]})
        num = len(json.loads(plan.read_text())["shards"])
        enc = [measure([py, "-m", "pipeline.retrieval.shards", "encode", "--model", str(model), "--dataset", str(ds),
                        "--plan", str(plan), "--shard", str(i), "--out-embeddings", str(shards_dir / f"{i}.npy"),
                        "--out-ids", str(shards_dir / f"{i}.json"), "--params-json", params],
                       work / f"encode-{n}-{i}.log") for i in range(num)]
        idx = measure([py, "-m", "pipeline.retrieval.index", "--model", str(model), "--dataset", str(ds), "--out",
                       str(index_dir), "--params-json", params, "--shards", str(shards_dir), "--plan", str(plan)],
                      work / f"index-{n}.log")
        srch = measure([py, "-m", "pipeline.bench.scale", "--child", "search", "--index", str(index_dir), "--dataset",
                        str(ds), "--model", str(model), "--top-k", str(top_k)], work / f"search-{n}.log")
        ev = measure([py, "-m", "pipeline.evaluation.evaluate", "--model", str(model), "--dataset", str(ds), "--index",
                      str(index_dir), "--out", str(eval_dir), "--params-json",
                      json.dumps({"scorings": ["dot", "dn"], "top_k": top_k, "batch_size": 256})],
                     work / f"evaluate-{n}.log")
        emb_mb = (index_dir / "embeddings.npy").stat().st_size / 2**20
        row = {"passages": n, "shards": num, "dtype": dtype, "embeddings_mb": round(emb_mb, 1),
               "encode_s": round(sum(e["seconds"] for e in enc), 2),
               "encode_rss_mb": max(e["peak_rss_mb"] for e in enc),
               "index_s": idx["seconds"], "index_rss_mb": idx["peak_rss_mb"],
               "search_s": srch["seconds"], "search_rss_mb": srch["peak_rss_mb"],
               "evaluate_s": ev["seconds"], "evaluate_rss_mb": ev["peak_rss_mb"],
               "overhead_mb": overhead["peak_rss_mb"], "startup_s": overhead["seconds"]}
        for step in ("index", "search"):
            row[f"{step}_rss_over_emb"] = round((row[f"{step}_rss_mb"] - overhead["peak_rss_mb"]) / emb_mb, 3)
        rows.append(row)
        rows.sort(key=lambda r: r["passages"])
        log.info("%s", row)
        write_outputs(rows, out)
        for path in shards_dir.glob("*.npy"):  # keep the work folder small
            path.unlink()
    return rows


def write_outputs(rows: list[dict], out: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    atomic_write_text(out / "scale.csv", frame.to_csv(index=False))
    atomic_write_text(out / "scale.md", frame.to_markdown(index=False) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for step in STEPS:
        ax_t.loglog(frame.passages, frame[f"{step}_s"], "o-", label=step)
        ax_m.loglog(frame.passages, frame[f"{step}_rss_mb"], "o-", label=step)
    ax_m.loglog(frame.passages, frame.embeddings_mb, "k--", label="embeddings.npy on disk")
    ax_t.set(xlabel="passages", ylabel="seconds", title="time per step")
    ax_m.set(xlabel="passages", ylabel="peak RSS (MiB)", title="peak memory per step")
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "scale.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,30000,100000,300000,1000000", help="comma-separated corpus sizes")
    parser.add_argument("--shard-size", type=int, default=250000, help="passages per encode_shard job")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--out", default="results/scale", help="folder for scale.csv|md|png")
    parser.add_argument("--work", default=None, help="scratch folder (default <out>/work)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every measured step")
    parser.add_argument("--child", choices=["search", "overhead"], help=argparse.SUPPRESS)
    parser.add_argument("--index", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--top-k", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "overhead":
        return overhead_child()
    if args.child == "search":
        return search_child(args.index, args.dataset, args.model, args.top_k)
    global THREADS
    THREADS = args.threads
    out = Path(args.out)
    return run([int(s) for s in args.sizes.split(",")], out, args.shard_size, args.dtype,
               Path(args.work) if args.work else out / "work")


if __name__ == "__main__":
    run_main(main)
