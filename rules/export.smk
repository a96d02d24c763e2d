# Export stage (on request, or when evaluation.mteb is on): each model of the grid as a
# sentence-transformers folder with a generated model card, and MTEB's evaluation of it on the
# test split of every qrels-evaluated dataset that uses it. Targets `export_all`, `mteb_all`: see Snakefile.


rule export:
    input:
        unpack(export_inputs),
    output:
        str(LAYOUT.export("{dataset}", "{run}", "{tag}") / EXPORT_INFO),
    params:
        config=lambda w: json_arg(CFG),
        files=config_file_args,
        seed=lambda w: f"--seed {w.tag[4:]}" if w.tag.startswith("seed") else "",
        # results/<experiment>/models/<dataset>/<run>/<tag>/train_summary.json -> results
        results=parent("model", levels=6),
        out=parent("output"),
    conda:
        "../environment.yml"
    log:
        str(LAYOUT.logs / "export" / "{dataset}" / "{run}" / "{tag}.log"),
    wildcard_constraints:
        tag=r"base|seed\d+",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m pipeline.export.export --config-json {params.config} {params.files} --run {wildcards.run} {params.seed} "
        "--dataset {wildcards.dataset} --results {params.results} --out {params.out} > {log} 2>&1"


rule mteb:
    input:
        export=lambda w: str(LAYOUT.export(model_dataset(w), w.run, w.tag) / EXPORT_INFO),
        data=lambda w: str(LAYOUT.manifest(w.dataset)),
    output:
        str(LAYOUT.mteb("{dataset}", "{run}", "{tag}") / MTEB_RESULT),
    params:
        model=parent("export"),
        data=parent("data"),
        split=lambda w: CFG["datasets"][w.dataset]["test_split"],
        out=parent("output"),
    conda:
        "../environment.yml"
    log:
        str(LAYOUT.logs / "mteb" / "{dataset}" / "{run}" / "{tag}.log"),
    wildcard_constraints:
        tag=r"base|seed\d+",
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "python -m pipeline.export.mteb_eval --model {params.model} --dataset {params.data} --split {params.split} "
        "--out {params.out} > {log} 2>&1"

