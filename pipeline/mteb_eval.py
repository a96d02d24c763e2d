"""MTEB as an independent evaluator: an exported model (pipeline.export) evaluated by the `mteb`
package on one of this pipeline's normalised BEIR folders, as a local retrieval task.

The task reads corpus.jsonl, queries.jsonl and qrels/<split>.tsv from the folder (nothing is
downloaded); MTEB then encodes with the model's own `encode_query` / `encode_document`, searches
exhaustively and scores with its own code (pytrec_eval underneath). Its NDCG@10 next to the
pipeline's (pipeline.aggregate's `mteb_ndcg@10` column) checks the encoding, the search and the
metric code of this pipeline against a second implementation.

    python -m pipeline.mteb_eval --model results/export/scifact/zeroshot/base \\
        --dataset results/data/scifact --split test --out results/mteb/scifact/zeroshot/base

Output (folder swapped in atomically): mteb.json, MTEB's own TaskResult JSON (its `scores` hold
ndcg_at_10, recall_at_100, ... per split), and mteb_run.json (model, dataset, split, versions,
seconds).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import PipelineError, atomic_dir, atomic_write_json, log, read_json, run_main
from .layout import MTEB_RESULT as RESULT

RUN_INFO = "mteb_run.json"
TASK_NAME = "PipelineLocalRetrieval"


def read_split(dataset_dir: Path, split: str):
    """(corpus, queries, qrels) of a normalised dataset folder, as MTEB's v2 retrieval data:
    corpus rows {id, title, text}, query rows {id, text}, qrels {qid: {docid: grade}}; only the
    split's queries are kept (MTEB also drops queries without a relevant document)."""
    from datasets import Dataset

    from .datasets import load_dataset

    ds = load_dataset(dataset_dir)
    qrels = ds.split(split)
    missing = [q for q in qrels if q not in ds.queries]
    if missing:
        raise PipelineError(f"{dataset_dir}/qrels/{split}.tsv: query ids {missing[:5]} are not in queries.jsonl")
    corpus = Dataset.from_dict({"id": list(ds.corpus),
                                "title": [(d.get("title") or "") for d in ds.corpus.values()],
                                "text": [(d.get("text") or "") for d in ds.corpus.values()]})
    queries = Dataset.from_dict({"id": list(qrels), "text": [ds.queries[q] for q in qrels]})
    return corpus, queries, {q: dict(d) for q, d in qrels.items()}


def local_task(dataset_dir: Path, split: str, name: str):
    """An MTEB retrieval task whose data is the folder `dataset_dir` (loaded from disk, never a hub)."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    class LocalRetrieval(AbsTaskRetrieval):
        # MTEB's retrieval defaults, stated: keep a hit whose doc id equals the query id (as the
        # pipeline does) and score every rank.
        ignore_identical_ids = False
        skip_first_result = False
        metadata = TaskMetadata(
            name=TASK_NAME, dataset={"path": str(dataset_dir), "revision": "local"},
            description=f"{name}: the pipeline's normalised BEIR folder {dataset_dir}, split {split}",
            type="Retrieval", category="t2t", modalities=["text"], eval_splits=[split], eval_langs=["eng-Latn"],
            main_score="ndcg_at_10")

        def load_data(self, num_proc=None, **kwargs) -> None:
            if self.data_loaded:
                return
            corpus, queries, qrels = read_split(dataset_dir, split)
            self.dataset = {"default": {split: {"corpus": corpus, "queries": queries, "relevant_docs": qrels,
                                                "top_ranked": None}}}
            self.data_loaded = True

    return LocalRetrieval()


def check_export(model_dir: Path) -> None:
    if not (model_dir / "modules.json").is_file():
        raise PipelineError(f"{model_dir}: not a sentence-transformers folder (missing modules.json); "
                            "write it with python -m pipeline.export")


def evaluate(model_dir: str | Path, dataset_dir: str | Path, split: str, out: str | Path,
             batch_size: int = 64) -> dict:
    """Run MTEB on the export `model_dir` over `dataset_dir`'s `split`; write its result JSON to `out`."""
    model_dir, dataset_dir = Path(model_dir), Path(dataset_dir)
    check_export(model_dir)
    if not (dataset_dir / "corpus.jsonl").is_file():
        raise PipelineError(f"{dataset_dir}: not a dataset folder (missing corpus.jsonl)")
    import mteb
    from sentence_transformers import SentenceTransformer

    task = local_task(dataset_dir, split, dataset_dir.name)
    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    started = time.time()
    result = mteb.evaluate(model, task, cache=None, encode_kwargs={"batch_size": batch_size},
                           overwrite_strategy="always", show_progress_bar=False)
    task_result = result.task_results[0]
    main = task_result.scores[split][0]
    log.info("MTEB %s %s: ndcg@10 %.5f", model_dir, split, main["ndcg_at_10"])
    with atomic_dir(out) as tmp:
        task_result.to_disk(tmp / RESULT)  # MTEB's own result file (scores rounded to 6 digits)
        atomic_write_json(tmp / RUN_INFO, {"model": str(model_dir), "dataset": str(dataset_dir), "split": split,
                                           "mteb_version": mteb.__version__, "seconds": time.time() - started,
                                           "ndcg@10": float(main["ndcg_at_10"])})
    return main


def ndcg_at_10(result_dir: str | Path) -> float | None:
    """MTEB's NDCG@10 from a result folder written by `evaluate` (None if there is none)."""
    path = Path(result_dir) / RESULT
    if not path.is_file():
        return None
    scores = read_json(path).get("scores", {})
    for rows in scores.values():
        for row in rows:
            if "ndcg_at_10" in row:
                return float(row["ndcg_at_10"])
    raise PipelineError(f"{path}: no ndcg_at_10 in MTEB's scores")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m pipeline.mteb_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="sentence-transformers folder written by pipeline.export")
    parser.add_argument("--dataset", required=True, help="normalised dataset folder (results/data/<dataset>)")
    parser.add_argument("--split", default="test", help="qrels split to evaluate (default: test)")
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    parser.add_argument("--batch-size", type=int, default=64, help="encoding batch size (default: 64)")
    args = parser.parse_args(argv)
    return evaluate(args.model, args.dataset, args.split, args.out, args.batch_size)


if __name__ == "__main__":
    run_main(main)
