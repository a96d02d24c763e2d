# Aggregate stage: tables and plots from every job, and MLflow logging from this one process
# (parallel writers would race on the sqlite store). Every table and plot is in the report
# (`make report`), each with its caption from report/<name>.rst.


rule aggregate:
    input:
        metrics=all_metrics(),
        train=all_train_summaries(),
        mteb=mteb_inputs(),  # evaluation.mteb: MTEB's NDCG@10 beside the pipeline's
    output:
        csv=str(LAYOUT.tables / "summary.csv"),
        md=str(LAYOUT.tables / "summary.md"),
        grid=str(LAYOUT.grid),
        # Only this job writes the stamp named by the grid's digest (the final target): tables
        # left by a hand-run aggregate or by another grid lack it and are rebuilt.
        stamp=str(LAYOUT.grid_stamp(GRID_DIGEST)),
        tables=[report(str(LAYOUT.tables / f"{name}.html"), caption=f"../report/{name}.rst", category="Tables")
                for name in REPORT_TABLES],
        plots=[report(str(LAYOUT.plots / f"{name}.png"), caption=f"../report/{name}.rst", category="Plots")
               for name in PLOTS],
    params:
        config=lambda w: json_arg(CFG),
        results=parent("output", levels=3),  # results/<experiment>/tables/summary.csv -> results
    conda:
        "../environment.yml"
    log:
        str(LAYOUT.logs / "aggregate.log"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m pipeline.aggregate --results {params.results} --config-json {params.config} --grid-stamp {output.stamp} > {log} 2>&1"
