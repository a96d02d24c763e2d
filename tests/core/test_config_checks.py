"""pipeline.core.config_checks: the per-dataset checks of config validation (dev split, the `dpr`
source's keys, a negative_filter section), each problem a message naming the config key."""

from __future__ import annotations

from pipeline.core import config_checks as C


def dataset(source="beir", **keys):
    return {"source": source, "train_split": "train", "test_split": "test",
            "protocol": "answers" if source == "dpr" else "qrels", **keys}


def test_dev_split_needs_one_size_and_its_own_name():
    assert C.dev_split_problems("d", dataset()) == []
    assert C.dev_split_problems("d", dataset(dev_split={"size": 10})) == []
    (both,) = C.dev_split_problems("d", dataset(dev_split={"size": 10, "fraction": 0.1}))
    assert both.startswith("config key datasets.d.dev_split: give exactly one of size")
    (name,) = C.dev_split_problems("d", dataset(dev_split={"fraction": 0.1, "name": "train"}))
    assert name.startswith("config key datasets.d.dev_split.name: 'train' is the train split")
    (dpr,) = C.dev_split_problems("q", dataset("dpr", dev_split={"size": 5}))
    assert "not available for source 'dpr'" in dpr


def test_dpr_keys_belong_to_dpr_datasets_only():
    assert C.dpr_dataset_problems("d", dataset(qa={"test": "t.csv"}, passages="p.tsv")) == [
        "config key datasets.d.qa: only used with source 'dpr' (source is 'beir')",
        "config key datasets.d.passages: only used with source 'dpr' (source is 'beir')"]


def test_dpr_dataset_needs_files_and_a_qa_file_for_the_evaluated_split():
    assert C.dpr_dataset_problems("nq", dataset("dpr", dpr_dataset="nq")) == []
    assert C.dpr_dataset_problems("x", dataset("dpr", train="t.json", qa={"test": "q.csv"})) == []
    problems = C.dpr_dataset_problems("x", dataset("dpr", path="p", train="t.json", tevatron_train="t",
                                                   qa={"train": "a.csv"}))
    assert problems == [
        "config key datasets.x.tevatron_train: give either train (DPR JSON) or tevatron_train, not both",
        "config key datasets.x.qa.train: the split name 'train' is taken by the training file",
        "config key datasets.x.path: not used with source 'dpr' (give files as train, qa, passages)",
        "config key datasets.x.test_split: 'test' has no QA file (answer-evaluated splits: ['train']; add it under qa)"]
    (none,) = C.dpr_dataset_problems("x", dataset("dpr", protocol="qrels"))
    assert none.startswith("config key datasets.x: source 'dpr' needs dpr_dataset")
    assert "'webq'" not in C.dpr_dataset_problems("w", dataset("dpr", dpr_dataset="webq", test_split="dev"))[0]


def test_training_file_and_own_negatives():
    assert C.has_training_file(dataset("dpr", tevatron_train="t")) and C.has_own_negatives(dataset("dpr", train="t"))
    assert not C.has_training_file(dataset("dpr", qa={"test": "q.csv"}))
    assert not C.has_own_negatives(dataset("beir", train="t"))


def test_negative_filter_problems_name_the_key(tmp_path):
    assert C.negative_filter_problems("runs.s.negative_filter", {"guide": "self"}) == []
    (unknown,) = C.negative_filter_problems("runs.s.negative_filter", {"guide": "self", "treshold": 1})
    assert unknown.startswith("runs.s.negative_filter: unknown key(s) ['treshold']")
    (missing,) = C.negative_filter_problems("runs.s.negative_filter", {"guide": str(tmp_path / "none")})
    assert missing.startswith("runs.s.negative_filter.guide:") and "no such model folder" in missing
