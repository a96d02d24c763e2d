"""A tiny BEIR-layout dataset for end-to-end index/evaluate tests. Query ids and doc ids are
both small integers, so they overlap on purpose (as numeric ids can in real datasets)."""

from __future__ import annotations

import json
from pathlib import Path

TOPICS = ["protein folding", "heart disease", "solar power", "river fish", "tax policy", "deep learning",
          "vitamin d", "volcano eruption", "chess openings", "bee colonies"]


def make_tiny_beir(root: Path, docs_per_topic: int = 4) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    corpus, queries, train, test = [], [], [], []
    for t, topic in enumerate(TOPICS):
        for j in range(docs_per_topic):
            doc_id = str(t * docs_per_topic + j + 1)
            corpus.append({"_id": doc_id, "title": f"{topic} study {j}",
                           "text": f"We report findings about {topic}. Sample {j} shows {topic} effects."})
    for t, topic in enumerate(TOPICS):
        for split, rows, offset in (("train", train, 0), ("test", test, 1)):
            qid = str(2 * t + offset + 1)
            queries.append({"_id": qid, "text": f"what is known about {topic} {split}"})
            rows.append((qid, str(t * docs_per_topic + 1 + offset), 1))
    # A test query whose relevant doc has the same id as the query itself: BEIR's default
    # ignore_identical_ids would silently drop it from the ranking.
    test.append(("2", "2", 1))
    with open(root / "corpus.jsonl", "w") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in corpus)
    with open(root / "queries.jsonl", "w") as fh:
        fh.writelines(json.dumps(q) + "\n" for q in queries)
    for name, rows in (("train", train), ("test", test)):
        with open(root / "qrels" / f"{name}.tsv", "w") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            fh.writelines(f"{q}\t{d}\t{s}\n" for q, d, s in rows)
    return root


def make_zero_shot_model(model_path: Path, out: Path) -> Path:
    from pipeline.models.encoder import BiEncoder, EncoderSpec

    BiEncoder.from_spec(EncoderSpec(model=str(model_path))).save(out, weights=False)
    return out


def evaluate_zero_shot(layout, cfg: dict, dataset: str = "tiny", seed: int = 13):
    """A tiny BEIR folder under `layout`, its zero-shot model, index and evaluation, then the
    grid's tables, through the steps' own functions (no Snakemake); returns write_tables' grid."""
    from pipeline.core import config as pcfg
    from pipeline.evaluation import evaluate as ev
    from pipeline.retrieval import index as idx
    from pipeline.results.aggregate import write_tables
    from pipeline.training.train import train

    data = make_tiny_beir(layout.data(dataset))
    (data / "manifest.json").write_text(json.dumps({"output_sha256": {"corpus.jsonl": "0" * 64}}))
    model = layout.model(dataset, "zeroshot", "base")
    train(str(data), str(model), pcfg.recipe(cfg, "zeroshot", dataset), seed=seed, progress=False)
    index = layout.index(dataset, "zeroshot", "base")
    idx.run(str(model / "model"), str(data), str(index), cfg["index"])
    ev.run(str(model / "model"), str(data), str(index), str(layout.eval(dataset, "zeroshot", seed)),
           pcfg.evaluate_params(cfg, dataset, seed))
    return write_tables(layout.root, cfg)
