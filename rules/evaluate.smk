# Evaluate stage: search the test queries with each scoring (dot, DN, DN*) and score them.


rule evaluate:
    input:
        # A `models_of` entry evaluates another entry's models and index, on that entry's data;
        # a `trained_on` entry evaluates another entry's models on its own data and index.
        index=lambda w: str(LAYOUT.index_stats(data_dataset(w), w.run, tag_of(w.run, w.seed))),
        model=lambda w: str(LAYOUT.train_summary(model_dataset(w), w.run, tag_of(w.run, w.seed))),
        data=lambda w: str(LAYOUT.manifest(data_dataset(w))),
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
    threads: rule_threads("evaluate")
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "python -m pipeline.evaluation.evaluate --model {params.model} --dataset {params.data} --index {params.index} "
        "--out {params.out} --params-json {params.evaluation} > {log} 2>&1"
