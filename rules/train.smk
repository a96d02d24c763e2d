# Train stage: one job per dataset x run x seed (zero-shot runs only record the base model).


rule train:
    input:
        unpack(train_inputs),
    output:
        str(LAYOUT.train_summary("{dataset}", "{run}", "{tag}")),
    params:
        recipe=lambda w: json_arg(pcfg.recipe(CFG, w.run, w.dataset)),
        seed=train_seed,
        data=parent("data"),
        out=parent("output"),
        extra=train_extra_args,
    conda:
        "../environment.yml"
    log:
        str(LAYOUT.logs / "train" / "{dataset}" / "{run}" / "{tag}.log"),
    wildcard_constraints:
        tag=r"base|seed\d+",
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    shell:
        "python -m pipeline.train --dataset {params.data} --out {params.out} --seed {params.seed} "
        "--recipe-json {params.recipe} {params.extra} > {log} 2>&1"
