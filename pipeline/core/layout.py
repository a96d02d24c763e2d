"""The results-folder layout, in one place: every rule and every step asks this module where a
dataset, model, index, evaluation, table or plot lives, so the layout is spelled once.

Recipe-independent work is shared by every experiment (config key `experiment`); everything a
recipe, the evaluation or the grid decides lives under the experiment's own folder, so two configs
that reuse a dataset and a run name never overwrite each other's files:

    <root>/data/<dataset>/                 normalised dataset + manifest.json          (shared)
    <root>/data/<dataset>/hard_negatives/train.jsonl   the dataset's own hard negatives  (shared)
    <root>/hardneg/<dataset>.jsonl         BM25 hard negatives                        (shared)
    <root>/downloads/, <root>/logs/{data,hardneg}/, <root>/mlflow.db, <root>/reference/ (shared)
    <root>/<experiment>/models/<dataset>/<run>/<tag>/   model/, train_log.jsonl, train_summary.json
    <root>/<experiment>/index/<dataset>/<run>/<tag>/    embeddings.npy, docids.json, <index>.faiss, index_stats.json
    <root>/<experiment>/shards/<dataset>/plan.json      shard row ranges (index.shards / index.shard_size)
    <root>/<experiment>/shards/<dataset>/<run>/<tag>/<i>.npy, <i>.json   one encoded corpus shard
    <root>/<experiment>/eval/<dataset>/<run>/seed<s>/   metrics.json, per_query.json, index_report.json, run-*.trec
    <root>/<experiment>/export/<dataset>/<run>/<tag>/   sentence-transformers folder + README.md model card
    <root>/<experiment>/mteb/<dataset>/<run>/<tag>/     MTEB's result JSON of that export on <dataset>'s test split
    <root>/<experiment>/tables/ (+ grid.json), plots/, logs/, mlartifacts/, report.html
    <root>/<experiment>/config.json        the validated config the aggregate step reads

`tag` is `seed<s>` for a trained model and `base` for a zero-shot one (its weights do not
depend on the seed, so its corpus is encoded once). Path arguments may be Snakemake wildcard
patterns such as "{dataset}". `Layout(root)` without an experiment is the flat layout written
before results were scoped per experiment; `python -m pipeline.core.migrate --config X` moves such a
folder's grid under X's experiment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.common import PipelineError, read_json

ZERO_SHOT_TAG = "base"

# File names inside the folders above.
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1  # of a normalised dataset folder's manifest.json (pipeline.sources.prepare, sources.kinds.dpr)
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
EXPORT_INFO = "export.json"   # written last into an export folder (pipeline.export.export)
MTEB_RESULT = "mteb.json"     # MTEB's own TaskResult JSON (pipeline.export.mteb_eval)
GRID = "grid.json"
# The aggregate tables the report shows (results/<experiment>/tables/<name>.html), each captioned by report/<name>.rst.
REPORT_TABLES = ("headline", "summary", "dn", "index", "diagnostics")
# Names directly under the results root that belong to every experiment: no experiment may take one.
SHARED_NAMES = frozenset({"data", "hardneg", "downloads", "logs", "reference", "mlflow.db", "mlartifacts",
                          "models", "index", "shards", "eval", "tables", "plots", "report.html"})


def model_tag(seed: int | str, trained: bool) -> str:
    return f"seed{seed}" if trained else ZERO_SHOT_TAG


def _folder(base: str, name: str, doc: str | None = None) -> property:
    """A fixed path under the layout's `root` (shared by every experiment) or `scope` (its own)."""
    return property(lambda self: getattr(self, base) / name, doc=doc or f"<{base}>/{name}")


