# Aggregate stage: tables and plots from every job, and MLflow logging from this one process
# (parallel writers would race on the sqlite store).


def all_jobs():
    return pcfg.jobs(CFG)


rule aggregate:
    input:
        metrics=[f"{eval_dir(j.dataset, j.run, j.seed)}/metrics.json" for j in all_jobs()],
        train=sorted({f"{model_dir(j.dataset, j.run, j.seed)}/train_summary.json" for j in all_jobs()}),
    output:
        csv=f"{RESULTS}/tables/summary.csv",
        md=f"{RESULTS}/tables/summary.md",
    params:
        config=lambda w: shlex.quote(pcfg.to_json(CFG)),
    log:
        f"{LOGS}/aggregate.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "{PY} -m pipeline.aggregate --results {RESULTS} --config-json {params.config} > {log} 2>&1"
