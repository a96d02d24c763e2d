# Train stage: one job per dataset x run x seed (zero-shot runs only record the base model).
# A recipe with `processes: P > 1` runs P processes under torchrun (one GPU each on CUDA, gloo on
# CPU), asks the cluster for P GPUs and splits the job's threads between them.


from pipeline.core import launch as plaunch


rule train:
    input:
        unpack(train_inputs),
    output:
        str(LAYOUT.train_summary("{dataset}", "{run}", "{tag}")),
    params:
        recipe=lambda w: json_arg(pcfg.P.job_recipe(pcfg.recipe(CFG, w.run, w.dataset))),
        seed=train_seed,
        data=parent("data"),
        out=parent("output"),
        extra=train_extra_args,
        launch=lambda w, threads: plaunch.launcher(pcfg.recipe(CFG, w.run), threads),
    conda:
        "../environment.yml"
    log:
        str(LAYOUT.logs / "train" / "{dataset}" / "{run}" / "{tag}.log"),
    wildcard_constraints:
        tag=r"base|seed\d+",
    threads: rule_threads("train")
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=lambda w: plaunch.processes(pcfg.recipe(CFG, w.run)),
    shell:
        "{params.launch} -m pipeline.training.train --dataset {params.data} --out {params.out} --seed {params.seed} "
        "--recipe-json {params.recipe} {params.extra} > {log} 2>&1"
