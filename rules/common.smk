# Helpers shared by the rules: paths of the grid's outputs and the parameters each step gets.
import os
import shlex


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


def model_dir(ds, run, seed):
    return f"{RESULTS}/models/{ds}/{run}/{pcfg.model_tag(CFG, run, int(seed))}"


def index_dir(ds, run, seed):
    return f"{RESULTS}/index/{ds}/{run}/{pcfg.model_tag(CFG, run, int(seed))}"


def eval_dir(ds, run, seed):
    return f"{RESULTS}/eval/{ds}/{run}/seed{seed}"


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
    depths = [(pcfg.recipe(CFG, r)["hard_negatives"] or {}).get("top_k", 30) for r in CFG["runs"]]
    return max(depths)


def train_inputs(wildcards):
    inputs = {"data": f"{RESULTS}/data/{wildcards.dataset}/manifest.json"}
    if pcfg.recipe(CFG, wildcards.run).get("hard_negatives"):
        inputs["hardneg"] = f"{RESULTS}/hardneg/{wildcards.dataset}.jsonl"
    return inputs


def train_extra_args(wildcards, input):
    return f"--hard-negatives {input.hardneg}" if "hardneg" in input.keys() else ""


def train_seed(wildcards):
    return int(wildcards.tag[4:]) if wildcards.tag.startswith("seed") else CFG["seeds"][0]


def evaluate_params(wildcards):
    return json_arg(pcfg.evaluate_params(CFG, wildcards.dataset, int(wildcards.seed)))


def all_metrics():
    return [f"{eval_dir(j.dataset, j.run, j.seed)}/metrics.json" for j in pcfg.jobs(CFG)]


def all_train_summaries():
    return sorted({f"{model_dir(j.dataset, j.run, j.seed)}/train_summary.json" for j in pcfg.jobs(CFG)})
