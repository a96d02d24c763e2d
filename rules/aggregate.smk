# Aggregate stage: tables and plots from every job, and MLflow logging from this one process
# (parallel writers would race on the sqlite store).


rule aggregate:
    input:
        metrics=all_metrics(),
        train=all_train_summaries(),
    output:
        csv=report(f"{RESULTS}/tables/summary.csv", caption="../report/summary.rst", category="Tables"),
        md=f"{RESULTS}/tables/summary.md",
        plots=[report(f"{RESULTS}/plots/{name}.png", caption=f"../report/{name}.rst", category="Plots")
               for name in PLOTS],
    params:
        config=lambda w: json_arg(CFG),
        results=parent("output", levels=2),
    conda:
        "../environment.yml"
    log:
        f"{LOGS}/aggregate.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m pipeline.aggregate --results {params.results} --config-json {params.config} > {log} 2>&1"
