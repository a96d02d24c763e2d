# Helpers shared by the rules: paths of the grid's outputs (all from pipeline.layout) and the
# parameters each step gets.
import os
import shlex

from pipeline.layout import Layout

LAYOUT = Layout(RESULTS)


def parent(key=0, levels=1):
    """A params function giving the folder `levels` above an input/output file (lint-friendly:
    no hard-coded path prefixes in params)."""

    def get(wildcards, input=None, output=None):
        files = output if key == "output" else input
        path = files[0] if key in ("output", 0) else files[key]
        for _ in range(levels):
            path = os.path.dirname(path)
        return path

    return get


def tag_of(run, seed):
    return pcfg.model_tag(CFG, run, int(seed))


def json_arg(obj):
    return shlex.quote(pcfg.to_json(obj))


def dataset_args(wildcards):
    ds = CFG["datasets"][wildcards.dataset]
    args = [f"--source {ds['source']}", f"--name {ds.get('name', wildcards.dataset)}"]
    for key in ("path", "url", "sha256"):
        if key in ds:
            args.append(f"--{key} {shlex.quote(str(ds[key]))}")
    if ds["source"] == "dpr":
        args += dpr_args(ds)
    return " ".join(args)


def dpr_args(ds):
    """The `dpr` source's config keys as `python -m pipeline.data --source dpr` flags."""
    flags = {"dpr_dataset": "--dpr-dataset", "train": "--dpr-train", "tevatron_train": "--tevatron-train",
             "passages": "--dpr-passages", "positives": "--dpr-positives"}
    args = [f"{flag} {shlex.quote(str(ds[key]))}" for key, flag in flags.items() if key in ds]
    args += [f"--dpr-qa {shlex.quote(f'{split}={path}')}" for split, path in (ds.get("qa") or {}).items()]
    if "answer_regex" in ds:
        args.append("--answer-regex" if ds["answer_regex"] else "--no-answer-regex")
    return args


def hard_negative_depth(wildcards):
    recipes = [pcfg.recipe(CFG, r, wildcards.dataset) for r in CFG["runs"]]
    return max(r["hard_negatives"]["top_k"] for r in recipes
               if r["hard_negatives"] and r["hard_negatives"]["source"] == "bm25")


def train_inputs(wildcards):
    inputs = {"data": str(LAYOUT.manifest(wildcards.dataset))}
    hard_negatives = pcfg.recipe(CFG, wildcards.run, wildcards.dataset)["hard_negatives"]
    if hard_negatives and hard_negatives["source"] == "bm25":
        inputs["hardneg"] = str(LAYOUT.hardneg(wildcards.dataset))
    return inputs


def train_extra_args(wildcards, input):
    if "hardneg" in input.keys():
        return f"--hard-negatives {input.hardneg}"
    hard_negatives = pcfg.recipe(CFG, wildcards.run, wildcards.dataset)["hard_negatives"]
    if hard_negatives:  # the dataset's own, written by the data step (the `data` input) into its folder
        split = pcfg.recipe(CFG, wildcards.run, wildcards.dataset)["train_split"]
        return f"--hard-negatives {LAYOUT.dataset_hardneg(wildcards.dataset, split)}"
    return ""


def train_seed(wildcards):
    return int(wildcards.tag[4:]) if wildcards.tag.startswith("seed") else CFG["seeds"][0]


def evaluate_params(wildcards):
    return json_arg(pcfg.evaluate_params(CFG, wildcards.dataset, int(wildcards.seed)))


def all_metrics():
    return [str(LAYOUT.metrics(j.dataset, j.run, j.seed)) for j in pcfg.jobs(CFG)]


def all_train_summaries():
    return sorted({str(LAYOUT.train_summary(j.dataset, j.run, tag_of(j.run, j.seed))) for j in pcfg.jobs(CFG)})
