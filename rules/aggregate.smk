# Aggregate stage: tables and plots from every job, and MLflow logging from this one process
# (parallel writers would race on the sqlite store). Every table and plot is in the report
# (`make report`), each with its caption from report/<name>.rst, in reading order: the headline
# table first (the report sorts categories and each category's rows by their first label).

rule grid_config:
    # The validated config as a file: the aggregate job reads it from here, so the report shows
    # that job's parameters as a short list instead of the whole config as one JSON string.
    output:
        LAYOUT.grid_config,
    params:
        config=lambda w: json_arg(CFG),
    log:
        str(LAYOUT.logs / "grid_config.log"),
    localrule: True
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=100,
        runtime=1,
    shell:
        "printf '%s\\n' {params.config} > {output} 2> {log}"


rule aggregate:
    input:
        metrics=all_metrics(),
        train=all_train_summaries(),
        mteb=mteb_inputs(),  # evaluation.mteb: MTEB's NDCG@10 beside the pipeline's
        config=LAYOUT.grid_config,
    output:
        csv=str(LAYOUT.tables / "summary.csv"),
        md=str(LAYOUT.tables / "summary.md"),
        grid=str(LAYOUT.grid),
        # Only this job writes the stamp named by the grid's digest (the final target): tables
        # left by a hand-run aggregate or by another grid lack it and are rebuilt.
        stamp=str(LAYOUT.grid_stamp(GRID_DIGEST)),
        tables=[report_item(str(LAYOUT.tables / f"{name}.html"), name, i + 1, "1. Tables")
                for i, name in enumerate(REPORT_TABLES)],
        plots=[report_item(str(LAYOUT.plots / f"{name}.png"), name, i + 1, "2. Plots")
               for i, name in enumerate(PLOTS)],
    params:
        experiment=CFG["experiment"],
        config_hash=pcfg.stable_hash(CFG),
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
        "python -m pipeline.results.aggregate --results {params.results} --config-file {input.config} --grid-stamp {output.stamp} > {log} 2>&1"
