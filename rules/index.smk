# Index stage: encode the corpus once per model and build the configured FAISS indexes.
# With index.shards (or index.shard_size) set, the corpus is encoded by one `encode_shard` job per block of rows
# (scatter) and `index` gathers them; the block count comes from the `shard_plan` checkpoint,
# which reads the corpus count the data step recorded (see pipeline/retrieval/shards.py).


checkpoint shard_plan:
    input:
        data=str(LAYOUT.manifest("{dataset}")),
    output:
        str(LAYOUT.shard_plan("{dataset}")),
    params:
        data=parent("data"),
        size=shard_plan_args,
    conda:
        "../environment.yml"
    log:
        str(LAYOUT.logs / "shards" / "{dataset}" / "plan.log"),
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python -m pipeline.retrieval.shards plan --dataset {params.data} {params.size} "
        "--out {output} > {log} 2>&1"


rule encode_shard:
    input:
        # A `trained_on` entry encodes its own corpus with another entry's model.
        model=lambda w: str(LAYOUT.train_summary(model_dataset(w), w.run, w.tag)),
        data=str(LAYOUT.manifest("{dataset}")),
        plan=str(LAYOUT.shard_plan("{dataset}")),
    output:
        embeddings=str(LAYOUT.shard_embeddings("{dataset}", "{run}", "{tag}", "{shard}")),
        ids=str(LAYOUT.shard_ids("{dataset}", "{run}", "{tag}", "{shard}")),
    params:
        model=lambda w, input: os.path.join(os.path.dirname(input.model), MODEL),
        data=parent("data"),
        encode=shard_encode_params,
    conda:
        "../environment.yml"
    log:
        str(LAYOUT.logs / "index" / "{dataset}" / "{run}" / "{tag}" / "shard{shard}.log"),
    wildcard_constraints:
        tag=r"base|seed\d+",
        shard=r"\d+",
    threads: rule_threads("index")
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "python -m pipeline.retrieval.shards encode --model {params.model} --dataset {params.data} --plan {input.plan} "
        "--shard {wildcards.shard} --out-embeddings {output.embeddings} --out-ids {output.ids} "
        "--params-json {params.encode} > {log} 2>&1"


rule index:
    input:
        unpack(index_inputs),
    output:
        str(LAYOUT.index_stats("{dataset}", "{run}", "{tag}")),
    params:
        # From the wildcards, not `input`: while the shard plan is a pending checkpoint Snakemake
        # evaluates these with the checkpoint's output standing in for the inputs.
        model=lambda w: str(LAYOUT.model(model_dataset(w), w.run, w.tag) / MODEL),
        data=lambda w: str(LAYOUT.data(w.dataset)),
        out=parent("output"),
        index=index_params,
        gather=gather_args,
    conda:
        "../environment.yml"
    log:
        str(LAYOUT.logs / "index" / "{dataset}" / "{run}" / "{tag}.log"),
    wildcard_constraints:
        tag=r"base|seed\d+",
    threads: rule_threads("index")
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "python -m pipeline.retrieval.index --model {params.model} --dataset {params.data} --out {params.out} "
        "--params-json {params.index} {params.gather} > {log} 2>&1"
