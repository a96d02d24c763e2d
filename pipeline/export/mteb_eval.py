"""MTEB as an independent evaluator: an exported model (pipeline.export.export) evaluated by the `mteb`
package on one of this pipeline's normalised BEIR folders, as a local retrieval task.

The task reads corpus.jsonl, queries.jsonl and qrels/<split>.tsv from the folder (nothing is
downloaded); MTEB then encodes with the model's own `encode_query` / `encode_document`, searches
exhaustively and scores with its own code (pytrec_eval underneath). Its NDCG@10 next to the
pipeline's (pipeline.results.aggregate's `mteb_ndcg@10` column) checks the encoding, the search and the
metric code of this pipeline against a second implementation.

    python -m pipeline.export.mteb_eval --model results/scifact/export/scifact/zeroshot/base \\
        --dataset results/data/scifact --split test --out results/scifact/mteb/scifact/zeroshot/base

Output (folder swapped in atomically): mteb.json, MTEB's own TaskResult JSON (its `scores` hold
ndcg_at_10, recall_at_100, ... per split), and mteb_run.json (model, dataset, split, versions,
seconds).
"""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.core.common import PipelineError, atomic_dir, atomic_write_json, log, read_json, run_main, step_parser
from pipeline.core.layout import MTEB_RESULT as RESULT
from pipeline.sources.datasets import load_dataset
from pipeline.retrieval.readers import load_embeddings

RUN_INFO = "mteb_run.json"
TASK_NAME = "PipelineLocalRetrieval"


def read_split(dataset_dir: Path, split: str):
    """(corpus, queries, qrels) of a normalised dataset folder, as MTEB's v2 retrieval data:
    corpus rows {id, title, text}, query rows {id, text}, qrels {qid: {docid: grade}}; only the
    split's queries are kept (MTEB also drops queries without a relevant document)."""
    from datasets import Dataset

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
                            "write it with python -m pipeline.export.export")


def indexed_corpus_model(model, index_dir: Path, dataset_dir: Path, sample: int = 64):
    """MTEB's wrapper of `model` that encodes queries itself but takes the documents' embeddings
    from the pipeline's index folder (for corpora too large to encode twice). The export is first
    checked to reproduce `sample` of those rows (max |diff| <= 1e-5), so the shortcut skips only
    work whose result is known; MTEB's search and metrics stay its own."""
    import numpy as np
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper
    from mteb.types import PromptType

    emb, doc_ids, _ = load_embeddings(index_dir)
    row_of = {d: i for i, d in enumerate(doc_ids)}
    ds = load_dataset(dataset_dir)
    if set(ds.corpus) != set(row_of):
        raise PipelineError(f"{index_dir}: its doc ids are not the corpus of {dataset_dir}")
    probe = np.random.default_rng(0).choice(len(doc_ids), size=min(sample, len(doc_ids)), replace=False)
    mine = model.encode_document(ds.passages([doc_ids[i] for i in probe]), convert_to_numpy=True)
    diff = float(np.abs(mine - np.asarray(emb[probe])).max())
    if diff > 1e-5:
        raise PipelineError(f"{index_dir}: the export does not reproduce these embeddings (max |diff| {diff:.2e} "
                            f"on {len(probe)} documents); were they encoded by another model?")
    log.info("corpus embeddings from %s (export reproduces %d sampled rows, max |diff| %.1e)", index_dir,
             len(probe), diff)

    class IndexedCorpus(SentenceTransformerEncoderWrapper):
        def encode(self, inputs, *, prompt_type=None, **kwargs):
            if prompt_type == PromptType.document:
                rows = [row_of[i] for batch in inputs for i in batch["id"]]
                return np.asarray(emb[np.asarray(rows)], dtype=np.float32)
            return super().encode(inputs, prompt_type=prompt_type, **kwargs)

    return IndexedCorpus(model), diff


def evaluate(model_dir: str | Path, dataset_dir: str | Path, split: str, out: str | Path,
             batch_size: int = 64, corpus_index: str | Path | None = None) -> dict:
    """Run MTEB on the export `model_dir` over `dataset_dir`'s `split`; write its result JSON to
    `out`. With `corpus_index` (an index folder of the same model), the documents' embeddings are
    read from it instead of being encoded again (see `indexed_corpus_model`)."""
    model_dir, dataset_dir = Path(model_dir), Path(dataset_dir)
    check_export(model_dir)
    if not (dataset_dir / "corpus.jsonl").is_file():
        raise PipelineError(f"{dataset_dir}: not a dataset folder (missing corpus.jsonl)")
    import mteb
    from sentence_transformers import SentenceTransformer

    task = local_task(dataset_dir, split, dataset_dir.name)
    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    sampled_diff = None
    if corpus_index is not None:
        model, sampled_diff = indexed_corpus_model(model, Path(corpus_index), dataset_dir)
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
                                           "ndcg@10": float(main["ndcg_at_10"]),
                                           "corpus_embeddings": str(corpus_index) if corpus_index else None,
                                           "corpus_sample_max_abs_diff": sampled_diff})
    return main


def main(argv: list[str] | None = None) -> dict:
    parser = step_parser("python -m pipeline.export.mteb_eval", __doc__, {
        "model": "sentence-transformers folder written by pipeline.export.export",
        "dataset": "normalised dataset folder (results/data/<dataset>)",
        "out": "output folder (written atomically)"})
    parser.add_argument("--split", default="test", help="qrels split to evaluate (default: test)")
    parser.add_argument("--batch-size", type=int, default=64, help="encoding batch size (default: 64)")
    parser.add_argument("--corpus-index", help="index folder of the same model (results/<experiment>/index/...): take the "
                        "documents' embeddings from it instead of encoding the corpus again, after checking that "
                        "the export reproduces a sample of them; MTEB still encodes the queries, searches and scores")
    args = parser.parse_args(argv)
    return evaluate(args.model, args.dataset, args.split, args.out, args.batch_size, args.corpus_index)


if __name__ == "__main__":
    run_main(main)
