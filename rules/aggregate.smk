# Aggregate stage: tables and plots from every job, and MLflow logging from this one process
# (parallel writers would race on the sqlite store).
from pipeline.plots import PLOTS


def all_jobs():
    return pcfg.jobs(CFG)


rule aggregate:
    input:
        metrics=[f"{eval_dir(j.dataset, j.run, j.seed)}/metrics.json" for j in all_jobs()],
        train=sorted({f"{model_dir(j.dataset, j.run, j.seed)}/train_summary.json" for j in all_jobs()}),
    output:
        csv=report(f"{RESULTS}/tables/summary.csv", caption="../report/summary.rst", category="Tables"),
        md=f"{RESULTS}/tables/summary.md",
        plots=[report(f"{RESULTS}/plots/{name}.png", caption=f"../report/{name}.rst", category="Plots")
               for name in PLOTS],
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
