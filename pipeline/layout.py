"""The results-folder layout, in one place: every rule and every step asks this module where a
dataset, model, index, evaluation, table or plot lives, so the layout is spelled once.

    <root>/data/<dataset>/                 normalised dataset + manifest.json
    <root>/data/<dataset>/hard_negatives/train.jsonl   the dataset's own hard negatives (source dpr)
    <root>/hardneg/<dataset>.jsonl         BM25 hard negatives
    <root>/models/<dataset>/<run>/<tag>/   model/, train_log.jsonl, train_summary.json
    <root>/index/<dataset>/<run>/<tag>/    embeddings.npy, docids.json, <index>.faiss, index_stats.json
    <root>/shards/<dataset>/plan.json      shard row ranges (only with index.shards or index.shard_size)
    <root>/shards/<dataset>/<run>/<tag>/<i>.npy, <i>.json   one encoded corpus shard (rows, ids)
    <root>/eval/<dataset>/<run>/seed<s>/   metrics.json, per_query.json, index_report.json, run-*.trec
    <root>/tables/, <root>/plots/, <root>/logs/, <root>/mlflow.db, <root>/report.html
    <root>/config.json                     the validated config the aggregate step reads

`tag` is `seed<s>` for a trained model and `base` for a zero-shot one (its weights do not
depend on the seed, so its corpus is encoded once). Path arguments may be Snakemake wildcard
patterns such as "{dataset}".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ZERO_SHOT_TAG = "base"

# File names inside the folders above.
MANIFEST = "manifest.json"
MODEL = "model"
TRAIN_LOG = "train_log.jsonl"
TRAIN_SUMMARY = "train_summary.json"
EMBEDDINGS = "embeddings.npy"
DOC_IDS = "docids.json"
INDEX_STATS = "index_stats.json"
METRICS = "metrics.json"
PER_QUERY = "per_query.json"
INDEX_REPORT = "index_report.json"
DATASET_HARDNEG = "hard_negatives"
SHARD_PLAN = "plan.json"
# The aggregate tables the report shows (results/tables/<name>.html), each captioned by report/<name>.rst.
REPORT_TABLES = ("headline", "summary", "dn", "index", "diagnostics")


def model_tag(seed: int | str, trained: bool) -> str:
    return f"seed{seed}" if trained else ZERO_SHOT_TAG


@dataclass(frozen=True)
class Layout:
    root: Path = Path("results")

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # ------------------------------------------------------------------ per dataset
    def data(self, dataset: str) -> Path:
        return self.root / "data" / dataset

    def manifest(self, dataset: str) -> Path:
        return self.data(dataset) / MANIFEST

    def hardneg(self, dataset: str) -> Path:
        return self.root / "hardneg" / f"{dataset}.jsonl"

    def dataset_hardneg(self, dataset: str, split: str = "train") -> Path:
        """The dataset's own hard negatives (source dpr: DPR's hard_negative_ctxs / Tevatron's
        negative_passages), written by the data step inside the dataset folder."""
        return self.data(dataset) / DATASET_HARDNEG / f"{split}.jsonl"

    # ------------------------------------------------------------------ per model
    def model(self, dataset: str, run: str, tag: str) -> Path:
        return self.root / "models" / dataset / run / tag

    def train_summary(self, dataset: str, run: str, tag: str) -> Path:
        return self.model(dataset, run, tag) / TRAIN_SUMMARY

    def index(self, dataset: str, run: str, tag: str) -> Path:
        return self.root / "index" / dataset / run / tag

    def index_stats(self, dataset: str, run: str, tag: str) -> Path:
        return self.index(dataset, run, tag) / INDEX_STATS

    # Shards live beside, not inside, the index folder: the index step swaps its whole folder
    # in atomically, which must never delete the shards it was gathered from.
    def shard_plan(self, dataset: str) -> Path:
        return self.root / "shards" / dataset / SHARD_PLAN

    def shards(self, dataset: str, run: str, tag: str) -> Path:
        return self.root / "shards" / dataset / run / tag

    def shard_embeddings(self, dataset: str, run: str, tag: str, shard: int | str) -> Path:
        return self.shards(dataset, run, tag) / f"{shard}.npy"

    def shard_ids(self, dataset: str, run: str, tag: str, shard: int | str) -> Path:
        return self.shards(dataset, run, tag) / f"{shard}.json"

    # ------------------------------------------------------------------ per job
    def eval(self, dataset: str, run: str, seed: int | str) -> Path:
        return self.root / "eval" / dataset / run / f"seed{seed}"

    def metrics(self, dataset: str, run: str, seed: int | str) -> Path:
        return self.eval(dataset, run, seed) / METRICS

    # ------------------------------------------------------------------ grid-wide
    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def grid_config(self) -> str:
        """The validated config of the grid as JSON (what the aggregate step reads)."""
        return str(self.root / "config.json")

    @property
    def mlflow_store(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def reference(self, name: str) -> Path:
        return self.root / "reference" / name