@dataclass(frozen=True)
class Layout:
    root: Path = Path("results")
    experiment: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def for_config(cls, cfg: dict, root: str | os.PathLike = "results") -> "Layout":
        """The layout of a validated config's experiment."""
        return cls(root, cfg.get("experiment", "default"))

    @property
    def scope(self) -> Path:
        """The folder of everything the experiment's recipes decide (the root in the flat layout)."""
        return self.root / self.experiment if self.experiment else self.root

    # ------------------------------------------------------------------ per dataset (shared)
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
        return self.scope / "models" / dataset / run / tag

    def train_summary(self, dataset: str, run: str, tag: str) -> Path:
        return self.model(dataset, run, tag) / TRAIN_SUMMARY

    def index(self, dataset: str, run: str, tag: str) -> Path:
        return self.scope / "index" / dataset / run / tag

    def index_stats(self, dataset: str, run: str, tag: str) -> Path:
        return self.index(dataset, run, tag) / INDEX_STATS

    # Shards live beside, not inside, the index folder: the index step swaps its whole folder
    # in atomically, which must never delete the shards it was gathered from. The plan follows the
    # experiment's index.shards / index.shard_size, so it is not shared either.
    def shard_plan(self, dataset: str) -> Path:
        return self.scope / "shards" / dataset / SHARD_PLAN

    def shards(self, dataset: str, run: str, tag: str) -> Path:
        return self.scope / "shards" / dataset / run / tag

    def shard_embeddings(self, dataset: str, run: str, tag: str, shard: int | str) -> Path:
        return self.shards(dataset, run, tag) / f"{shard}.npy"

    def shard_ids(self, dataset: str, run: str, tag: str, shard: int | str) -> Path:
        return self.shards(dataset, run, tag) / f"{shard}.json"

    def export(self, dataset: str, run: str, tag: str) -> Path:
        """The model as a sentence-transformers folder (pipeline.export.export)."""
        return self.scope / "export" / dataset / run / tag

    def mteb(self, dataset: str, run: str, tag: str) -> Path:
        """MTEB's evaluation of the export of (model dataset, run, tag) on `dataset` (pipeline.export.mteb_eval)."""
        return self.scope / "mteb" / dataset / run / tag

    # ------------------------------------------------------------------ per job
    def eval(self, dataset: str, run: str, seed: int | str) -> Path:
        return self.scope / "eval" / dataset / run / f"seed{seed}"

    def metrics(self, dataset: str, run: str, seed: int | str) -> Path:
        return self.eval(dataset, run, seed) / METRICS

    # ------------------------------------------------------------------ grid-wide
    tables = _folder("scope", "tables")
    plots = _folder("scope", "plots")
    logs = _folder("scope", "logs", "Logs of the experiment's jobs (train, index, evaluate, aggregate).")
    shared_logs = _folder("root", "logs", "Logs of the shared jobs (data, hardneg).")
    mlflow_artifacts = _folder("scope", "mlartifacts")
    downloads = _folder("root", "downloads")
    mlflow_store = _folder("root", "mlflow.db")
    report = _folder("scope", "report.html")

    @property
    def grid(self) -> Path:
        """The resolved grid and its digest, written beside the tables by pipeline.results.aggregate."""
        return self.tables / GRID

    def grid_stamp(self, digest: str) -> Path:
        """Written only by the workflow's aggregate job (the final target), so tables that a
        hand-run aggregate or another grid wrote are rebuilt, never reported as done."""
        return self.tables / f".grid-{digest}.done"

    @property
    def grid_config(self) -> str:
        """The validated config of the grid as JSON (what the aggregate step reads)."""
        return str(self.scope / "config.json")

    def reference(self, name: str) -> Path:
        return self.root / "reference" / name


def mteb_ndcg_at_10(result_dir: str | Path) -> float | None:
    """MTEB's NDCG@10 from a result folder written by `pipeline.export.mteb_eval` (None if there is none)."""
    path = Path(result_dir) / MTEB_RESULT
    if not path.is_file():
        return None
    scores = read_json(path).get("scores", {})
    for rows in scores.values():
        for row in rows:
            if "ndcg_at_10" in row:
                return float(row["ndcg_at_10"])
    raise PipelineError(f"{path}: no ndcg_at_10 in MTEB's scores")
