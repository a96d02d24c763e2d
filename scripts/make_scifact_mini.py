#!/usr/bin/env python
"""Build data/embedded/scifact-mini: a small, deterministic subset of BEIR SciFact that ships with
the repository so the default experiment and the tests run without any download.

    python scripts/make_scifact_mini.py --source ../shared/data/scifact --out data/embedded/scifact-mini

Selection (seeded, so the same source files always give byte-identical output):
  - 300 train queries and 100 test queries, drawn with random.Random(seed).sample from the queries
    that have judgements in qrels/train.tsv and qrels/test.tsv;
  - every document judged for a chosen query;
  - random distractor documents from the rest of the corpus, up to --docs documents in total.
Files keep the source order; document metadata is dropped to keep the committed files small.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.common import PipelineError, atomic_dir, run_main  # noqa: E402
from pipeline.sources.prepare import BeirData, counts, read_beir_folder, write_normalized  # noqa: E402

LICENSE_TEXT = """\
The files in this folder are a subset of SciFact as redistributed by BEIR.

SciFact (https://github.com/allenai/scifact, Wadden et al. 2020) is released
under the Creative Commons Attribution-NonCommercial 2.0 Generic license
(CC BY-NC 2.0): https://creativecommons.org/licenses/by-nc/2.0/

You may share and adapt this data for NON-COMMERCIAL purposes only, giving
appropriate credit (see README.md for the citations) and indicating changes.
The changes made here: a deterministic subset of queries and documents was
selected and document/query metadata was removed (see README.md).

This license applies to the data files in this folder only, not to the code of
the repository that contains them.
"""

README_TEMPLATE = """\
# scifact-mini

A small, deterministic subset of **SciFact** in BEIR format, shipped with this repository so the
default experiment and the test suite run offline in minutes. It is **not** a benchmark: report
results on the full SciFact set.

| split | queries | pairs |
|---|---|---|
{split_rows}

Corpus: {docs:,} documents ({judged:,} judged for a chosen query, the rest random distractors).
Queries: {queries:,}.

## How it was built

Built by `scripts/make_scifact_mini.py` from the BEIR SciFact files (`corpus.jsonl`,
`queries.jsonl`, `qrels/train.tsv`, `qrels/test.tsv` of the official BEIR `scifact.zip`, whose
sha256 values are listed below):

```
python scripts/make_scifact_mini.py --source ../shared/data/scifact --out data/embedded/scifact-mini \\
    --seed {seed} --train-queries {n_train} --test-queries {n_test} --docs {n_docs}
```

- {n_train} train and {n_test} test queries are drawn with `random.Random({seed}).sample` from the
  queries judged in `qrels/train.tsv` and `qrels/test.tsv`;
- every document judged for a chosen query is kept, and random distractors fill the corpus up
  to {n_docs:,} documents;
- file order follows the source; `metadata` fields are dropped; qrels use LF line endings.

The same source files always give byte-identical output. Source files (sha256):

| file | sha256 |
|---|---|
{source_rows}

## License and citation

SciFact is licensed **CC BY-NC 2.0** (non-commercial use only); see `LICENSE`. If you use this
data, cite both:

- David Wadden, Shanchuan Lin, Kyle Lo, Lucy Lu Wang, Madeleine van Zuylen, Arman Cohan,
  Hannaneh Hajishirzi. *Fact or Fiction: Verifying Scientific Claims.* EMNLP 2020.
- Nandan Thakur, Nils Reimers, Andreas Rücklé, Abhishek Srivastava, Iryna Gurevych. *BEIR: A
  Heterogeneous Benchmark for Zero-shot Evaluation of Information Retrieval Models.* NeurIPS 2021
  Datasets and Benchmarks Track.
"""


def select(data: BeirData, seed: int, n_train: int, n_test: int, n_docs: int) -> BeirData:
    for split, want in (("train", n_train), ("test", n_test)):
        if split not in data.qrels:
            raise PipelineError(f"source has no qrels/{split}.tsv")
        if len(data.qrels[split]) < want:
            raise PipelineError(f"qrels/{split}.tsv has {len(data.qrels[split])} queries, fewer than {want}")
    rng = random.Random(seed)
    # One generator drawn in a fixed order (train, test, distractors) makes the whole subset a
    # function of the seed alone.
    chosen = {"train": set(rng.sample(list(data.qrels["train"]), n_train)),
              "test": set(rng.sample(list(data.qrels["test"]), n_test))}
    qrels = {split: {q: docs for q, docs in data.qrels[split].items() if q in chosen[split]}
             for split in ("train", "test")}
    judged = {d for split in qrels.values() for docs in split.values() for d in docs}
    if len(judged) > n_docs:
        raise PipelineError(f"the chosen queries judge {len(judged)} documents, more than --docs {n_docs}")
    pool = [d for d in data.corpus if d not in judged]
    keep = judged | set(rng.sample(pool, n_docs - len(judged)))
    wanted_queries = chosen["train"] | chosen["test"]
    return BeirData(corpus={d: doc for d, doc in data.corpus.items() if d in keep},
                    queries={q: row for q, row in data.queries.items() if q in wanted_queries},
                    qrels=qrels, input_sha256=data.input_sha256)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="BEIR SciFact folder (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--out", default="data/embedded/scifact-mini", help="output folder (replaced atomically)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--train-queries", type=int, default=300)
    p.add_argument("--test-queries", type=int, default=100)
    p.add_argument("--docs", type=int, default=1000, help="corpus size including distractors")
    args = p.parse_args(argv)

    data = read_beir_folder(args.source)
    mini = select(data, args.seed, args.train_queries, args.test_queries, args.docs)
    c = counts(mini)
    judged = len({d for split in mini.qrels.values() for docs in split.values() for d in docs})
    with atomic_dir(args.out) as tmp:
        write_normalized(mini, tmp)
        (tmp / "LICENSE").write_text(LICENSE_TEXT, encoding="utf-8")
        (tmp / "README.md").write_text(README_TEMPLATE.format(
            split_rows="\n".join(f"| {s} | {v['queries']} | {v['pairs']} |" for s, v in c["splits"].items()),
            docs=c["docs"], judged=judged, queries=c["queries"], seed=args.seed, n_train=args.train_queries,
            n_test=args.test_queries, n_docs=args.docs,
            source_rows="\n".join(f"| {rel} | `{sha}` |" for rel, sha in sorted(data.input_sha256.items())),
        ), encoding="utf-8")
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    print(f"{args.out}: {c['docs']} docs, {c['queries']} queries, "
          + ", ".join(f"{s} {v['queries']} queries / {v['pairs']} pairs" for s, v in c["splits"].items()))


if __name__ == "__main__":
    run_main(main)
