# Memory-efficient InfoNCE training and Distribution-Normalized evaluation of dense retrievers.
#   snakemake --cores 2                          default experiment (config/config.yaml)
#   snakemake --cores 2 --configfile config/scifact.yaml
# Stages: data -> (hardneg) -> train -> index -> evaluate -> aggregate. Each rule is a thin
# call of `python -m pipeline.<step>`; see ARCHITECTURE.md.
import sys

sys.path.insert(0, workflow.basedir)

from pipeline import config as pcfg

configfile: "config/config.yaml"


report: "report/workflow.rst"

CFG = pcfg.validate(config)
PY = sys.executable  # the interpreter running Snakemake (the project's venv), not the system one
RESULTS = "results"
LOGS = f"{RESULTS}/logs"


def model_dir(ds, run, seed):
    return f"{RESULTS}/models/{ds}/{run}/{pcfg.model_tag(CFG, run, int(seed))}"


def eval_dir(ds, run, seed):
    return f"{RESULTS}/eval/{ds}/{run}/seed{seed}"


include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/index.smk"
include: "rules/evaluate.smk"
include: "rules/aggregate.smk"


rule all:
    input:
        f"{RESULTS}/tables/summary.csv",
    default_target: True
