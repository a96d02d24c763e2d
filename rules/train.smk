# Train stage: one job per dataset x run x seed (zero-shot runs only record the base model).
import shlex


def train_inputs(wildcards):
    inputs = {"data": f"{RESULTS}/data/{wildcards.dataset}/manifest.json"}
    if pcfg.recipe(CFG, wildcards.run).get("hard_negatives"):
        inputs["hardneg"] = f"{RESULTS}/hardneg/{wildcards.dataset}.jsonl"
    return inputs


def train_extra_args(wildcards, input):
    return f"--hard-negatives {input.hardneg}" if "hardneg" in input.keys() else ""


rule train:
    input:
        unpack(train_inputs),
    output:
        f"{RESULTS}/models/{{dataset}}/{{run}}/{{tag}}/train_summary.json",
    params:
        recipe=lambda w: shlex.quote(pcfg.to_json(pcfg.recipe(CFG, w.run, w.dataset))),
        seed=lambda w: int(w.tag[4:]) if w.tag.startswith("seed") else CFG["seeds"][0],
        data=f"{RESULTS}/data/{{dataset}}",
        out=f"{RESULTS}/models/{{dataset}}/{{run}}/{{tag}}",
        extra=train_extra_args,
    log:
        f"{LOGS}/train/{{dataset}}/{{run}}/{{tag}}.log",
    wildcard_constraints:
        tag=r"base|seed\d+",
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    shell:
        "{PY} -m pipeline.train --dataset {params.data} --out {params.out} --seed {params.seed} "
        "--recipe-json {params.recipe} {params.extra} > {log} 2>&1"
