"""Per-dataset and per-section checks of config validation (pipeline.core.config) that need no
resolved recipe: the `dpr` source's keys, a dev split, a `negative_filter` section. Each returns
the problems it finds as messages naming the config key."""

from __future__ import annotations

from pipeline.core import params as P
from pipeline.core.common import PipelineError


def dev_split_problems(name: str, ds: dict) -> list[str]:
    dev = ds.get("dev_split")
    if dev is None:
        return []
    where = f"config key datasets.{name}.dev_split"
    problems = []
    if ("size" in dev) == ("fraction" in dev):
        problems.append(f"{where}: give exactly one of size (queries) or fraction (of the train queries)")
    split = dev.get("name", P.DEV_SPLIT_NAME)
    if split == ds["train_split"]:
        problems.append(f"{where}.name: {split!r} is the train split; the dev split needs a name of its own")
    if ds["source"] == "dpr":
        problems.append(f"{where}: not available for source 'dpr' (its QA files already give dev splits)")
    return problems


def negative_filter_problems(where: str, section: dict) -> list[str]:
    """Keys, margin type and range (params.check_negative_filter), and a guide that exists."""
    try:
        section = P.check_negative_filter(section, where)
    except PipelineError as exc:
        return [str(exc)]
    problem = P.guide_problem(section["guide"], f"{where}.guide")
    return [problem] if problem else []


def dpr_dataset_problems(name: str, ds: dict) -> list[str]:
    """The `dpr` source's keys: only on dpr datasets, and enough of them to build a dataset."""
    where = f"config key datasets.{name}"
    if ds["source"] != "dpr":
        return [f"{where}.{key}: only used with source 'dpr' (source is {ds['source']!r})"
                for key in P.DPR_DATASET_KEYS if key in ds]
    problems = []
    if not any(k in ds for k in ("dpr_dataset", "train", "tevatron_train", "qa")):
        problems.append(f"{where}: source 'dpr' needs dpr_dataset (official files), or at least one of train, "
                        "tevatron_train, qa")
    if "train" in ds and "tevatron_train" in ds:
        problems.append(f"{where}.tevatron_train: give either train (DPR JSON) or tevatron_train, not both")
    if "train" in (ds.get("qa") or {}) and has_training_file(ds):
        problems.append(f"{where}.qa.train: the split name 'train' is taken by the training file")
    for key in ("path", "url", "sha256"):
        if key in ds:
            problems.append(f"{where}.{key}: not used with source 'dpr' (give files as train, qa, passages)")
    test_split = ds["test_split"]
    official = {"nq": ("dev", "test"), "trivia": ("dev", "test"), "webq": ("test",), "curatedtrec": ("test",)}
    splits = set(ds.get("qa") or {}) | set(official.get(ds.get("dpr_dataset"), ()))
    if ds["protocol"] == "answers" and test_split not in splits:
        problems.append(f"{where}.test_split: {test_split!r} has no QA file (answer-evaluated splits: "
                        f"{sorted(splits) or 'none'}; add it under qa)")
    return problems


def has_training_file(ds: dict) -> bool:
    return ds["source"] == "dpr" and any(k in ds for k in ("dpr_dataset", "train", "tevatron_train"))


def has_own_negatives(ds: dict) -> bool:
    return has_training_file(ds)
