# Helpers shared by the rules: paths of the grid's outputs (all from pipeline.core.layout) and the
# parameters each step gets.
import os
import shlex

from pipeline.core.index_params import index_job_params
from pipeline.core.layout import Layout

# Shared, recipe-independent work (data, BM25 negatives) under RESULTS; everything the recipes decide
# under RESULTS/<experiment>/, so two configs never rewrite each other's models, tables or plots.
LAYOUT = Layout(RESULTS, CFG["experiment"])
GRID_DIGEST = pcfg.grid_digest(CFG)


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
    if ds.get("dev_split"):
        args.append(f"--dev-split {json_arg({**ds['dev_split'], 'from': ds['train_split']})}")
    return " ".join(args)


def dpr_args(ds):
    """The `dpr` source's config keys as `python -m pipeline.sources.prepare --source dpr` flags."""
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


# ----------------------------------------------------------------------------- index / shards
def index_params(wildcards):
    return json_arg(index_job_params(CFG["index"]))


def shard_encode_params(wildcards):
    # Only what changes a shard's embeddings, so changing index types re-gathers without re-encoding.
    return json_arg({"batch_size": CFG["index"]["batch_size"], "dtype": CFG["index"]["dtype"]})


def sharded():
    return CFG["index"]["shard_size"] is not None or CFG["index"]["shards"] is not None


def shard_plan_args(wildcards):
    index = CFG["index"]
    return f"--shards {index['shards']}" if index["shards"] is not None else f"--shard-size {index['shard_size']}"


def index_inputs(wildcards):
    inputs = {"model": str(LAYOUT.train_summary(model_dataset(wildcards), wildcards.run, wildcards.tag)),
              "data": str(LAYOUT.manifest(wildcards.dataset))}
    if sharded():
        from pipeline.retrieval.shards import num_shards

        if CFG["index"]["shards"] is not None:  # the count is known: no need to wait for the plan
            plan, count = str(LAYOUT.shard_plan(wildcards.dataset)), CFG["index"]["shards"]
        else:
            plan = checkpoints.shard_plan.get(dataset=wildcards.dataset).output[0]
            count = num_shards(plan)
        inputs["plan"] = plan
        inputs["shards"] = [str(path(wildcards.dataset, wildcards.run, wildcards.tag, i))
                            for i in range(count)
                            for path in (LAYOUT.shard_ids, LAYOUT.shard_embeddings)]
    return inputs


def gather_args(wildcards):
    if not sharded():
        return ""
    return (f"--shards {LAYOUT.shards(wildcards.dataset, wildcards.run, wildcards.tag)} "
            f"--plan {LAYOUT.shard_plan(wildcards.dataset)}")


def evaluate_params(wildcards):
    return json_arg(pcfg.evaluate_params(CFG, wildcards.dataset, int(wildcards.seed)))


def all_metrics():
    return [str(LAYOUT.metrics(j.dataset, j.run, j.seed)) for j in pcfg.jobs(CFG)]


def all_train_summaries():
    return sorted({str(LAYOUT.train_summary(pcfg.model_dataset(CFG, j.dataset), j.run, tag_of(j.run, j.seed)))
                   for j in pcfg.jobs(CFG)})


# Threads per job of the rules a config's `threads:` may set, unless it does.
DEFAULT_THREADS = {"train": 2, "index": 2, "evaluate": 2}


def rule_threads(rule):
    """The config's `threads.<rule>`, else the rule's default."""
    return CFG.get("threads", {}).get(rule, DEFAULT_THREADS[rule])


def model_dataset(wildcards):
    return pcfg.model_dataset(CFG, wildcards.dataset)


def data_dataset(wildcards):
    return pcfg.data_dataset(CFG, wildcards.dataset)


# ----------------------------------------------------------------------------- export / MTEB
def export_inputs(wildcards):
    """What a model's card is generated from: its training summary, the metrics of every job that
    evaluated it (every seed for a zero-shot model), and the data manifests."""
    ds, run, tag = wildcards.dataset, wildcards.run, wildcards.tag
    seeds = [int(tag[4:])] if tag.startswith("seed") else CFG["seeds"]
    evaluated_on = [d for d in CFG["datasets"] if pcfg.model_dataset(CFG, d) == ds]
    return {"model": str(LAYOUT.train_summary(ds, run, tag)),
            "metrics": [str(LAYOUT.metrics(d, run, s)) for d in evaluated_on for s in seeds],
            "data": [str(LAYOUT.manifest(d)) for d in evaluated_on]}


def config_file_args(wildcards):
    return " ".join(f"--config-file {shlex.quote(os.path.relpath(str(f)))}" for f in workflow.configfiles)


def all_exports():
    """Every model of the grid once: per seed when trained, `base` for a zero-shot run."""
    return sorted({str(LAYOUT.export(j.dataset, j.run, tag_of(j.run, j.seed)) / EXPORT_INFO)
                   for j in pcfg.jobs(CFG) if pcfg.model_dataset(CFG, j.dataset) == j.dataset})


def all_mteb():
    """MTEB's evaluation of every model on every qrels-evaluated dataset that uses it."""
    return sorted({str(LAYOUT.mteb(j.dataset, j.run, tag_of(j.run, j.seed)) / MTEB_RESULT)
                   for j in pcfg.jobs(CFG) if CFG["datasets"][j.dataset]["protocol"] == "qrels"})


def mteb_inputs():
    return all_mteb() if CFG["evaluation"].get("mteb") else []


# The report's titles, in reading order by their first label (the report sorts by it).
REPORT_TITLES = {
    "headline": "Headline: one line per run, with the verdict",
    "summary": "Summary: every run, scoring and λ",
    "dn": "Normalisations (DN, DN*, NNN, QB-Norm) against the dot product",
    "index": "Approximate indexes against exact search",
    "diagnostics": "Training diagnostics",
    "ndcg_per_run": "NDCG@10 per run with 95 % intervals",
    "ndcg_vs_batch": "NDCG@10 against the effective batch size",
    "accuracy_vs_cost": "NDCG@10 against training time and memory",
    "grad_norm_ratio": "Gradient-norm ratio of the two encoders",
    "dn_lambda": "NDCG@10 of each scoring against its weight (λ, α)",
}


def report_item(path, name, position, category):
    return report(path, caption=f"../report/{name}.rst", category=category,
                  labels={"#": f"{position:02d}", "result": REPORT_TITLES.get(name, name)})
