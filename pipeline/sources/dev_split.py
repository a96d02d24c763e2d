"""A dev split carved out of the training queries, for choosing a regime without the test split.

The data step (`python -m pipeline.sources.prepare --dev-split JSON`, from a dataset's `dev_split:` key)
moves a seeded random set of training queries, with all their judgments, from the train split's
qrels into a split of their own (`qrels/dev.tsv` by default). Training reads the train split, so
it never sees them; evaluation reaches them with `test_split: dev`. Queries that also appear in
any other split (the test split above all) are never chosen, so dev and test share no query. The
manifest records the parameters, the counts and a digest of the chosen query ids.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from pipeline.core.common import PipelineError
from pipeline.core.params import DEV_SPLIT_NAME, check_int, check_keys, check_number

KEYS = ("size", "fraction", "seed", "name", "from")


def parse(text: str) -> dict:
    """The --dev-split JSON: {size | fraction, seed, name (default dev), from (default train)}."""
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"--dev-split: not valid JSON ({exc})") from None
    check_keys(params, KEYS, "--dev-split")
    if ("size" in params) == ("fraction" in params):
        raise PipelineError("--dev-split: give exactly one of size (queries) or fraction (of the train queries)")
    if "size" in params:
        check_int(params["size"], "--dev-split size")
    else:
        check_number(params["fraction"], "--dev-split fraction", 1e-9, 1 - 1e-9)
    check_int(params.get("seed"), "--dev-split seed", minimum=0)
    return {"name": DEV_SPLIT_NAME, "from": "train", **params}


def carve(qrels: dict[str, dict[str, dict[str, int]]], params: dict) -> dict:
    """Move the dev queries out of `qrels[params['from']]` into `qrels[params['name']]` (in place);
    return the manifest record."""
    source, name = params["from"], params["name"]
    if source not in qrels:
        raise PipelineError(f"--dev-split: the dataset has no split {source!r} to carve from; splits: {sorted(qrels)}")
    if name in qrels:
        raise PipelineError(f"--dev-split: the dataset already has a split {name!r}; give the dev split another name")
    train = qrels[source]
    elsewhere = {q for split, judged in qrels.items() if split != source for q in judged}
    candidates = sorted(q for q, docs in train.items() if q not in elsewhere and any(g > 0 for g in docs.values()))
    size = params["size"] if "size" in params else int(round(params["fraction"] * len(train)))
    if not 1 <= size < len(candidates):
        raise PipelineError(f"--dev-split: {size} dev queries asked for, but split {source!r} has {len(candidates)} "
                            "queries that are in no other split; the dev split needs at least 1 and must leave "
                            "some to train on")
    order = np.random.default_rng(int(params["seed"])).permutation(len(candidates))
    chosen = sorted(candidates[i] for i in order[:size])
    qrels[name] = {q: train.pop(q) for q in chosen}
    return {**{k: params[k] for k in KEYS if k in params}, "queries": len(chosen),
            "pairs": sum(len(docs) for docs in qrels[name].values()), "train_queries_left": len(train),
            "query_ids_sha256": hashlib.sha256("\n".join(chosen).encode()).hexdigest()}


__all__ = ["parse", "carve"]
