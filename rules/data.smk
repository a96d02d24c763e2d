# Data stage: fetch/validate/normalise each dataset; mine BM25 negatives when a run wants them.


rule data:
    output:
        str(LAYOUT.manifest("{dataset}")),
    params:
        args=dataset_args,
        out=parent("output"),
        cache=str(LAYOUT.downloads),
    conda:
        "../environment.yml"
    log:
        str(LAYOUT.shared_logs / "data" / "{dataset}.log"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m pipeline.sources.prepare {params.args} --cache-dir {params.cache} --out {params.out} > {log} 2>&1"


rule hard_negatives:
    input:
        data=str(LAYOUT.manifest("{dataset}")),
    output:
        str(LAYOUT.hardneg("{dataset}")),
    params:
        data=parent("data"),
        split=lambda w: CFG["datasets"][w.dataset]["train_split"],
        top_k=hard_negative_depth,
    conda:
        "../environment.yml"
    log:
        str(LAYOUT.shared_logs / "hardneg" / "{dataset}.log"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m pipeline.training.hardneg --dataset {params.data} --split {params.split} --top-k {params.top_k} "
        "--out {output} > {log} 2>&1"
