"""pipeline.sources.dev_split: a seeded set of training queries carved into a split of its own,
never a test query, recorded in the manifest; bad parameters refused naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core.common import PipelineError
from pipeline.sources import dev_split
from pipeline.sources import prepare as D
from pipeline.sources.datasets import load_dataset
from pipeline.training.pairs import TrainingData
from tests.training.test_pairs import pairs, write_folder


def prepare(src: Path, out: Path, dev: dict) -> dict:
    return D.main(["--name", "small", "--source", "local", "--path", str(src), "--out", str(out),
                   "--dev-split", json.dumps(dev), "--no-progress"])


def test_dev_split_is_seeded_recorded_and_never_test_or_train(tmp_path):
    src = write_folder(tmp_path / "src")
    # q8 is a test query: give it a training judgment too, so it is a candidate only if the carver errs.
    with open(src / "qrels" / "train.tsv", "a") as fh:
        fh.write("q8\td1\t1\n")
    manifest = prepare(src, tmp_path / "a", {"size": 3, "seed": 11})
    again = prepare(src, tmp_path / "b", {"size": 3, "seed": 11})
    other = prepare(src, tmp_path / "c", {"size": 3, "seed": 12})
    assert manifest["dev_split"] == again["dev_split"] and manifest["dev_split"]["queries"] == 3
    assert manifest["dev_split"]["query_ids_sha256"] != other["dev_split"]["query_ids_sha256"]
    ds = load_dataset(tmp_path / "a")
    dev, train_q, test = set(ds.split("dev")), set(ds.split("train")), set(ds.split("test"))
    assert len(dev) == 3 and not dev & test and not dev & train_q
    assert manifest["counts"]["splits"]["dev"]["queries"] == 3
    trained_on = {e.query_id for e in TrainingData(ds, "train", pairs=pairs("qrels", "title")).epoch(0)}
    assert not trained_on & dev
    assert dev | train_q == {f"q{i}" for i in range(9)} and "q8" not in dev  # nothing lost; q8 stays


@pytest.mark.parametrize("dev,message", [({"size": 8, "seed": 0}, "8 dev queries asked for"),
                                         ({"size": 2, "seed": 0, "name": "test"}, "already has a split 'test'"),
                                         ({"size": 2, "fraction": 0.1, "seed": 0}, "exactly one of size"),
                                         ({"size": 2}, "seed: expected")])
def test_bad_dev_splits_are_refused(tmp_path, dev, message):
    with pytest.raises(PipelineError, match=message):
        prepare(write_folder(tmp_path / "src"), tmp_path / "out", dev)


def test_parse_fills_the_defaults_and_names_bad_keys():
    assert dev_split.parse('{"size": 3, "seed": 1}') == {"name": "dev", "from": "train", "size": 3, "seed": 1}
    for text, message in (("{size", "--dev-split: not valid JSON"),
                          ('{"fraction": 1.0, "seed": 0}', "--dev-split fraction: expected a number"),
                          ('{"size": 3, "seed": 0, "sise": 1}', r"--dev-split: unknown key\(s\) \['sise'\]")):
        with pytest.raises(PipelineError, match=message):
            dev_split.parse(text)


def test_carve_moves_whole_queries_and_keeps_the_rest():
    qrels = {"train": {f"q{i}": {f"d{i}": 1, "dx": 0} for i in range(10)} | {"q0": {"d0": 1}, "z": {"d1": 0}},
             "test": {"q9": {"d9": 1}}}
    record = dev_split.carve(qrels, {"name": "dev", "from": "train", "fraction": 0.25, "seed": 3})
    dev = set(qrels["dev"])
    assert len(dev) == record["queries"] == 3 and "q9" not in dev and "z" not in dev  # test and unjudged stay
    assert not dev & set(qrels["train"]) and record["train_queries_left"] == len(qrels["train"]) == 8
    assert record["pairs"] == sum(len(d) for d in qrels["dev"].values())
    with pytest.raises(PipelineError, match="no split 'train' to carve from"):
        dev_split.carve({"test": {}}, {"name": "dev", "from": "train", "size": 1, "seed": 0})
