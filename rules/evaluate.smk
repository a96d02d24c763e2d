# Evaluate stage: search the test queries with each scoring (dot, DN, DN*) and score them.


rule evaluate:
    input:
        index=lambda w: str(LAYOUT.index_stats(w.dataset, w.run, tag_of(w.run, w.seed))),
        model=lambda w: str(LAYOUT.train_summary(w.dataset, w.run, tag_of(w.run, w.seed))),
        data=str(LAYOUT.manifest("{dataset}")),
    output:
        str(LAYOUT.metrics("{dataset}", "{run}", "{seed}")),
    params:
        model=lambda w, input: os.path.join(os.path.dirname(input.model), MODEL),
        index=parent("index"),
        data=parent("data"),
        out=parent("output"),
        evaluation=evaluate_params,
    conda:
        "../environment.yml"
    log:
        str(LAYOUT.logs / "evaluate" / "{dataset}" / "{run}" / "seed{seed}.log"),
    wildcard_constraints:
        seed=r"\d+",
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "python -m pipeline.evaluate --model {params.model} --dataset {params.data} --index {params.index} "
        "--out {params.out} --params-json {params.evaluation} > {log} 2>&1"
