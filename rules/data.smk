# Data stage: fetch/validate/normalise each dataset; mine BM25 negatives when a run wants them.


def dataset_args(wildcards):
    ds = CFG["datasets"][wildcards.dataset]
    args = [f"--source {ds['source']}", f"--name {ds.get('name', wildcards.dataset)}"]
    if "path" in ds:
        args.append(f"--path {ds['path']!r}")
    if "url" in ds:
        args.append(f"--url {ds['url']!r}")
    if "sha256" in ds:
        args.append(f"--sha256 {ds['sha256']}")
    return " ".join(args)


rule data:
    output:
        f"{RESULTS}/data/{{dataset}}/manifest.json",
    params:
        args=dataset_args,
        out=f"{RESULTS}/data/{{dataset}}",
        cache=f"{RESULTS}/downloads",
    log:
        f"{LOGS}/data/{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "{PY} -m pipeline.data {params.args} --cache-dir {params.cache} --out {params.out} > {log} 2>&1"


rule hard_negatives:
    input:
        f"{RESULTS}/data/{{dataset}}/manifest.json",
    output:
        f"{RESULTS}/hardneg/{{dataset}}.jsonl",
    params:
        data=f"{RESULTS}/data/{{dataset}}",
        split=lambda w: CFG["datasets"][w.dataset]["train_split"],
        top_k=lambda w: max([(pcfg.recipe(CFG, r)["hard_negatives"] or {}).get("top_k", 30) for r in CFG["runs"]]),
    log:
        f"{LOGS}/hardneg/{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{PY} -m pipeline.hardneg --dataset {params.data} --split {params.split} --top-k {params.top_k} "
        "--out {output} > {log} 2>&1"
