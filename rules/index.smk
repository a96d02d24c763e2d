# Index stage: encode the corpus once per model and build the configured FAISS indexes.


rule index:
    input:
        model=f"{RESULTS}/models/{{dataset}}/{{run}}/{{tag}}/train_summary.json",
        data=f"{RESULTS}/data/{{dataset}}/manifest.json",
    output:
        f"{RESULTS}/index/{{dataset}}/{{run}}/{{tag}}/index_stats.json",
    params:
        model=lambda w, input: os.path.join(os.path.dirname(input.model), "model"),
        data=parent("data"),
        out=parent("output"),
        index=lambda w: json_arg(CFG["index"]),
    conda:
        "../environment.yml"
    log:
        f"{LOGS}/index/{{dataset}}/{{run}}/{{tag}}.log",
    wildcard_constraints:
        tag=r"base|seed\d+",
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "python -m pipeline.index --model {params.model} --dataset {params.data} --out {params.out} "
        "--params-json {params.index} > {log} 2>&1"
