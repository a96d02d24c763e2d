# Evaluate stage: search the test queries with each scoring (dot, DN, DN*) and score them.


rule evaluate:
    input:
        index=lambda w: f"{index_dir(w.dataset, w.run, w.seed)}/index_stats.json",
        model=lambda w: f"{model_dir(w.dataset, w.run, w.seed)}/train_summary.json",
        data=f"{RESULTS}/data/{{dataset}}/manifest.json",
    output:
        f"{RESULTS}/eval/{{dataset}}/{{run}}/seed{{seed}}/metrics.json",
    params:
        model=lambda w, input: os.path.join(os.path.dirname(input.model), "model"),
        index=parent("index"),
        data=parent("data"),
        out=parent("output"),
        evaluation=evaluate_params,
    conda:
        "../environment.yml"
    log:
        f"{LOGS}/evaluate/{{dataset}}/{{run}}/seed{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "python -m pipeline.evaluate --model {params.model} --dataset {params.data} --index {params.index} "
        "--out {params.out} --params-json {params.evaluation} > {log} 2>&1"
