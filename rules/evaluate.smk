# Evaluate stage: search the test queries with each scoring (dot, DN, DN*) and score them.


def evaluate_params(wildcards):
    ds = CFG["datasets"][wildcards.dataset]
    params = {**CFG["evaluation"], "split": ds["test_split"], "seed": int(wildcards.seed),
              "index_types": CFG["index"]["index_types"]}
    params["dn_star"] = {**params["dn_star"], "seed": int(wildcards.seed)}
    return shlex.quote(pcfg.to_json(params))


rule evaluate:
    input:
        index=lambda w: f"{RESULTS}/index/{w.dataset}/{w.run}/{pcfg.model_tag(CFG, w.run, int(w.seed))}/index_stats.json",
        data=f"{RESULTS}/data/{{dataset}}/manifest.json",
    output:
        f"{RESULTS}/eval/{{dataset}}/{{run}}/seed{{seed}}/metrics.json",
    params:
        model=lambda w: model_dir(w.dataset, w.run, w.seed) + "/model",
        index=lambda w: f"{RESULTS}/index/{w.dataset}/{w.run}/{pcfg.model_tag(CFG, w.run, int(w.seed))}",
        data=f"{RESULTS}/data/{{dataset}}",
        out=f"{RESULTS}/eval/{{dataset}}/{{run}}/seed{{seed}}",
        evaluation=evaluate_params,
    log:
        f"{LOGS}/evaluate/{{dataset}}/{{run}}/seed{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "{PY} -m pipeline.evaluate --model {params.model} --dataset {params.data} --index {params.index} "
        "--out {params.out} --params-json {params.evaluation} > {log} 2>&1"
