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
    return " ".join(args)


def hard_negative_depth(wildcards):
    recipes = [pcfg.recipe(CFG, r) for r in CFG["runs"]]
    return max(r["hard_negatives"]["top_k"] for r in recipes if r["hard_negatives"])


def train_inputs(wildcards):
    inputs = {"data": str(LAYOUT.manifest(wildcards.dataset))}
    if pcfg.recipe(CFG, wildcards.run)["hard_negatives"]:
        inputs["hardneg"] = str(LAYOUT.hardneg(wildcards.dataset))
    return inputs


def train_extra_args(wildcards, input):
    return f"--hard-negatives {input.hardneg}" if "hardneg" in input.keys() else ""


def train_seed(wildcards):
    return int(wildcards.tag[4:]) if wildcards.tag.startswith("seed") else CFG["seeds"][0]


def evaluate_params(wildcards):
    return json_arg(pcfg.evaluate_params(CFG, wildcards.dataset, int(wildcards.seed)))


def all_metrics():
    return [str(LAYOUT.metrics(j.dataset, j.run, j.seed)) for j in pcfg.jobs(CFG)]


def all_train_summaries():
    return sorted({str(LAYOUT.train_summary(j.dataset, j.run, tag_of(j.run, j.seed))) for j in pcfg.jobs(CFG)})
