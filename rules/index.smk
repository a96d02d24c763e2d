# Index stage: encode the corpus once per model and build the configured FAISS indexes.


rule index:
    input:
        model=str(LAYOUT.train_summary("{dataset}", "{run}", "{tag}")),
        data=str(LAYOUT.manifest("{dataset}")),
    output:
        str(LAYOUT.index_stats("{dataset}", "{run}", "{tag}")),
    params:
        model=lambda w, input: os.path.join(os.path.dirname(input.model), MODEL),
        data=parent("data"),
        out=parent("output"),
        index=lambda w: json_arg(CFG["index"]),
    conda:
        "../environment.yml"
    log:
        str(LAYOUT.logs / "index" / "{dataset}" / "{run}" / "{tag}.log"),
    wildcard_constraints:
        tag=r"base|seed\d+",
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "python -m pipeline.index --model {params.model} --dataset {params.data} --out {params.out} "
        "--params-json {params.index} > {log} 2>&1"
