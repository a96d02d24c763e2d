"""The DPR path's configuration and wiring, without training: `source: dpr` dataset keys and
their checks, the protocol defaults, the data step's flags, the dataset's own hard negatives
drawn per epoch, and config/paper.yaml's dry run (the whole Table 1 grid with no data present)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from pipeline.core import config as pcfg

MINI = REPO / "data" / "embedded" / "dpr-mini"
BASE = {
    "datasets": {"nq-mini": {"source": "dpr", "train": "t.json", "qa": {"test": "q.csv"}, "passages": "p.tsv"}},
    "runs": {"zeroshot": {"method": "none"},
             "ca": {"method": "contaccum", "batch_size": 4, "accumulation_steps": 2, "memory_size": 8,
                    "hard_negatives": {"source": "dataset", "per_query": 1}}},
}


def with_dataset(**keys) -> dict:
    cfg = copy.deepcopy(BASE)
    cfg["datasets"]["nq-mini"] = keys
    return cfg


def test_protocol_defaults_by_source():
    cfg = pcfg.validate({"datasets": {**BASE["datasets"], "sf": {"source": "embedded", "name": "scifact-mini"}},
                         "runs": {"zeroshot": {"method": "none"}}})
    assert cfg["datasets"]["nq-mini"]["protocol"] == "answers"
    assert cfg["datasets"]["nq-mini"]["positives"] == "first"
    # A qrels dataset's section is what it was before the dpr source existed.
    assert cfg["datasets"]["sf"] == {"source": "embedded", "name": "scifact-mini", "train_split": "train",
                                     "test_split": "test", "protocol": "qrels"}
    assert pcfg.evaluate_params(cfg, "nq-mini", 1)["protocol"] == "answers"
    # The filled sections validate again (later steps re-validate the config they are given).
    again = pcfg.validate({"datasets": cfg["datasets"], "runs": cfg["runs"]})
    assert again["datasets"] == cfg["datasets"]


BAD = [
    ({"source": "dpr"}, "datasets.nq-mini: source 'dpr' needs dpr_dataset"),
    ({"source": "dpr", "dpr_dataset": "squad"}, "datasets.nq-mini.dpr_dataset"),
    ({"source": "dpr", "train": "a", "tevatron_train": "b", "qa": {"test": "q"}}, "datasets.nq-mini.tevatron_train"),
    ({"source": "dpr", "train": "a", "qa": {"train": "q", "test": "q"}}, "datasets.nq-mini.qa.train"),
    ({"source": "dpr", "train": "a", "qa": {"dev": "q"}}, "datasets.nq-mini.test_split: 'test' has no QA file"),
    ({"source": "dpr", "train": "a", "qa": {"test": "q"}, "url": "http://x"}, "datasets.nq-mini.url"),
    ({"source": "dpr", "train": "a", "qa": {"test": "q"}, "positives": "some"}, "datasets.nq-mini.positives"),
    ({"source": "dpr", "train": "a", "qa": {"test": "q"}, "protocol": "bleu"}, "datasets.nq-mini.protocol"),
    ({"source": "embedded", "train": "a"}, "datasets.nq-mini.train: only used with source 'dpr'"),
    ({"source": "embedded"}, "runs.ca.hard_negatives.source: 'dataset' needs the dataset's own"),
    ({"source": "dpr", "qa": {"test": "q"}}, "runs.ca.hard_negatives.source: 'dataset' needs the dataset's own"),
]


@pytest.mark.parametrize("dataset,message", BAD, ids=[m for _, m in BAD])
def test_bad_dpr_datasets_name_the_key(dataset, message):
    with pytest.raises(pcfg.ConfigError, match=f"config key {message}".replace("(", r"\(").replace(")", r"\)")):
        pcfg.validate(with_dataset(**dataset))


def test_dataset_override_of_the_hard_negative_source():
    cfg = pcfg.validate(with_dataset(source="embedded", name="scifact-mini", hard_negatives="bm25"))
    assert pcfg.recipe(cfg, "ca", "nq-mini")["hard_negatives"]["source"] == "bm25"
    assert pcfg.recipe(cfg, "ca")["hard_negatives"]["source"] == "dataset"


def test_dn_star_source_split_must_differ_from_the_test_split():
    cfg = {**BASE, "evaluation": {"scorings": ["dot", "dn*"], "dn_star": {"source_split": "test"}}}
    with pytest.raises(pcfg.ConfigError, match="config key evaluation.dn_star.source_split: 'test' is the test split"):
        pcfg.validate(cfg)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    from pipeline.sources import prepare as D
    from pipeline.sources.datasets import load_dataset
    from pipeline.training.hardneg import load_hard_negatives

    out = tmp_path_factory.mktemp("dpr") / "dpr-mini"
    D.main(["--name", "dpr-mini", "--source", "dpr", "--out", str(out), "--dpr-train", str(MINI / "train.json"),
            "--dpr-qa", f"test={MINI / 'test.qa.csv'}", "--dpr-passages", str(MINI / "psgs.tsv")])
    return load_dataset(out), load_hard_negatives(out / "hard_negatives" / "train.jsonl")


def test_dataset_negatives_are_redrawn_each_epoch_and_replayable(mini):
    from pipeline.sources.datasets import passage_text
    from pipeline.training.pairs import TrainingData

    ds, negatives = mini
    params = {"source": "dataset", "per_query": 1}
    data = TrainingData(ds, "train", negatives, params, seed=5)
    epochs = [[ex.negatives for ex in data.epoch(e)] for e in range(4)]
    assert all(len(e) == len(epochs[0]) == 32 for e in epochs)
    assert all(len(n) <= 1 for e in epochs for n in e)
    assert len({tuple(map(tuple, e)) for e in epochs}) > 1  # a fresh draw per epoch
    # A resumed run (a new object that starts at epoch 2) replays exactly the same negatives.
    assert [ex.negatives for ex in TrainingData(ds, "train", negatives, params, seed=5).epoch(2)] == epochs[2]
    # Every drawn negative is one of its question's candidates and never one of its positives.
    texts = {d: passage_text(ds.corpus[d]) for d in ds.corpus}
    for ex, qid in zip(data.epoch(3), ds.split("train")):
        candidates = {texts[d] for d in negatives[qid] if d not in ds.split("train")[qid]}
        assert set(ex.negatives) <= candidates
    # BM25-style (source bm25) negatives are the same every epoch.
    fixed = TrainingData(ds, "train", negatives, {"source": "bm25", "per_query": 1}, seed=5)
    assert [ex.negatives for ex in fixed.epoch(0)] == [ex.negatives for ex in fixed.epoch(7)]


def test_training_file_negatives_that_name_unknown_passages_are_refused(mini):
    from pipeline.core.common import PipelineError
    from pipeline.training.pairs import TrainingData

    ds, negatives = mini
    bad = {**negatives, next(iter(negatives)): ["no-such-passage"]}
    with pytest.raises(PipelineError, match="no-such-passage"):
        TrainingData(ds, "train", bad, {"source": "dataset", "per_query": 1}, seed=0)


def dry_run(workdir, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "1", "--snakefile",
                           str(REPO / "Snakefile"), "--directory", str(workdir), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_paper_grid_dry_run_lists_every_job_without_data(tmp_path):
    """`snakemake -n --configfile config/paper.yaml` plans the whole Table 1 grid with nothing
    downloaded: 5 datasets, 9 runs, 3 seeds, and MS MARCO dev evaluated by the MS MARCO models."""
    cfg = pcfg.load(REPO / "config" / "paper.yaml")
    assert list(cfg["datasets"]) == ["nq", "trivia", "webq", "curatedtrec", "msmarco", "msmarco-dev"]
    assert cfg["datasets"]["msmarco-dev"]["test_split"] == "dev" and cfg["datasets"]["msmarco"]["test_split"] == "test"
    proc = dry_run(tmp_path, "--configfile", str(REPO / "config" / "paper.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    counts = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] in ("data", "hard_negatives", "train", "index", "encode_shard",
                                                                   "evaluate", "aggregate", "total"):
            counts[parts[0]] = int(parts[1])
    assert counts["data"] == 5 and counts["hard_negatives"] == 1  # BM25 mining for MS MARCO only
    assert counts["train"] == counts["index"] == 5 * 9 * 3 and counts["evaluate"] == 6 * 9 * 3
    # index.shards: 43 encode_shard jobs per model, listed before anything is downloaded
    assert counts["encode_shard"] == 5 * 9 * 3 * cfg["index"]["shards"]
    assert "--dpr-dataset curatedtrec" in out and "--answer-regex" in out
    assert "--dpr-qa test=https://dl.fbaipublicfiles.com/dpr/data/retriever/nq-test.qa.csv" in out
    assert "--hard-negatives results/data/nq/hard_negatives/train.jsonl" in out
    assert "--hard-negatives results/hardneg/msmarco.jsonl" in out


def test_paper_grid_uses_the_official_files():
    from pipeline.sources.dpr_fetch import OFFICIAL, PASSAGES_URL

    raw = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    for name, ds in raw["datasets"].items():
        if ds.get("source") != "dpr":
            continue
        official = OFFICIAL[ds["dpr_dataset"]]
        assert ds["train"] == official["train"] and ds["qa"] == official["qa"] and ds["passages"] == PASSAGES_URL
        assert ds.get("answer_regex", False) == bool(official.get("regex"))
    ablations = pcfg.load(REPO / "config" / "paper-ablations.yaml")
    assert pcfg.recipe(ablations, "contaccum-8x16-11gb-nohn", "nq")["hard_negatives"] is None


@pytest.mark.parametrize("name", ["config.yaml", "scifact.yaml", "gradnorm.yaml", "paper.yaml", "paper-ablations.yaml"])
def test_filled_config_validates_again(name):
    """The aggregate rule re-validates the filled config it gets as JSON; defaults the schema
    did not allow (index.ivf.seed, nprobe null) made every aggregate job fail."""
    import json

    cfg = pcfg.load(REPO / "config" / name)
    assert pcfg.validate(json.loads(json.dumps(cfg))) == cfg
